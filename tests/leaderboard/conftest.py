"""The leaderboard's browser tests: the real server (`eca leaderboard --port N`) on a store a test fills, and
screenshots kept in artifacts/ (git-ignored) for a person to look at."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.leaderboard_data import create_store
from tests.services import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
SERVER_START_TIMEOUT_S = 90


def _wait_healthy(base_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the leaderboard server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the leaderboard server did not answer within {SERVER_START_TIMEOUT_S}s:\n{log.read_text()}")


@contextlib.contextmanager
def serve_leaderboard(tmp_path: Path, fill: Callable[[Engine], None]) -> Iterator[str]:
    """`eca leaderboard --port N` on a new store that `fill` writes; yields the server's base URL."""
    url = os.environ["ECA_DB_URL"]
    engine = create_store(url)
    fill(engine)
    engine.dispose()
    port = free_port()
    log = tmp_path / "leaderboard.log"
    with log.open("w") as out:
        # The launcher execs Streamlit, so this process is the server itself and terminating it leaves no orphan.
        server = subprocess.Popen(
            [sys.executable, "-m", "ecaplatform", "leaderboard", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ECA_DB_URL": url},
            cwd=tmp_path,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, server, log)
        yield base_url
    finally:
        stop_process(server)


def take_screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path



@pytest.fixture
def board_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's base URL, on a new store that the test's indirect parameter (a function) fills."""
    with serve_leaderboard(tmp_path, request.param) as base_url:
        yield base_url


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """screenshot(page, name): the whole page saved as artifacts/NAME."""
    return take_screenshot
