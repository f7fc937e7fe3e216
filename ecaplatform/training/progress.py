"""Progress for logs: plain lines instead of a redrawn bar when stdout is not a terminal (a SLURM .out file, a pipe).

A bar redrawn with carriage returns becomes one line thousands of characters long in a file. Here: one line per
finished epoch with its progress-bar metrics, and inside a long epoch (or evaluation) a line at most every
`interval_s` seconds with the batch count, speed and time left.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _number(value: Any) -> str:
    number = float(value.item() if hasattr(value, "item") else value)
    return f"{number:.4g}" if abs(number) < 1000 else f"{number:.0f}"


class LogLinesProgressBar(ProgressBar):
    """Lightning's progress bar slot, filled with log-friendly lines (see the module doc)."""

    def __init__(self, interval_s: float = 60.0, stream: TextIO | None = None) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._stream = stream
        self._enabled = True
        self._epoch_start = 0.0  # when the training epoch began
        self._eval_start = 0.0  # when the running validation/test began
        self._last_line = 0.0  # when the last in-progress line was written
        self._last_before_eval = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, line: str) -> None:
        if self._enabled and self.trainer.is_global_zero:
            print(line, file=self._stream or sys.stdout, flush=True)

    def _maybe_report(self, what: str, started: float, done: int, total: float) -> None:
        now = time.monotonic()
        if now - self._last_line < self.interval_s:
            return
        self._last_line = now
        elapsed = now - started
        speed = done / elapsed if elapsed > 0 else 0.0
        if math.isfinite(total) and total > 0:
            left = f", {_duration((total - done) / speed)} left" if speed > 0 else ""
            self._write(f"{what}: batch {done}/{int(total)} ({100 * done / total:.0f}%), {speed:.2f} it/s{left}")
        else:
            self._write(f"{what}: batch {done}, {speed:.2f} it/s")

    def _epoch_name(self, trainer: pl.Trainer) -> str:
        total = f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        return f"epoch {trainer.current_epoch}{total}"

    # --- training -------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_line = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._maybe_report(self._epoch_name(trainer), self._epoch_start, batch_idx + 1, self.total_train_batches)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{name} {_number(value)}" for name, value in metrics.items() if _is_number(value))
        took = _duration(time.monotonic() - self._epoch_start)
        self._write(f"{self._epoch_name(trainer)} done in {took}" + (f": {shown}" if shown else ""))

    # --- evaluation -----------------------------------------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_before_eval = self._last_line
        self._eval_start = self._last_line = time.monotonic()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        what, totals = ("sanity check", trainer.num_sanity_val_batches) if trainer.sanity_checking else \
            ("validation", trainer.num_val_batches)  # fmt: skip
        self._maybe_report(what, self._eval_start, batch_idx + 1, _total(totals, dataloader_idx))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(self._summary("validation", trainer, pl_module))
        self._last_line = self._last_before_eval  # the epoch's own line clock goes on

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start = self._last_line = time.monotonic()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._maybe_report("test", self._eval_start, batch_idx + 1, _total(trainer.num_test_batches, dataloader_idx))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(self._summary("test", trainer, pl_module))

    def _summary(self, what: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        metrics = {k: v for k, v in trainer.callback_metrics.items() if _is_number(v)}
        shown = "  ".join(f"{name} {_number(value)}" for name, value in metrics.items())
        return f"{what} done in {_duration(time.monotonic() - self._eval_start)}" + (f": {shown}" if shown else "")


def _total(batches: list[int | float], dataloader_idx: int) -> float:
    return float(batches[dataloader_idx]) if dataloader_idx < len(batches) else math.inf


def _is_number(value: Any) -> bool:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return math.isfinite(number)
