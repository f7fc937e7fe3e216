"""`eca leaderboard`: start the Streamlit leaderboard (the installed `leaderboard` package's app.py) on the run store.

The process becomes the Streamlit server (exec), so stopping `eca leaderboard` stops the server, with no orphan.
Options Streamlit knows and this command does not (e.g. `--theme.base dark`) are passed on to `streamlit run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from ecaplatform.store.database import ENV_VAR, Store, StoreError

DEFAULT_PORT = 8501


def app_path() -> Path | None:
    """app.py of the installed `leaderboard` package, or None; found without importing it (nor Streamlit)."""
    spec = importlib.util.find_spec("leaderboard")
    app = Path(spec.origin).parent / "app.py" if spec is not None and spec.origin else None
    return app if app is not None and app.is_file() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eca leaderboard",
        description="Start the ECA-Net leaderboard (Streamlit). It opens the run store read-only.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 serves the network)",
    )
    parser.add_argument("--db-url", help=f"store URL for this server (default: ${ENV_VAR} or the per-user SQLite file)")
    parser.add_argument("--dry-run", action="store_true", help="print the streamlit command instead of running it")
    return parser


def build_command(app: Path, port: int, address: str, extra: list[str] | None = None) -> list[str]:
    """The `streamlit run` command line: headless, no usage statistics, no file watcher (nothing to reload),
    no developer toolbar (the audience reads results, it does not deploy apps)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", address,
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        *(extra or []),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if not 0 < args.port < 65536:
        print(f"eca leaderboard: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    app = app_path()
    if app is None:
        print("eca leaderboard: the `leaderboard` package is not installed; `pip install -e .` in a checkout of the "
              "repository installs it", file=sys.stderr)  # fmt: skip
        return 2
    try:
        store = Store.at(args.db_url)  # no URL, or another database: said here, not on every page
    except StoreError as exc:
        print(f"eca leaderboard: {'--db-url: ' if args.db_url else ''}{exc}", file=sys.stderr)
        return 2
    if args.db_url:
        os.environ[ENV_VAR] = args.db_url
    command = build_command(app, args.port, args.address, extra)
    if args.dry_run:
        print(" ".join(command))
        return 0
    shown_url = store.display_url  # the password hidden, here and on every page
    print(f"ECA-Net leaderboard: http://{args.address}:{args.port} (store {shown_url}, opened read-only)", flush=True)
    os.execv(command[0], command)  # replaces this process: Ctrl-C and kill reach Streamlit directly
    return 0  # not reached
