"""The RunRecorder hook by hook and the StoreLogger call by call, on a stand-in trainer (no training: milliseconds a
test), checking what each leaves in the store. Mutation testing (`make mutation`) found these paths reached only by
slow or SLURM tests, or not checked field by field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from sqlalchemy import select

from ecaplatform.store.database import Store, session_scope, writer_engine
from ecaplatform.store.outcomes import read_outcomes
from ecaplatform.store.schema import EpochMetric, Result, Run
from ecaplatform.store.writes import upsert_run
from ecaplatform.training import provenance
from ecaplatform.training.jobspec import JobSpec
from ecaplatform.training.recorder import RunRecorder, whole_split_outcomes
from ecaplatform.training.run import RunStatus
from ecaplatform.training.store_logger import StoreLogger

FINGERPRINT = {"dataset": "digits", "split": "val", "num_samples": 4, "num_classes": 10, "hash": "h" * 64}


class Data:
    """What the recorder reads of a data module."""

    dataset_name = "digits-module"

    def __init__(self, pipeline: Any = "torchvision", fingerprint: Any = None) -> None:
        self._pipeline, self._fingerprint = pipeline, fingerprint

    def fingerprint(self, split: str) -> dict[str, Any]:
        if isinstance(self._fingerprint, Exception):
            raise self._fingerprint
        return {**FINGERPRINT, "split": split} if self._fingerprint is None else self._fingerprint

    def pipeline(self, split: str) -> Any:
        if isinstance(self._pipeline, Exception):
            raise self._pipeline
        return self._pipeline[split] if isinstance(self._pipeline, dict) else self._pipeline


class Trainer:
    """What the recorder reads of a Lightning Trainer."""

    def __init__(self, *, rank: int = 0, world: int = 1, metrics: dict[str, Any] | None = None,
                 datamodule: Any = None) -> None:  # fmt: skip
        self.is_global_zero, self.local_rank, self.node_rank = rank == 0, rank, 0
        self.world_size, self.num_nodes = world, 1
        self.datamodule = Data() if datamodule is None else datamodule
        self.callback_metrics = dict(metrics or {})
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"),
                                        broadcast=lambda value, src: f"{value}@{src}")  # fmt: skip
        self.sanity_checking = False
        self.current_epoch, self.global_step = 2, 40


class Module:
    def __init__(self, hparams: dict[str, Any] | None = None, outcomes: Any = None) -> None:
        self.hparams = {"model_name": "eca_resnet18"} if hparams is None else hparams
        self._outcomes = outcomes

    def eval_outcomes(self, split: str) -> Any:
        if isinstance(self._outcomes, Exception):
            raise self._outcomes
        return self._outcomes


def _metrics(split: str, samples: float = 4.0) -> dict[str, Any]:
    return {f"{split}_top1": torch.tensor(75.0), f"{split}_top5": 100.0, f"{split}_loss": torch.tensor(0.5),
            f"{split}_samples": torch.tensor(samples)}  # fmt: skip


def _run(run_id: str = "r") -> Run | None:
    with session_scope(writer_engine()) as session:
        return session.get(Run, run_id)


def _results(run_id: str = "r") -> list[Result]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Result).where(Result.run_id == run_id).order_by(Result.id)))


def _epochs(run_id: str = "r") -> dict[tuple[int, str], tuple[int, float]]:
    with session_scope(writer_engine()) as session:
        rows = session.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id))
        return {(m.epoch, m.name): (m.step, m.value) for m in rows}


def _recorder(command: str, config: dict[str, Any] | None = None, job: JobSpec | None = None,
              **store: Any) -> RunRecorder:  # fmt: skip
    return RunRecorder(StoreLogger(RunStatus("r"), command, **store), config, job)


def _evaluate(command: str, trainer: Trainer, module: Module | None = None, **kwargs: Any) -> RunRecorder:
    """One `eca validate|test` as Lightning calls the recorder's hooks and the logger's finalize."""
    module = module or Module()
    recorder = _recorder(command, **kwargs)
    recorder.setup(trainer, module, command)
    if command == "validate":
        recorder.on_validation_start(trainer, module)
        recorder.on_validation_end(trainer, module)
    else:
        recorder.on_test_start(trainer, module)
        recorder.on_test_end(trainer, module)
    recorder.store.finalize("success")
    return recorder


# --- a run and its result ----------------------------------------------------------------------------------------


def test_a_validate_run_records_its_provenance_and_its_whole_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"weights")
    config = {"model": {"init_args": {"model_name": "from-config"}}, "seed": 3}
    metrics = {**_metrics("val", samples=3.6), "val_nan": float("nan"), "text": "not a number"}
    trainer = Trainer(metrics=metrics, world=4)
    trainer.num_nodes = 2  # rank 0's id on every rank: "r@0"
    claim = "eca_resnet18-imagenet-top1"
    _evaluate("validate", trainer, config=config, job=JobSpec(name="verify-r18", claim=claim), evaluated=str(weights))
    assert capsys.readouterr().out == "eca validate: recording run r@0 (node 0 of 2)\n"

    run = _run("r@0")
    assert run is not None
    assert (run.status, run.error, run.command, run.job_name) == ("succeeded", None, "validate", "verify-r18")
    assert (run.model_name, run.dataset_name, run.accelerator) == ("eca_resnet18", "digits-module", "cpu")
    assert (run.num_nodes, run.world_size, run.host, run.claim_id) == (2, 4, provenance.hostname(), claim)
    assert run.config == config and run.config_hash == provenance.config_hash(config)
    assert run.versions == provenance.library_versions() and (run.git_commit, run.git_dirty) == provenance.git_state()
    assert run.checkpoint_path == str(weights.resolve())
    assert run.checkpoint_sha256 == hashlib.sha256(b"weights").hexdigest()
    [result] = _results("r@0")
    assert (result.model_name, result.dataset, result.split, result.pipeline) == (
        "eca_resnet18", "digits", "val", "torchvision")
    assert (result.top1, result.top5, result.loss, result.samples_evaluated) == (75.0, 100.0, 0.5, 4)
    assert result.fingerprint == FINGERPRINT


def test_a_test_run_records_the_test_split_and_validation_hooks_record_nothing() -> None:
    data = Data(pipeline={"val": "torchvision", "test": "dali-cpu"})  # each split's own pipeline
    trainer = Trainer(metrics={**_metrics("test"), **_metrics("val")}, datamodule=data)
    recorder, module = _recorder("test"), Module()
    recorder.setup(trainer, module, "test")
    recorder.on_validation_start(trainer, module)
    assert _run() is None  # a test run begins at on_test_start only
    recorder.on_test_start(trainer, module)
    recorder.on_validation_end(trainer, module)
    recorder.on_test_end(trainer, module)
    recorder.store.finalize("success")
    assert [(r.split, r.fingerprint["split"], r.pipeline) for r in _results()] == [("test", "test", "dali-cpu")]
    assert (_run().command, _run().model_name, _run().status) == ("test", "eca_resnet18", "succeeded")


def test_a_validate_run_ignores_test_hooks_and_the_sanity_check() -> None:
    trainer = Trainer(metrics=_metrics("val"))
    recorder, module = _recorder("validate"), Module()
    recorder.setup(trainer, module, "validate")
    recorder.on_test_start(trainer, module)
    assert _run() is None
    recorder.on_validation_start(trainer, module)
    trainer.sanity_checking = True
    recorder.on_validation_end(trainer, module)
    assert _results() == []
    trainer.sanity_checking = False
    recorder.on_test_end(trainer, module)
    assert _results() == []
    recorder.on_validation_end(trainer, module)
    recorder.store.finalize("success")
    assert len(_results()) == 1


class _Boxed:
    """A metric that float() cannot read but whose item() can (as a tensor or numpy scalar has)."""

    def item(self) -> float:
        return 2.5


def test_results_keep_finite_numbers_only() -> None:
    metrics = {"val_top1": float("nan"), "val_top5": _Boxed(), "val_loss": float("inf"), "val_samples": 4.0}
    _evaluate("validate", Trainer(metrics=metrics))
    [result] = _results()
    assert (result.top1, result.top5, result.loss, result.samples_evaluated) == (None, 2.5, None, 4)


def test_an_evaluation_end_without_its_start_records_nothing() -> None:
    trainer, module = Trainer(metrics=_metrics("val")), Module()
    recorder = _recorder("validate")
    recorder.setup(trainer, module, "validate")
    recorder.on_validation_end(trainer, module)  # no run begun: no result (and no orphan row)
    with session_scope(writer_engine()) as session:
        assert session.scalars(select(Result)).all() == []


def test_the_accelerator_names_the_gpu_within_its_column(monkeypatch: pytest.MonkeyPatch) -> None:
    device = SimpleNamespace(type="cuda", index=0)
    names = {id(device): "NVIDIA H100 80GB HBM3 " + "x" * 60}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: names[id(d)])
    trainer = Trainer(metrics=_metrics("val"))
    trainer.strategy.root_device = device
    _evaluate("validate", trainer)
    assert _run().accelerator == ("cuda:NVIDIA H100 80GB HBM3 " + "x" * 60)[:64]


def test_a_running_run_beats_and_its_slurm_job_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "0.25")  # a beat every 0.05 s
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    recorder, trainer, module = _started()
    started = _run().heartbeat_at
    deadline = time.monotonic() + 10
    while _run().heartbeat_at == started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _run().heartbeat_at > started and _run().slurm_job_id == "77"
    recorder.store.finalize("success")
    assert recorder.status._heartbeat is None


def test_the_model_name_comes_from_the_module_then_the_config_then_the_class() -> None:
    assert _recorder("fit")._model_name(SimpleNamespace()) == "SimpleNamespace"  # a module without hparams
    for hparams, config, expected in [
        ({"model_name": "eca_resnet50"}, {"model": {"model_name": "x"}}, "eca_resnet50"),
        ({}, {"model": {"model_name": "plain_section"}}, "plain_section"),
        ({}, {"model": {"class_path": "m.C", "init_args": {"model_name": "init_args"}}}, "init_args"),
        ({}, {"model": {"class_path": "m.C", "init_args": "not a section"}}, "Module"),
        ({}, {"model": "not a section"}, "Module"),
        ({}, {"data": {"model_name": "another section"}}, "Module"),
    ]:  # fmt: skip
        assert _recorder("validate", config)._model_name(Module(hparams)) == expected, config


def test_a_fit_records_its_final_validation_and_the_first_saving_checkpoints_best(tmp_path: Path) -> None:
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"best")
    last.write_bytes(b"last")
    trainer, recorder, module = Trainer(metrics=_metrics("val")), _recorder("fit"), Module()
    recorder.setup(trainer, module, "fit")
    recorder.on_validation_start(trainer, module)  # a fit begins at on_fit_start, not at a validation
    assert _run() is None
    recorder.on_fit_start(trainer, module)
    recorder.on_validation_end(trainer, module)  # per-epoch validations are metrics, not results
    assert _results() == []
    recorder.store.after_save_checkpoint(SimpleNamespace(best_model_path=str(best), last_model_path=str(last)))
    recorder.store.after_save_checkpoint(SimpleNamespace(best_model_path=str(last), last_model_path=""))
    recorder.on_fit_end(trainer, module)
    recorder.store.finalize("success")
    run = _run()
    assert (run.status, run.model_name, run.checkpoint_path) == ("succeeded", "eca_resnet18", str(best.resolve()))
    assert run.checkpoint_sha256 == hashlib.sha256(b"best").hexdigest()
    assert [(r.split, r.top1) for r in _results()] == [("val", 75.0)]


def test_a_fit_without_a_best_checkpoint_records_the_last_and_without_validation_no_result(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"last")
    recorder, trainer, module = _started()
    trainer.callback_metrics = {"train_loss": 1.0}
    recorder.store.after_save_checkpoint(SimpleNamespace(best_model_path="", last_model_path=str(last)))
    recorder.on_fit_end(trainer, module)
    recorder.store.finalize("success")
    assert _run().checkpoint_path == str(last.resolve()) and _results() == []


def test_the_evaluated_checkpoint_is_the_ckpt_path_else_the_configs_and_a_missing_file_none(tmp_path: Path) -> None:
    from ecaplatform.training.integration import tracking_for_run

    weights = tmp_path / "released.pth.tar"
    weights.write_bytes(b"released")
    config = {"model": {"init_args": {"checkpoint": str(weights)}}}
    job = JobSpec(wandb_mode="disabled")
    assert tracking_for_run("validate", config, job)[1][0].evaluated == str(weights)
    assert tracking_for_run("test", {**config, "ckpt_path": "x.ckpt"}, job)[1][0].evaluated == "x.ckpt"
    assert tracking_for_run("fit", config, job)[1][0].evaluated is None  # a fit records the checkpoint it saves
    _evaluate("validate", Trainer(metrics=_metrics("val")), evaluated=str(weights))
    assert _run().checkpoint_path == str(weights.resolve())
    assert StoreLogger(RunStatus("x"), "validate", str(tmp_path / "gone"))._checkpoint_fields() == {}
    assert StoreLogger(RunStatus("x"), "fit")._checkpoint_fields() == {}  # no checkpoint saved


def test_other_ranks_record_nothing_and_take_rank_zeros_run_id() -> None:
    trainer = Trainer(rank=1, world=2, metrics=_metrics("val"))
    recorder = _evaluate("validate", trainer)
    assert recorder.status.run_id == "r@0" and recorder.state_dict() == {"run_id": "r@0"}  # broadcast from rank 0
    recorder.on_exception(trainer, Module(), RuntimeError("boom"))  # nor on failure
    recorder.on_slurm_requeued(trainer, 10)
    recorder.store.log_metrics({"val_top1": 1.0, "epoch": 0}, step=1)
    with session_scope(writer_engine()) as session:
        assert session.scalars(select(Run)).all() == []


def test_the_node_line_is_printed_by_each_nodes_first_process(capsys: pytest.CaptureFixture[str]) -> None:
    _recorder("validate").setup(Trainer(), Module(), "validate")  # one node: no node to name
    trainer = Trainer()
    trainer.num_nodes, trainer.node_rank = 2, 1
    _recorder("validate").setup(trainer, Module(), "validate")
    trainer.local_rank = 1
    _recorder("validate").setup(trainer, Module(), "validate")
    assert capsys.readouterr().out == "eca validate: recording run r\neca validate: recording run r (node 1 of 2)\n"


# --- what a result is made of --------------------------------------------------------------------------------------


def test_a_failing_fingerprint_or_pipeline_never_loses_the_result() -> None:
    data = Data(pipeline=RuntimeError("no pipeline"), fingerprint=OSError("unreadable"))
    _evaluate("validate", Trainer(metrics=_metrics("val"), datamodule=data))
    [result] = _results()
    assert result.fingerprint == {"error": "unreadable"} and result.pipeline is None
    assert result.dataset == "digits-module"  # no fingerprint: the data module's name


@pytest.mark.parametrize(("pipeline", "recorded"), [("p" * 40, "p" * 32), ("", None), (None, None)])
def test_the_pipeline_name_fits_its_column(pipeline: Any, recorded: str | None) -> None:
    _evaluate("validate", Trainer(metrics=_metrics("val"), datamodule=Data(pipeline=pipeline)))
    assert _results()[0].pipeline == recorded


def test_a_data_module_without_fingerprint_or_name_gives_an_unknown_dataset() -> None:
    data = SimpleNamespace()  # neither fingerprint(), pipeline() nor dataset_name
    _evaluate("validate", Trainer(metrics={"val_top1": 50.0}, datamodule=data))
    [result] = _results()
    assert (result.dataset, result.fingerprint, result.pipeline) == ("unknown", {}, None)
    assert (result.top5, result.loss, result.samples_evaluated) == (None, None, 0)


def _outcomes(n: int = 4) -> dict[str, np.ndarray]:
    target = np.arange(n) % 3
    predicted = target.copy()
    predicted[0] = (predicted[0] + 1) % 3  # image 0 wrong at top-1, right at top-5: 75% / 100%
    return {"target": target, "predicted": predicted, "top1": predicted == target, "top5": np.ones(n, bool)}


def test_whole_split_outcomes_are_stored_with_the_result() -> None:
    _evaluate("validate", Trainer(metrics=_metrics("val")), Module(outcomes=_outcomes()))
    [result] = _results()
    with session_scope(writer_engine()) as session:
        stored = read_outcomes(session, result.id)
    assert stored is not None and stored.target.tolist() == _outcomes()["target"].tolist()
    assert stored.predicted.tolist() == _outcomes()["predicted"].tolist()


@pytest.mark.parametrize("outcomes", [None, RuntimeError("gather failed"), {"target": [1]}, {"target": [0, 1]}])
def test_missing_failing_or_malformed_outcomes_never_lose_the_result(outcomes: Any) -> None:
    _evaluate("validate", Trainer(metrics=_metrics("val")), Module(outcomes=outcomes))
    [result] = _results()
    assert result.top1 == 75.0
    with session_scope(writer_engine()) as session:
        assert read_outcomes(session, result.id) is None


def test_outcomes_that_disagree_with_the_result_are_dropped_and_the_result_kept() -> None:
    wrong = _outcomes()
    wrong["predicted"] = wrong["target"].copy()  # 100% top-1, the result says 75%
    wrong["top1"] = np.ones(4, bool)
    _evaluate("validate", Trainer(metrics=_metrics("val")), Module(outcomes=wrong))
    [result] = _results()
    with session_scope(writer_engine()) as session:
        assert read_outcomes(session, result.id) is None


def test_outcomes_are_kept_only_for_the_whole_split() -> None:
    assert whole_split_outcomes(_outcomes(), 4, FINGERPRINT) is not None
    assert whole_split_outcomes(_outcomes(), 3, FINGERPRINT) is None  # a limit_val_batches subset
    assert whole_split_outcomes(_outcomes(), 4, {}) is None
    assert whole_split_outcomes(None, 4, FINGERPRINT) is None
    assert whole_split_outcomes({"target": [0]}, 4, FINGERPRINT | {"num_samples": 4}) is None
    assert whole_split_outcomes({"target": [0], "predicted": [0], "top1": [1], "top5": [0]}, 1,
                                {"num_samples": 1}) is None  # malformed: right at top-1, wrong at top-5


# --- how a run ends ----------------------------------------------------------------------------------------------


def _started(command: str = "fit") -> tuple[RunRecorder, Trainer, Module]:
    trainer, module = Trainer(), Module()
    recorder = _recorder(command)
    recorder.setup(trainer, module, command)
    recorder.on_fit_start(trainer, module) if command == "fit" else recorder.on_validation_start(trainer, module)
    return recorder, trainer, module


@pytest.mark.parametrize(
    ("exception", "status", "error"),
    [
        (RuntimeError("boom at epoch 1"), "failed", "RuntimeError: boom at epoch 1"),
        (KeyboardInterrupt(), "interrupted", "KeyboardInterrupt: stopped by a signal (preemption, scancel, ^C)"),
        (SIGTERMException(), "interrupted", "SIGTERMException: stopped by a signal (preemption, scancel, ^C)"),
    ],
)
def test_an_exception_ends_the_run_and_no_later_success_is_recorded(
    exception: BaseException, status: str, error: str
) -> None:
    recorder, trainer, module = _started()
    recorder.on_exception(trainer, module, exception)
    recorder.store.finalize("failed")  # what Lightning calls next
    recorder.store.finalize("success")
    run = _run()
    assert (run.status, run.error) == (status, error) and run.ended_at is not None
    assert recorder.status._heartbeat is None


def test_an_end_without_a_run_records_nothing() -> None:
    trainer, module = Trainer(), Module()
    recorder = _recorder("fit")
    recorder.setup(trainer, module, "fit")
    recorder.on_exception(trainer, module, RuntimeError("no data"))  # e.g. `eca fit` stopped before on_fit_start
    recorder.store.finalize("success")
    assert _run() is None


def test_a_slurm_requeue_leaves_the_run_interrupted_for_the_requeued_job() -> None:
    recorder, trainer, module = _started()
    trainer.current_epoch, trainer.global_step = 3, 120
    recorder.store.finalize("finished")  # the flush before the requeue ends nothing
    assert _run().status == "running"
    recorder.on_slurm_requeued(trainer, 10)
    recorder.on_exception(trainer, module, RuntimeError("W&B's service is gone"))  # while SLURM stops the job
    recorder.store.finalize("success")  # the process is stopped: never a success
    run = _run()
    assert (run.status, run.error) == ("interrupted", "preempted at epoch 3, step 120: requeued by SLURM "
                                                      "(signal 10); the requeued job continues this run")
    assert recorder.status._heartbeat is None


def test_a_requeue_before_the_run_began_leaves_its_record_alone() -> None:
    upsert_run(writer_engine(), "r", job_name="j", command="fit", model_name="m", status="queued")  # `eca submit`
    recorder = _recorder("fit")
    recorder.on_slurm_requeued(Trainer(), 10)
    recorder.store.finalize("success")
    assert (_run().status, _run().error) == ("queued", None)


# --- per-epoch metrics: what Lightning sends its loggers at each epoch's end --------------------------------------


def test_epoch_logs_become_that_epochs_metrics_and_step_logs_do_not() -> None:
    recorder, _, _ = _started()
    store = recorder.store
    assert (store.name, store.version, store.save_dir) == ("", "r", None)
    store.log_metrics({"train_loss_step": 3.0, "loss_epoch": 2.0, "epoch": 0}, step=1)  # a training step's log
    store.log_metrics({"train/device/samples_per_sec": 9.0, "epoch": 0}, step=1)  # ThroughputMonitor's
    store.log_metrics({"val_top1": 50.0}, step=2)  # a log with a step of its own (a validation step's)
    store.log_metrics({"val_top1": torch.tensor(61.5), "epoch": 0, "inf": float("inf"), "x" * 65: 1.0,
                       "y" * 64: 2.0}, step=3)  # names fit the store's 64 characters  # fmt: skip
    store.log_metrics({"train_loss": 1.5, "epoch": 1}, step=7)
    store.log_metrics({"train_loss": 1.25, "epoch": 1}, step=8)  # a log sent again rewrites it
    assert _epochs() == {(0, "loss_epoch"): (1, 2.0), (0, "val_top1"): (3, 61.5), (0, "y" * 64): (3, 2.0),
                         (1, "train_loss"): (8, 1.25)}  # fmt: skip


def test_epoch_logs_of_no_fit_or_before_the_run_began_are_not_recorded() -> None:
    StoreLogger(RunStatus("r"), "fit").log_metrics({"val_top1": 50.0, "epoch": 0}, step=3)  # no run yet
    assert _run() is None and _epochs() == {}
    recorder, _, _ = _started("validate")
    recorder.store.log_metrics({"val_top1": 50.0, "epoch": 0}, step=3)  # a validation's result, not an epoch's
    assert _epochs() == {}
    recorder.store.finalize("success")  # stops its heartbeat thread


def test_the_recorder_takes_only_fit_validate_or_test_and_fixes_its_store(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"command 'predict': the recorder records one of \['fit', 'test', "):
        _recorder("predict")
    monkeypatch.setenv("ECA_DB_URL", "sqlite:////elsewhere/runs.db")
    assert RunStatus("r", Store.at("sqlite:////given/runs.db")).store.path == Path("/given/runs.db")
    assert RunStatus("r").store.path == Path("/elsewhere/runs.db")
    recorder = _recorder("fit")
    assert (recorder.config, recorder.job, recorder.state_key) == ({}, JobSpec(), "RunRecorder")


# --- the W&B run ---------------------------------------------------------------------------------------------------


class _WandbLogger:
    """A WandbLogger whose run could not be read at the start (W&B not up yet) and can be at the end."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def experiment(self) -> SimpleNamespace:
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("wandb is starting")
        return SimpleNamespace(offline=True, dir="/w/offline-run-1/files", id="abc", path="e/p/abc")


@pytest.mark.parametrize(("exception", "exit_code"), [(None, 0), (RuntimeError("boom"), 1)])
def test_the_wandb_run_is_recorded_when_known_and_finished_with_the_runs_exit_code(
    monkeypatch: pytest.MonkeyPatch, exception: Exception | None, exit_code: int
) -> None:
    import wandb

    finished: list[int] = []
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", lambda exit_code: finished.append(exit_code))
    trainer, module = Trainer(), Module()
    recorder = _recorder("fit", wandb_logger=_WandbLogger())
    recorder.setup(trainer, module, "fit")
    recorder.on_fit_start(trainer, module)
    assert _run().wandb_id is None  # W&B could not say yet
    if exception is not None:
        recorder.on_exception(trainer, module, exception)
    recorder.store.finalize("failed" if exception else "success")
    run = _run()
    assert (run.wandb_id, run.wandb_mode, run.wandb_path) == ("abc", "offline", "/w/offline-run-1")
    assert finished == [exit_code] and recorder.store.wandb_location == ("offline", "/w/offline-run-1")


def test_a_queued_or_running_run_whose_process_ended_unrecorded_is_ended_once() -> None:
    RunStatus("q").queued(job_name="j", command="fit", model_name="m", config={}, slurm_job_id="7")
    assert (_run("q").status, _run("q").slurm_job_id) == ("queued", "7")
    assert RunStatus("q").end("failed") is False  # not this process's run: it neither queued nor started it
    assert RunStatus("q").end_unfinished("failed", "exited with code 1") is True  # eca submit, after its child
    assert (_run("q").status, _run("q").error) == ("failed", "exited with code 1")
    assert RunStatus("q").end_unfinished("interrupted", "again") is False and _run("q").status == "failed"
    assert RunStatus("never").end_unfinished("failed", "x") is False and _run("never") is None
    running, queued = RunStatus("r"), RunStatus("s")
    running.start(job_name="j", command="fit", model_name="m", config={})
    running.stop_heartbeat()
    assert RunStatus("r").end_unfinished("failed", "killed") is True and _run("r").status == "failed"
    queued.queued(job_name="j", command="fit", model_name="m", config={})
    assert queued.end("failed", "sbatch failed") is True and _run("s").error == "sbatch failed"  # its own queued run
