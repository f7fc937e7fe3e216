"""Every evaluation result stores its per-image outcomes, in the split's order, gathered exactly across DDP ranks;
a subset evaluation, or outcomes that disagree with their result, store none (and the result is kept)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import select
from torch.utils.data import DataLoader, RandomSampler

from ecaplatform.datamodules.base import ExactDistributedSampler, sample_order
from ecaplatform.datamodules.digits import load_digits_uint8, split_indices
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.outcomes import Outcomes, read_outcomes
from ecaplatform.store.schema import Result, Run
from ecaplatform.training.integration import tracking_for_run
from ecaplatform.training.jobspec import JobSpec
from ecaplatform.training.lightning_cli import main
from ecaplatform.training.outcomes_metric import EvalOutcomes, loader_order
from ecaplatform.training.recorder import whole_split_outcomes
from tests.training_helpers import (
    DEMO,
    NUM_CLASSES,
    TinyClassifier,
    TinyData,
    released_style_checkpoint,
    tiny_config,
    trainer_for,
)

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # runs/<job>/ folders land in the test's own directory

# The demo job at 16 px, two training batches, the WHOLE val split (360 images), no W&B.
FULL_VAL = ["--data.init_args.image_size", "16", "--trainer.limit_train_batches", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--job.wandb_mode", "disabled"]  # fmt: skip


def stored() -> list[tuple[Run, Result, Outcomes | None]]:
    """Every result in the store, oldest first, with its run and its outcomes (None where it has none)."""
    with session_scope(writer_engine()) as session:
        rows = session.execute(select(Run, Result).join(Result, Result.run_id == Run.id).order_by(Result.id)).all()
        return [(run, result, read_outcomes(session, result.id)) for run, result in rows]


def assert_counts_are_the_results(result: Result, outcomes: Outcomes) -> None:
    """The outcomes mark right exactly the images the result's percentages count (to a fraction of one image)."""
    n = result.samples_evaluated
    assert outcomes.num_samples == n == result.fingerprint["num_samples"]
    assert abs(result.top1 * n / 100 - int(outcomes.top1.sum())) < 1e-3
    assert abs(result.top5 * n / 100 - int(outcomes.top5.sum())) < 1e-3


def digits_val_labels() -> np.ndarray:
    """The demo's val labels in the data module's index order (sorted sample numbers of the stratified split)."""
    _, labels = load_digits_uint8()
    return labels.numpy()[split_indices(labels.numpy(), val_fraction=0.2, seed=0)["val"]]


# --- (a) one process: fit, validate and test store outcomes that are their result's, in the split's order --------


def test_fit_validate_and_test_store_each_images_outcome_in_dataset_order(tmp_path: Path) -> None:
    root = ["--trainer.default_root_dir", str(tmp_path / "demo")]
    # Fit runs Lightning's sanity check first: its two batches must not end up among the outcomes.
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", *FULL_VAL, *root]) == 0
    assert main(["validate", "--config", str(DEMO), "--ckpt_path", "best", *FULL_VAL, *root]) == 0
    assert main(["test", "--config", str(DEMO), "--ckpt_path", "best", *FULL_VAL, *root]) == 0  # digits: test = val

    results = stored()
    assert [(run.command, result.split) for run, result, _ in results] == [
        ("fit", "val"), ("validate", "val"), ("test", "test")]  # fmt: skip
    labels = digits_val_labels()
    assert len(labels) == 360 and not np.all(labels[:-1] <= labels[1:])  # an order a shuffle would break
    for _, result, kept in results:
        assert kept is not None
        assert_counts_are_the_results(result, kept)
        assert np.array_equal(kept.target, labels)
    outcomes = [kept for _, _, kept in results]
    assert 0 < outcomes[0].top1.sum() < 360  # the checks above are not on a degenerate all-right/all-wrong vector
    # One checkpoint (the fit's only epoch is its best), one split: the same prediction for every image.
    assert all(np.array_equal(kept.predicted, outcomes[0].predicted) for kept in outcomes)


# --- (b) two DDP processes store exactly what one process stores ------------------------------------------------


@pytest.mark.slow  # two `eca validate` processes, one of them a 2-rank DDP run: ~17 s on 2 CPUs
def test_two_rank_validation_stores_the_single_process_outcomes_image_by_image(tmp_path: Path) -> None:
    from tests.image_folders import make_imagenet_folder
    from tests.training_helpers import VAL_PER_CLASS, validate

    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=1,
                                val_per_class=VAL_PER_CLASS, size=24)  # fmt: skip
    weights = released_style_checkpoint(tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18", len(VAL_PER_CLASS))
    validate(tmp_path, "single", root, weights, devices=1)
    _, output = validate(tmp_path, "ddp", root, weights, devices=2)  # 11 images: rank 0 reads 6, rank 1 reads 5
    assert "MEMBER: 2/2" in output

    (single_run, single, one), (ddp_run, ddp, two) = stored()
    assert (single_run.world_size, ddp_run.world_size) == (1, 2)
    assert one is not None and two is not None
    for result, kept in ((single, one), (ddp, two)):
        assert_counts_are_the_results(result, kept)
        # The folder's index order: classes sorted, each class's images together (rank order would interleave).
        assert np.array_equal(kept.target, np.repeat(np.arange(len(VAL_PER_CLASS)), VAL_PER_CLASS))
    for name in ("target", "predicted", "top1", "top5"):
        assert np.array_equal(getattr(two, name), getattr(one, name)), name
    assert 0 < one.top5.sum() < 11 and len(set(one.predicted)) > 1  # not a vector any order would match


# --- (c) a subset evaluation stores its result and no outcomes ----------------------------------------------------


def test_a_limit_val_batches_subset_stores_its_result_without_outcomes(tmp_path: Path) -> None:
    weights = released_style_checkpoint(tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18", num_classes=10)
    args = ["validate", "--config", str(DEMO), "--model.checkpoint", str(weights), *FULL_VAL,
            "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", str(tmp_path / "subset")]  # fmt: skip
    assert main(args) == 0
    [(_, result, outcomes)] = stored()
    assert (result.samples_evaluated, result.fingerprint["num_samples"]) == (128, 360)
    assert outcomes is None


def test_outcomes_of_fewer_samples_than_the_split_are_not_kept() -> None:
    """The recorder's own rule, whatever the module hands it: 128 of 360 images (the first two batches are a
    permutation of range(128), so index checks alone would let them through) have no per-image meaning."""
    target = np.arange(128) % 10
    vectors = {"target": target, "predicted": target, "top1": np.ones(128, bool), "top5": np.ones(128, bool)}
    assert whole_split_outcomes(vectors, 128, {"num_samples": 360}) is None
    kept = whole_split_outcomes(vectors, 128, {"num_samples": 128})
    assert kept is not None and kept.num_samples == 128


# --- outcomes that disagree with their result: the result is stored, the outcomes are not ------------------------


class _WrongOutcomes(TinyClassifier):
    """Claims every image wrong even at top-5, which with 4 classes is always right: never the result's own."""

    def eval_outcomes(self, split: str) -> dict[str, np.ndarray]:
        n = TinyData().sizes[split]
        target = np.arange(n) % NUM_CLASSES
        wrong = np.zeros(n, dtype=bool)
        return {"target": target, "predicted": (target + 1) % NUM_CLASSES, "top1": wrong, "top5": wrong}


def test_outcomes_that_disagree_with_the_result_are_dropped_and_the_result_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callbacks, loggers = tracking_for_run("validate", tiny_config(), JobSpec(name="eval", wandb_mode="disabled"))
    with caplog.at_level(logging.WARNING, logger="ecaplatform.training.recorder"):
        trainer_for(callbacks, loggers, tmp_path).validate(_WrongOutcomes(), datamodule=TinyData())
    [(run, result, outcomes)] = stored()
    assert run.status == "succeeded" and result.samples_evaluated == 40 and result.top5 == 100.0
    assert outcomes is None
    assert "stored without its per-image outcomes, which disagree with it: outcomes mark 0 images" in caplog.text


# --- (d) the gather: uneven ranks, placed by the indices each rank read --------------------------------------------


def gathered(per_rank: list[list[int] | None], target: np.ndarray, predicted: np.ndarray, top5: np.ndarray,
             rows: list[list[int]] | None = None) -> dict[str, np.ndarray] | None:  # fmt: skip
    """compute() on rank 0 after the gather: an EvalOutcomes per rank, fed logits for its images (`rows`, default
    the indices it says it read) and placed with those indices, merged as torchmetrics' gather concatenates them."""
    ranks = []
    for indices, read in zip(per_rank, rows or per_rank, strict=True):
        # Of 8 classes: the prediction first, classes 4-6 next, the target 2nd where it is in the top 5, else last.
        logits = torch.tensor([[0.0] * 4 + [3.0, 2.0, 1.0, 0.0]]).repeat(len(read), 1)
        logits[torch.arange(len(read)), target[read]] = torch.tensor(np.where(top5[read], 5.0, -5.0)).float()
        logits[torch.arange(len(read)), predicted[read]] = 10.0
        metric = EvalOutcomes()
        for batch in torch.arange(len(read)).split(2) if read else ():  # a rank with no image runs no batch
            metric.update(logits[batch], torch.as_tensor(target[read])[batch])
        metric.place(indices)
        ranks.append(metric)
    for other in ranks[1:]:
        ranks[0].merge_state(other)
    return ranks[0].compute()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_gather_places_an_uneven_split_in_dataset_order(world: int) -> None:
    n = 11  # not divisible by 2, 3 or 4: ranks hold 6/5, 4/4/3, 3/3/3/2
    rng = np.random.default_rng(world)
    target = rng.integers(0, 4, n)
    predicted = np.where(rng.random(n) < 0.5, target, (target + 1) % 4)
    top5 = (predicted == target) | (rng.random(n) < 0.5)
    per_rank = [list(ExactDistributedSampler(n, num_replicas=world, rank=rank)) for rank in range(world)]
    assert len({len(indices) for indices in per_rank}) == 2 and not top5.all()  # really uneven; top-5 misses
    # Placed by the indices each rank says it read, not by an assumed rank::world pattern.
    for order in (per_rank, [list(block) for block in np.array_split(rng.permutation(n), world)]):
        placed = gathered(order, target, predicted, top5)
        assert placed is not None and np.array_equal(placed["target"], target)
        assert np.array_equal(placed["predicted"], predicted) and np.array_equal(placed["top5"], top5)
        assert np.array_equal(placed["top1"], predicted == target)


def test_gather_refuses_indices_that_are_not_each_sample_once() -> None:
    target, right = np.arange(5) % 4, np.ones(5, dtype=bool)
    assert gathered([[0, 2, 4], [1, 3]], target, target, right) is not None
    assert gathered([[0, 2, 4], [1, 3], []], target, target, right) is not None  # a rank that had no image to read
    padded_sampler = [[0, 2, 4], [1, 3, 0]]  # a padding DistributedSampler repeats image 0 on the last rank
    assert gathered(padded_sampler, target, target, right) is None
    assert gathered([[0, 2, 4], None], target, target, right, rows=[[0, 2, 4], [1, 3]]) is None  # cannot say
    assert gathered([[0, 2, 4], [1, 3]], target, target, right, rows=[[0, 2], [1]]) is None  # a subset


def test_loaders_say_which_samples_they_read_and_in_which_order() -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(11, 1), torch.zeros(11))
    for rank in (0, 1):
        loader = DataLoader(data, batch_size=2, sampler=ExactDistributedSampler(11, num_replicas=2, rank=rank))
        assert sample_order(loader) == list(range(rank, 11, 2))
    assert sample_order(DataLoader(data, batch_size=4)) == list(range(11))
    # A random order changes between passes: the listed pass would not be the pass that ran.
    assert sample_order(DataLoader(data, batch_size=4, sampler=RandomSampler(data))) is None
    assert sample_order([(torch.zeros(2, 1), torch.zeros(2))]) is None  # a plain iterable of batches
    assert loader_order([loader]) == loader_order(loader) == list(range(1, 11, 2))  # Lightning's list of one
    assert loader_order([loader, loader]) is None and loader_order({"a": loader}) is None and loader_order(None) is None


def test_the_dali_loader_says_its_order_as_its_batches_read_it() -> None:
    from ecaplatform.datamodules.dali import DaliLoader

    loader: Any = object.__new__(DaliLoader)  # no DALI needed: the order is the platform's own sampler's
    loader.sampler, loader.batch_size, loader.drop_last = ExactDistributedSampler(11, num_replicas=2, rank=1), 2, False
    assert sample_order(loader) == [1, 3, 5, 7, 9]
