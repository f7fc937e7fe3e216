"""EvalOutcomes: each evaluated image's outcome (true class, top-1 prediction, top-5 right), gathered across DDP
ranks once, at the epoch's end, and put in the dataset's index order: what a result stores as its per-image outcomes.

The rows are `dist_reduce_fx="cat"` state: torchmetrics gathers them in compute(), padding and trimming ranks that
hold different counts (exact evaluation: rank::world_size). Each rank puts in front of its rows the dataset indices
its loader read, in the order it read them (`place`), so rank 0 can sort every image into its place; where a rank
cannot say which images it read, or read only some of its share (limit_*_batches), no rank's outcomes count.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ecaplatform.datamodules.base import sample_order

log = logging.getLogger(__name__)


def loader_order(loaders: Any) -> list[int] | None:
    """The dataset indices one evaluation loader reads, in order; None for several loaders or one that cannot say."""
    if isinstance(loaders, (list, tuple)) and len(loaders) == 1:
        loaders = loaders[0]
    return None if isinstance(loaders, (list, tuple, dict)) or loaders is None else sample_order(loaders)


class EvalOutcomes(Metric):
    """`update` per batch, `place` once per epoch on every rank, then `compute` on every rank (it gathers)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("rows", default=[], dist_reduce_fx="cat")  # int64 [n, 3], then [n, 4] with the index first
        self.add_state("unplaced", default=torch.tensor(0), dist_reduce_fx="sum")  # ranks whose rows have no place

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        # The same float logits and ops as the top-1/top-5 metrics (argmax; the target among topk's indices), so
        # ties break alike and the outcomes count exactly what they count. Device work only: no host copy, no wait.
        logits, targets = logits.detach().float(), targets.long()
        top5 = (logits.topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]).any(dim=1)
        self.rows.append(torch.stack([targets, logits.argmax(dim=1), top5.long()], dim=1))

    def place(self, order: list[int] | None) -> None:
        """Put `order`, the dataset indices this rank's loader read, in front of this rank's rows."""
        rows = torch.cat(self.rows) if self.rows else torch.empty((0, 3), dtype=torch.long, device=self.device)
        if order is None or len(order) != len(rows):
            if order is not None and len(rows) < len(order):  # limit_*_batches: expected, no fault
                log.info("no per-image outcomes: %d outcomes for %d indices read (a subset)", len(rows), len(order))
            else:  # None: the loader cannot say which it read
                log.warning("no per-image outcomes: %d outcomes for %s indices read", len(rows), order and len(order))
            self.unplaced += 1
            order = [-1] * len(rows)
        self.rows = [torch.cat([torch.tensor(order, dtype=torch.long).to(rows.device)[:, None], rows], dim=1)]

    def compute(self) -> dict[str, np.ndarray] | None:
        """`target`, `predicted`, `top1`, `top5` (the fields of store.outcomes.Outcomes) in dataset-index order;
        None unless every rank placed its rows and the indices are each of range(N) exactly once."""
        if int(self.unplaced):
            return None
        rows = dim_zero_cat(self.rows).cpu().numpy()
        order = np.argsort(rows[:, 0], kind="stable")
        if not np.array_equal(rows[order, 0], np.arange(len(rows))):
            log.warning("no per-image outcomes: the %d evaluated dataset indices are not each of 0..%d once",
                        len(rows), len(rows) - 1)  # fmt: skip
            return None
        target, predicted, top5 = rows[order, 1], rows[order, 2], rows[order, 3].astype(bool)
        return {"target": target, "predicted": predicted, "top1": predicted == target, "top5": top5}
