"""What quiet.py silences is exactly the noise it names: W&B's info lines, and Lightning's sync_dist advice for the
classifier's own exact epoch metrics only."""

from __future__ import annotations

import os
import warnings

import pytest

from ecaplatform.training.quiet import silence_known_noise


def _advice(name: str) -> str:
    return (f"It is recommended to use `self.log('{name}', ..., sync_dist=True)` when logging on epoch level in "
            "distributed setting to accumulate the metric across devices.")


def test_the_sync_dist_advice_is_dropped_for_the_exact_metrics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SHOW_INFO", "")  # so that what silence_known_noise sets is undone after the test
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        silence_known_noise()
        for name in ("val_top1", "val_top5", "val_loss", "val_samples", "train_top1", "test_loss", "val_box_ap",
                     "my_val_top1", "val_top10"):  # fmt: skip
            warnings.warn(_advice(name), UserWarning, stacklevel=1)
    kept = [str(w.message).split("'")[1] for w in shown]
    assert kept == ["val_box_ap", "my_val_top1", "val_top10"]  # another module's metric still gets the advice


def test_wandb_info_lines_are_off_unless_the_environment_asks_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SHOW_INFO", "")  # recorded, so that the test leaves the environment as it was
    monkeypatch.delenv("WANDB_SHOW_INFO")
    silence_known_noise()
    assert os.environ["WANDB_SHOW_INFO"] == "false"
    monkeypatch.setenv("WANDB_SHOW_INFO", "true")
    silence_known_noise()
    assert os.environ["WANDB_SHOW_INFO"] == "true"
