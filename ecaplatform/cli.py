"""The `eca` command: one entry point that dispatches to the subcommand's own module.

Imports are lazy so that `eca models` does not pay for Lightning, and `eca claims` does not pay for torch.
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> ("module", "function", one-line help). Each function takes argv (list[str]) and returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "fit": ("ecaplatform.lightning_cli", "main", "train a model (LightningCLI; --config jobs/X.yaml)"),
    "validate": ("ecaplatform.lightning_cli", "main", "evaluate a checkpoint on the validation split"),
    "test": ("ecaplatform.lightning_cli", "main", "evaluate a checkpoint on the test split"),
    "models": ("ecaplatform.models.profile", "models_main", "list the registered models"),
    "profile": ("ecaplatform.models.profile", "profile_main", "params and MACs next to the paper's numbers"),
    "submit": ("ecaplatform.jobs", "submit_main", "run a job YAML locally or submit it to SLURM"),
    "claims": ("ecaplatform.tracking.commands", "claims_main", "the paper's claims and their status"),
    "runs": ("ecaplatform.tracking.commands", "runs_main", "list recorded runs"),
    "compare": ("ecaplatform.tracking.comparison", "compare_main",
                "two results image by image: top-1 difference, bootstrap 95% interval, McNemar's p"),
    "export": ("ecaplatform.tracking.export", "export_main", "the board as JSON and SVG status badges (for a README)"),
    "db": ("ecaplatform.tracking.commands", "db_main", "the run store: `eca db upgrade`, `eca db url`"),
    "leaderboard": ("ecaplatform.leaderboard_launcher", "main", "start the Streamlit leaderboard"),
    "data": ("ecaplatform.datamodules.imagenet_prep", "data_main", "prepare ImageNet: `eca data imagenet --help`"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: eca <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
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
    module_name, func_name, _ = SUBCOMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    # fit/validate/test hand the subcommand itself on to LightningCLI; the others get only their options.
    rest = args if module_name == "ecaplatform.lightning_cli" else args[1:]
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
    store = sys.modules.get("ecaplatform.tracking.store")  # not imported: then it cannot be a store problem
    seen: BaseException | None = err
    while store is not None and seen is not None:
        if isinstance(seen, store.StoreError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
