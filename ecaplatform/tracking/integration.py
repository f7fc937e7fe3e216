"""The seam between the LightningCLI (ecaplatform/lightning_cli.py) and tracking.

STUB: the tracking work (issue 4) replaces the body. The CLI calls `tracking_for_run` once per
`eca fit|validate|test`, after parsing and before the Trainer is built, and adds what it returns.
"""

from __future__ import annotations

from typing import Any

from ecaplatform.jobspec import JobSpec


def tracking_for_run(subcommand: str, config: dict[str, Any], job: JobSpec | None) -> tuple[list[Any], Any]:
    """Return (extra Lightning callbacks, a logger or None) that record this run.

    `config` is the resolved config of the subcommand as a plain dict (what `--print_config` shows).
    """
    return [], None
