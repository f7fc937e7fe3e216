"""The `eca` command: one entry point that dispatches to the subcommand's own module.

Imports are lazy so that `eca models` does not pay for Lightning, and `eca claims` does not pay for torch.
"""

from __future__ import annotations

import importlib
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
    "db": ("ecaplatform.tracking.commands", "db_main", "the run store: `eca db upgrade`, `eca db url`"),
    "leaderboard": ("ecaplatform.leaderboard_launcher", "main", "start the Streamlit leaderboard"),
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
    code = func(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
