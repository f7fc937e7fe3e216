"""The `eca` command: one entry point that dispatches to the subcommand's own module.

Each subcommand imports its module when it is called, so that `eca models` does not pay for Lightning and
`eca claims` does not pay for torch; the imports are plain ones, so that import-linter sees this top floor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


# Each takes the arguments after the subcommand's name (fit/validate/test: with it, for LightningCLI) and returns
# an exit code.
def _lightning(argv: list[str]) -> int:
    from ecaplatform.training.lightning_cli import main

    return main(argv)


def _models(argv: list[str]) -> int:
    from ecaplatform.cli.models import models_main

    return models_main(argv)


def _profile(argv: list[str]) -> int:
    from ecaplatform.cli.models import profile_main

    return profile_main(argv)


def _submit(argv: list[str]) -> int:
    from ecaplatform.cli.submit import submit_main

    return submit_main(argv)


def _claims(argv: list[str]) -> int:
    from ecaplatform.cli.store_commands import claims_main

    return claims_main(argv)


def _runs(argv: list[str]) -> int:
    from ecaplatform.cli.store_commands import runs_main

    return runs_main(argv)


def _db(argv: list[str]) -> int:
    from ecaplatform.cli.store_commands import db_main

    return db_main(argv)


def _compare(argv: list[str]) -> int:
    from ecaplatform.cli.compare import compare_main

    return compare_main(argv)


def _export(argv: list[str]) -> int:
    from ecaplatform.cli.export import export_main

    return export_main(argv)


def _leaderboard(argv: list[str]) -> int:
    from ecaplatform.cli.leaderboard import main

    return main(argv)


def _data(argv: list[str]) -> int:
    from ecaplatform.cli.data import data_main

    return data_main(argv)


LIGHTNING_COMMANDS = ("fit", "validate", "test")
# subcommand -> (function, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "fit": (_lightning, "train a model (LightningCLI; --config jobs/X.yaml)"),
    "validate": (_lightning, "evaluate a checkpoint on the validation split"),
    "test": (_lightning, "evaluate a checkpoint on the test split"),
    "models": (_models, "list the registered models"),
    "profile": (_profile, "params and MACs next to the paper's numbers"),
    "submit": (_submit, "run a job YAML locally or submit it to SLURM"),
    "claims": (_claims, "the paper's claims and their status"),
    "runs": (_runs, "list recorded runs"),
    "compare": (_compare, "two results image by image: top-1 difference, bootstrap 95% interval, McNemar's p"),
    "export": (_export, "the board as JSON and SVG status badges (for a README)"),
    "db": (_db, "the run store: `eca db upgrade`, `eca db url`"),
    "leaderboard": (_leaderboard, "start the Streamlit leaderboard"),
    "data": (_data, "prepare ImageNet: `eca data imagenet --help`"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: eca <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
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
    func, _ = SUBCOMMANDS[name]
    rest = args if name in LIGHTNING_COMMANDS else args[1:]  # LightningCLI parses the subcommand itself
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
