"""The `job:` section of a job YAML: what the run is called, which claim it tests and where it runs.

A job YAML is a LightningCLI config (model/data/trainer) plus this section, so the same file works with
`eca fit --config` and with `eca submit`. Dataclasses let jsonargparse reject unknown keys, wrong types, values
outside a Literal and numbers out of range (PositiveInt, ...) with the field's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from jsonargparse.typing import NonNegativeInt, PositiveInt

Command = Literal["fit", "validate", "test"]
COMMANDS: tuple[str, ...] = get_args(Command)  # what `eca submit` can run, and `eca fit|validate|test`

# Job names and run ids become folder names (runs/<job>/<run id>/), SLURM job names and W&B run ids: one safe
# path component each, no separator, no "..", no leading dot. Run ids fit the store's 40-character column.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
JOB_NAME_MAX_CHARS = 64
RUN_ID_MAX_CHARS = 40


class UnsafeIdentifierError(ValueError):
    """A job name or run id that cannot safely name a folder; the message names the setting."""


def check_identifier(value: object, setting: str, max_chars: int) -> str:
    """`value` if it is a safe name (letters, digits, '.', '_', '-', starting with a letter or digit, no '..',
    at most `max_chars`), else UnsafeIdentifierError naming `setting` (e.g. "job.name", "ECA_RUN_ID")."""
    if isinstance(value, str) and len(value) <= max_chars and _SAFE_NAME.fullmatch(value) and ".." not in value:
        return value
    raise UnsafeIdentifierError(
        f"{setting} {value!r} cannot name a folder: use 1 to {max_chars} letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, without '..'"
    )


@dataclass
class Resources:
    """What a SLURM allocation asks for (ignored by the local launcher except `gpus_per_node`)."""

    nodes: PositiveInt = 1
    gpus_per_node: NonNegativeInt = 0  # 0 means a CPU job: --ntasks-per-node is then `tasks_per_node`
    tasks_per_node: PositiveInt = 1  # used when gpus_per_node == 0 (CPU DDP); otherwise one task per GPU
    cpus_per_task: PositiveInt = 2
    mem: str = "8G"
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None


@dataclass
class JobSpec:
    """Identity and placement of a run. `claim` is a claim id from claims/eca_net.yaml, or None."""

    name: str = "unnamed"
    claim: str | None = None
    launcher: Literal["local", "slurm"] = "local"
    # What `eca submit` runs: verification jobs say `validate`; `eca submit --command` overrides it.
    command: Command = "fit"
    resources: Resources = field(default_factory=Resources)
    # W&B: "auto" is online when WANDB_API_KEY is set, offline otherwise.
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "eca-net"
    wandb_entity: str | None = None
