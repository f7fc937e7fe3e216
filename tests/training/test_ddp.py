"""Exact evaluation under DDP: 2 CPU processes (gloo) score an odd number of images exactly like 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ecaplatform.models import create_model
from tests.image_folders import make_imagenet_folder
from tests.training_helpers import DEMO, VAL_PER_CLASS, VERIFY_JOB, validate


@pytest.mark.slow
@pytest.mark.parametrize("eval_backend", ["torchvision", "dali"])
def test_two_rank_validation_counts_every_image_once_and_matches_one_rank(tmp_path: Path, eval_backend: str) -> None:
    if eval_backend == "dali":
        pytest.importorskip("nvidia.dali", reason="the dali backend needs NVIDIA DALI: pip install -e '.[dali]'")
    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=1,
                                val_per_class=VAL_PER_CLASS, size=24)  # fmt: skip
    torch.manual_seed(3)
    model = create_model("eca_resnet18", num_classes=len(VAL_PER_CLASS))
    weights = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"epoch": 1, "arch": "eca_resnet18", "best_prec1": 0.0,
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)  # fmt: skip

    single, _ = validate(tmp_path, "single", root, weights, devices=1, eval_backend=eval_backend)
    ddp, output = validate(tmp_path, "ddp", root, weights, devices=2, eval_backend=eval_backend)

    assert "MEMBER: 2/2" in output  # two ranks really ran
    # Lightning's advice to sync_dist metrics that torchmetrics already reduced exactly is not printed (quiet.py).
    assert "sync_dist" not in output, output

    assert single["val_samples"] == ddp["val_samples"] == 11
    assert ddp["val_top1"] == single["val_top1"]
    assert ddp["val_top5"] == single["val_top5"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert 0.0 < single["val_top5"] < 100.0  # the weights discriminate: the comparison is not vacuous
    # Both results say which input pipeline made their batches (a DALI evaluation never verifies a claim).
    from sqlalchemy import select

    from ecaplatform.store.database import session_scope, writer_engine
    from ecaplatform.store.schema import Result

    with session_scope(writer_engine()) as session:
        pipelines = [result.pipeline for result in session.scalars(select(Result))]
    assert pipelines == ["dali-cpu" if eval_backend == "dali" else "torchvision"] * 2


# --- what the store records under DDP and across nodes -----------------------------------------------------------



def eca_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "ecaplatform", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _store_runs() -> list[Any]:
    from sqlalchemy import select

    from ecaplatform.store.database import session_scope, writer_engine
    from ecaplatform.store.schema import Run

    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Run)))


@pytest.mark.slow
def test_ddp_fit_records_each_epoch_as_lightning_logged_it_fresh_and_resumed(tmp_path: Path) -> None:
    from tests.training_helpers import CLASSIFIER_EPOCH_METRICS, csv_epoch_metrics, store_epoch_metrics

    ddp = ["--config", str(DEMO), "--data.init_args.image_size", "16", "--trainer.limit_train_batches", "2",
           "--trainer.limit_val_batches", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false", "--job.wandb_mode", "disabled"]  # fmt: skip
    for extra in (["--trainer.max_epochs", "2"], ["--trainer.max_epochs", "3", "--ckpt_path", "last"]):
        proc = eca_subprocess(["fit", *ddp, *extra], tmp_path)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "MEMBER: 2/2" in out, out[-3000:]

    [run] = _store_runs()
    assert (run.status, run.world_size) == ("succeeded", 2)
    logged = csv_epoch_metrics(sorted((tmp_path / "runs").rglob("metrics.csv")))
    assert len(logged) == 3 * len(CLASSIFIER_EPOCH_METRICS)
    assert store_epoch_metrics(run.id) == logged


@pytest.mark.slow
def test_two_nodes_record_one_run_with_one_id_and_count_each_image_once(tmp_path: Path) -> None:
    """Two node processes (1 device each) started by hand with torchrun-style variables, as a cluster's
    launcher would on two hosts: one run in the store, every validation image counted once."""
    from tests.services import free_port

    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=1,
                                val_per_class=VAL_PER_CLASS, size=24)  # fmt: skip
    model = create_model("eca_resnet18", num_classes=len(VAL_PER_CLASS))
    weights = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)
    args = ["validate", "--config", str(VERIFY_JOB), "--model.checkpoint", str(weights), "--data.root", str(root),
            "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0",
            "--data.init_args.batch_size", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.num_nodes", "2", "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
            "--job.wandb_mode", "disabled"]  # fmt: skip
    port = str(free_port())
    nodes = [eca_subprocess(args, tmp_path, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
                                             "NODE_RANK": str(node)}) for node in (0, 1)]  # fmt: skip
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-3000:] for out in outputs)

    [run] = _store_runs()
    assert (run.status, run.num_nodes, run.world_size) == ("succeeded", 2, 2)
    from sqlalchemy import select

    from ecaplatform.store.database import session_scope, writer_engine
    from ecaplatform.store.schema import Result

    with session_scope(writer_engine()) as session:
        [result] = session.scalars(select(Result))
    assert result.run_id == run.id and result.samples_evaluated == result.fingerprint["num_samples"] == 11
    for node, out in enumerate(outputs):  # each node's log names the run it belongs to
        assert f"eca validate: recording run {run.id} (node {node} of 2)" in out, out[-3000:]


# --- the same guards in the fast tier: one 2-rank fit, seconds, its store inspected write by write -----------------

FAST_DDP_JOB = """
seed_everything: 0
job:
  name: ddp_store_guards
  launcher: local
  wandb_mode: disabled
  resources:
    gpus_per_node: 0
model:
  model_name: eca_resnet18
  optimizer:
    lr: 0.001
data:
  class_path: ecaplatform.datamodules.ImageNetDataModule
  init_args:
    root: {root}
    batch_size: 4        # 2 per rank: BatchNorm trains on more than one value
    eval_batch_size: 2   # 1 per rank: the ranks run 6 and 5 validation batches
    image_size: 16
    num_workers: 0
    show_progress: false
trainer:
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_epochs: 2
  limit_train_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
"""

# Every write the ranks make, logged by SQLite itself: an upsert that rewrites a row with the same values (what a
# second rank would do) leaves no other trace in the store.
WRITE_AUDIT = """
CREATE TABLE write_audit (tbl TEXT, op TEXT, epoch INTEGER, name TEXT);
CREATE TRIGGER audit_runs_insert AFTER INSERT ON runs
  BEGIN INSERT INTO write_audit VALUES ('runs', 'insert', NULL, NEW.status); END;
CREATE TRIGGER audit_runs_status AFTER UPDATE OF status ON runs
  BEGIN INSERT INTO write_audit VALUES ('runs', 'update', NULL, NEW.status); END;
CREATE TRIGGER audit_metrics_insert AFTER INSERT ON epoch_metrics
  BEGIN INSERT INTO write_audit VALUES ('epoch_metrics', 'insert', NEW.epoch, NEW.name); END;
CREATE TRIGGER audit_metrics_update AFTER UPDATE ON epoch_metrics
  BEGIN INSERT INTO write_audit VALUES ('epoch_metrics', 'update', NEW.epoch, NEW.name); END;
CREATE TRIGGER audit_results_insert AFTER INSERT ON results
  BEGIN INSERT INTO write_audit VALUES ('results', 'insert', NULL, NEW.split); END;
"""


def test_two_rank_fit_writes_the_store_from_rank_zero_only_and_counts_each_val_image_once(tmp_path: Path) -> None:
    """Fast tier (`eca fit`, 2 gloo ranks, 2 epochs of one batch): the recorder writes on global rank 0 only (one
    run row, one result, each epoch's metrics once) and our exact sampler survives Lightning's sampler replacement
    (a padding DistributedSampler would score 12 of the 11 validation images)."""
    import math
    import sqlite3
    from contextlib import closing

    from sqlalchemy import func, select

    from ecaplatform.store.database import session_scope, sqlite_path, upgrade, writer_engine
    from ecaplatform.store.schema import EpochMetric, Result, ResultOutcome, Run
    from tests.training_helpers import CLASSIFIER_EPOCH_METRICS, csv_epoch_metrics, store_epoch_metrics

    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=2,
                                val_per_class=VAL_PER_CLASS, size=16)  # fmt: skip
    job = tmp_path / "ddp_store_guards.yaml"
    job.write_text(FAST_DDP_JOB.format(root=root))
    engine = writer_engine()
    upgrade(engine)
    engine.dispose()
    store_file = sqlite_path(os.environ["ECA_DB_URL"])
    with closing(sqlite3.connect(store_file)) as conn:
        conn.executescript(WRITE_AUDIT)

    proc = eca_subprocess(["fit", "--config", str(job)], tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "MEMBER: 2/2" in out, out[-3000:]

    with session_scope(writer_engine()) as session:
        runs = list(session.scalars(select(Run)))
        results = list(session.scalars(select(Result)))
        outcomes = session.scalars(select(ResultOutcome.num_samples)).all()
        samples = dict(session.execute(select(EpochMetric.epoch, EpochMetric.value).where(
            EpochMetric.name == "val_samples")).all())  # fmt: skip
        metric_rows = session.scalar(select(func.count()).select_from(EpochMetric))
    with closing(sqlite3.connect(store_file)) as conn:
        writes = conn.execute("SELECT tbl, op, epoch, name FROM write_audit ORDER BY rowid").fetchall()

    assert len(runs) == 1, f"{len(runs)} run rows"
    assert len(results) == 1, f"{len(results)} results: {[(r.split, r.samples_evaluated) for r in results]}"
    [run], [result] = runs, results
    assert (run.status, run.world_size, run.job_name) == ("succeeded", 2, "ddp_store_guards")
    assert (result.run_id, result.split) == (run.id, "val")
    # Exact counting: every validation image once, in the result, its per-image outcomes and each epoch's count.
    assert result.samples_evaluated == result.fingerprint["num_samples"] == sum(VAL_PER_CLASS) == 11
    assert outcomes == [11]
    assert samples == {0: 11.0, 1: 11.0}
    # each epoch's metrics as rank 0 logged them (its CSVLogger), the finite ones: all 7 for each of 2 epochs
    logged = csv_epoch_metrics(sorted((tmp_path / "runs").rglob("metrics.csv")))
    assert len(logged) == 2 * len(CLASSIFIER_EPOCH_METRICS)
    assert store_epoch_metrics(run.id) == {key: value for key, value in logged.items() if math.isfinite(value)}

    # Written once, by one rank: each epoch metric, the result, and the run's start and end.
    metric_writes = [(epoch, name) for table, _, epoch, name in writes if table == "epoch_metrics"]
    duplicated = sorted({key for key in metric_writes if metric_writes.count(key) > 1})
    assert not duplicated and len(metric_writes) == metric_rows, f"epoch metrics written more than once: {duplicated}"
    assert [w for w in writes if w[0] == "results"] == [("results", "insert", None, "val")]
    assert [w[1:] for w in writes if w[0] == "runs"] == [("insert", None, "running"), ("update", None, "succeeded")]


@pytest.mark.slow
def test_two_rank_fit_trains_on_dali_cpu_batches(tmp_path: Path) -> None:
    """The DALI CPU training graph (DALI decodes the crop window, torch resizes inside the pipeline through
    fn.python_function) in two DDP processes: both ranks train on their own shard and the run is recorded."""
    pytest.importorskip("nvidia.dali", reason="the dali backend needs NVIDIA DALI: pip install -e '.[dali]'")
    from sqlalchemy import select

    from ecaplatform.store.database import session_scope, writer_engine
    from ecaplatform.store.schema import Run

    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=2,
                                val_per_class=VAL_PER_CLASS, size=16)  # fmt: skip
    job = tmp_path / "ddp_dali.yaml"
    job.write_text(FAST_DDP_JOB.format(root=root))
    proc = eca_subprocess(["fit", "--config", str(job), "--data.init_args.backend", "dali",
                           "--data.init_args.dali_device", "cpu", "--trainer.max_epochs", "1",
                           "--trainer.limit_train_batches", "2"], tmp_path)  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "MEMBER: 2/2" in out, out[-3000:]
    with session_scope(writer_engine()) as session:
        [run] = session.scalars(select(Run))
        assert (run.status, run.world_size) == ("succeeded", 2)
        assert run.config["data"]["init_args"]["backend"] == "dali"
