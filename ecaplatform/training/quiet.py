"""Known third-party noise, each silenced by the narrowest switch there is, so `eca fit` prints what the user needs.

Every entry names the message, why it is noise here, and when to drop the entry. Nothing here hides a category
of warnings or a whole logger: a new warning from the same libraries still shows.
"""

from __future__ import annotations

import logging
import os
import warnings

# Lightning 2.6.6's utilities/_pytree.py builds torch's LeafSpec, deprecated since torch 2.10: a FutureWarning per
# fit, nothing the user can act on. Drop when Lightning stops using LeafSpec.
_LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"

# Lightning's SLURMEnvironment warns whenever an `srun` binary exists and this process was not started by srun,
# i.e. on every local run of a machine that has SLURM installed. It helps only inside a SLURM allocation
# (salloc/sbatch) where the user forgot srun; `eca submit` writes srun into its batch scripts itself.
_SRUN_HINT = r"The `srun` command is available on your system but is not used"

# Under DDP Lightning advises `sync_dist=True` for every tensor logged per epoch. ImageClassifier's epoch metrics come
# from torchmetrics' compute(), which has already summed counts over all ranks: each rank logs the same exact number,
# and sync_dist would only average those equal numbers again. Only these names are meant; any other metric keeps it.
_SYNC_DIST_ADVICE = (r"It is recommended to use `self.log\('(train|val|test)_(top1|top5|loss|samples)', \.\.\., "
                     r"sync_dist=True\)`")

# W&B prints three info lines on every run (offline syncing, where its files are, `wandb leet`) although the
# logger asks for Settings(quiet=True); `eca fit` prints the run's W&B folder itself. show_info=False drops only
# W&B's info lines (its warnings and errors still show); WANDB_SHOW_INFO=true in the environment brings them back.
_WANDB_INFO = ("WANDB_SHOW_INFO", "false")

# Advertisements Lightning logs at INFO on every fit, through the logger of all its rank-zero info lines (which
# stay): lightning.pytorch's, or lightning.fabric's where only Fabric is imported.
_TIP_PREFIX = "💡 Tip:"
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_TIP_PREFIX)


def srun_hint_helps() -> bool:
    """Inside a SLURM allocation but not started by srun: the one case where Lightning's srun hint is advice."""
    in_allocation = "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    return in_allocation and "SLURM_STEP_ID" not in os.environ


def silence_known_noise() -> None:
    """Install the filters above (idempotent: warnings and logging keep one copy of each)."""
    warnings.filterwarnings("ignore", message=_LEAFSPEC, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_SYNC_DIST_ADVICE)
    os.environ.setdefault(*_WANDB_INFO)  # in the environment: DDP's processes and W&B's service inherit it
    if not srun_hint_helps():
        warnings.filterwarnings("ignore", message=_SRUN_HINT)
    for name in _RANK_ZERO_LOGGERS:
        rank_zero = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
            rank_zero.addFilter(_DropTips())
