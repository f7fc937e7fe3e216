"""The `eca` command: one entry point that dispatches to the subcommand's own module.

Each subcommand imports its module when it is called, so that `eca models` does not pay for Lightning and
`eca claims` does not pay for torch; the imports are plain ones, so that import-linter sees this top floor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

LIGHTNING_COMMANDS = ("fit", "validate", "test")  # LightningCLI parses the subcommand's name itself
SUBCOMMANDS: dict[str, str] = {  # subcommand -> one-line help
    "fit": "train a model (LightningCLI; --config jobs/X.yaml)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "models": "list the registered models",
    "profile": "params and MACs next to the paper's numbers",
    "submit": "run a job YAML locally or submit it to SLURM",
    "claims": "the paper's claims and their status",
    "runs": "list recorded runs",
    "compare": "two results image by image: top-1 difference, bootstrap 95% interval, McNemar's p",
    "export": "the board as JSON and SVG status badges (for a README)",
    "db": "the run store: `eca db upgrade`, `eca db url`",
    "leaderboard": "start the Streamlit leaderboard",
    "data": "prepare ImageNet: `eca data imagenet --help`",
}


def subcommand(name: str) -> Callable[[list[str]], int]:
    """The function behind `eca NAME`: it takes the arguments and returns an exit code."""
    if name in LIGHTNING_COMMANDS:
        from ecaplatform.training.lightning_cli import main as run
    elif name in ("models", "profile"):
        from ecaplatform.cli import models

        run = models.models_main if name == "models" else models.profile_main
    elif name in ("claims", "runs", "db"):
        from ecaplatform.cli import store_commands

        run = getattr(store_commands, f"{name}_main")
    elif name == "submit":
        from ecaplatform.cli.submit import submit_main as run
    elif name == "compare":
        from ecaplatform.cli.compare import compare_main as run
    elif name == "export":
        from ecaplatform.cli.export import export_main as run
    elif name == "leaderboard":
        from ecaplatform.cli.leaderboard import main as run
    else:
        from ecaplatform.cli.data import data_main as run
    return run


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: eca <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in SUBCOMMANDS.items()]
    lines += ["", "`eca <command> --help` shows a command's own options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        print(f"eca: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    func = subcommand(name)
    rest = args if name in LIGHTNING_COMMANDS else args[1:]
    try:
        code = func(rest)
        sys.stdout.flush()  # here, not at exit: a closed pipe is answered below, not by a traceback
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as err:
        problem = _store_problem(err)
        if problem is None:
            raise
        print(f"eca {name}: error: {problem}", file=sys.stderr)
        return 1
    return int(code or 0)


# 128 + SIGPIPE: what a shell reports for any program whose reader went away (`yes | head -1`), so
# `set -o pipefail` treats `eca models | head -1` like every other tool; there is nothing to report on stderr.
EXIT_BROKEN_PIPE = 141


def _stdout_closed() -> int:
    """The reader of our stdout has gone (`eca models | head -1`): stop quietly. Whatever is still buffered
    goes to /dev/null, so that Python's own flush at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor behind sys.stdout (e.g. under a test)
        pass
    return EXIT_BROKEN_PIPE


def _store_problem(err: BaseException) -> str | None:
    """The message of a StoreError that `err` is or was raised from (the run store, misconfigured or out of
    reach, reached from a subcommand that does not name it itself, e.g. through the recorder of `eca fit`)."""
    store = sys.modules.get("ecaplatform.store.database")  # not imported: then it cannot be a store problem
    seen: BaseException | None = err
    while store is not None and seen is not None:
        if isinstance(seen, store.StoreError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
