"""Resuming safely: `--ckpt_path last` takes the furthest trained of last.ckpt and the run's SLURM preemption
checkpoint (a requeued job), only runs of the job's model, and every refusal names `--from_run`; a run that another
process is still running (fresh heartbeat) is refused in one line unless `--force`."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import update

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Run, utcnow
from ecaplatform.store.writes import finish_run, start_run
from ecaplatform.training.lightning_cli import main
from ecaplatform.training.run import CHECKPOINT_KEY, identify
from tests.training_helpers import DEMO, QUICK, csv_epoch_metrics, store_epoch_metrics

ECA18 = {"model_name": "eca_resnet18", "model_kwargs": None}
R18 = {"model_name": "resnet18", "model_kwargs": None}


def checkpoint(path: Path, step: int, epoch: int = 0, model: dict[str, Any] = ECA18, mtime: float | None = None
               ) -> Path:  # fmt: skip
    """A file with what `--ckpt_path last` reads of a Lightning checkpoint: its progress, model and run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pytorch-lightning_version": "2.6.6", "global_step": step, "epoch": epoch, "hyper_parameters": model,
                "callbacks": {CHECKPOINT_KEY: {"run_id": path.parent.parent.name}}}, path)  # fmt: skip
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def last(job: Path, **kwargs: Any) -> tuple[str, str]:
    found = identify("fit", "demo", str(job), "last", kwargs.pop("from_run", None), None, **kwargs)
    return found.ckpt_path or "", found.taken_from or ""


def test_a_requeued_job_resumes_the_furthest_trained_of_its_preemption_checkpoint_and_last_ckpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECA_RUN_ID", "requeued")  # what a requeued job's environment keeps
    run = tmp_path / "requeued"
    last_ckpt = checkpoint(run / "checkpoints" / "last.ckpt", step=100, epoch=1, mtime=2_000_000_000)
    checkpoint(run / "hpc_ckpt_1.ckpt", step=40)
    hpc = checkpoint(run / "hpc_ckpt_2.ckpt", step=150, epoch=2, mtime=1_000_000_000)  # an older mtime: a copied file
    path, taken_from = last(tmp_path, model=ECA18)
    assert path == str(hpc.absolute()), taken_from
    assert taken_from.startswith("run requeued") and "hpc_ckpt_2.ckpt at step 150" in taken_from, taken_from
    checkpoint(last_ckpt, step=200, epoch=3)  # trained on after the requeue: last.ckpt is now the newer
    assert last(tmp_path, model=ECA18)[0] == str(last_ckpt.absolute())
    hpc.write_bytes(hpc.read_bytes()[:100])  # cut off while SLURM stopped the job: never preferred
    checkpoint(last_ckpt, step=10)
    assert last(tmp_path, model=ECA18)[0] == str(last_ckpt.absolute())
    last_ckpt.unlink()  # preempted within its first epoch: the preemption checkpoint is all there is
    hpc.unlink()
    assert last(tmp_path, model=ECA18)[0] == str((run / "hpc_ckpt_1.ckpt").absolute())


def test_last_takes_the_newest_run_of_the_jobs_model_and_says_which(tmp_path: Path) -> None:
    mine = checkpoint(tmp_path / "mine" / "checkpoints" / "last.ckpt", step=10, mtime=1_000_000_000)
    checkpoint(tmp_path / "other" / "checkpoints" / "last.ckpt", step=99, model=R18, mtime=1_500_000_000)
    path, taken_from = last(tmp_path, model=ECA18)
    assert path == str(mine.absolute())
    assert taken_from.startswith("run mine") and "other (resnet18)" in taken_from, taken_from
    assert last(tmp_path, model=None)[0].endswith("other/checkpoints/last.ckpt")  # --trust_ckpt_hparams: any model


@pytest.mark.parametrize("setup", ["no run", "only other models", "named run has none", "named run is another model"])
def test_every_last_refusal_names_from_run(tmp_path: Path, setup: str) -> None:
    if setup != "no run":
        checkpoint(tmp_path / "other" / "checkpoints" / "last.ckpt", step=5, model=R18)
    from_run = {"named run has none": "nope", "named run is another model": "other"}.get(setup)
    with pytest.raises(ValueError, match="--from_run") as refused:
        last(tmp_path, model=ECA18, from_run=from_run)
    message = str(refused.value)
    assert "\n" not in message and "--from_run <id>" in message, message
    if setup == "only other models":
        assert "other (resnet18)" in message and "--trust_ckpt_hparams" in message


# --- a run that is still alive ------------------------------------------------------------------------------------


def mark(run_id: str, *, heartbeat_age_s: float = 0, slurm_job: str | None = None) -> None:
    engine = writer_engine()
    start_run(engine, run_id, job_name="demo", command="fit", model_name="eca_resnet18", host="node7",
              slurm_job_id=slurm_job)  # fmt: skip
    with session_scope(engine) as session:
        session.execute(update(Run).where(Run.id == run_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age_s)))  # fmt: skip
    engine.dispose()


def test_a_run_with_a_fresh_heartbeat_is_refused_unless_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECA_RUN_ID", "alive")
    mark("alive", heartbeat_age_s=20, slurm_job="41")
    with pytest.raises(ValueError, match="--force") as refused:
        identify("fit", "demo", str(tmp_path), None, None, None)
    message = str(refused.value)
    assert message.startswith("run alive is still running (host node7, SLURM job 41): its heartbeat is 2") and (
        "lost after 300 s" in message and "\n" not in message), message  # fmt: skip
    assert identify("fit", "demo", str(tmp_path), None, None, None, force=True).id == "alive"
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process joining the run its first process started
    assert identify("fit", "demo", str(tmp_path), None, None, None).id == "alive"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("ECA_RUN_ID")
    monkeypatch.setenv("SLURM_JOB_ID", "41")  # SLURM requeued the run's own job: its earlier start was stopped
    mark("slurm-41", slurm_job="41")
    assert identify("fit", "demo", str(tmp_path), None, None, None).id == "slurm-41"
    monkeypatch.setenv("ECA_RUN_ID", "alive")
    mark("alive", heartbeat_age_s=301)  # lost: its process stopped beating
    assert identify("fit", "demo", str(tmp_path), None, None, None).id == "alive"
    finish_run(writer_engine(), "alive", "failed")
    assert identify("fit", "demo", str(tmp_path), None, None, None).id == "alive"


@pytest.mark.slow  # three short fits
def test_resume_through_eca_fit_refuses_a_live_run_and_forced_takes_the_preemption_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    def fit(*extra: str, epochs: int) -> int:
        return main(["fit", "--config", str(DEMO), "--trainer.max_epochs", str(epochs), *QUICK, *extra])

    assert fit(epochs=1) == 0
    [run_dir] = (tmp_path / "runs" / "demo_cpu").iterdir()
    checkpoints = run_dir / "checkpoints"
    shutil.copy(checkpoints / "last.ckpt", tmp_path / "epoch0.ckpt")
    assert fit("--ckpt_path", "last", "--from_run", run_dir.name, epochs=2) == 0
    # As a requeue leaves it: the preemption checkpoint (here: after epoch 1) newer than last.ckpt (after epoch 0).
    (checkpoints / "last.ckpt").rename(run_dir / "hpc_ckpt_1.ckpt")
    shutil.copy(tmp_path / "epoch0.ckpt", checkpoints / "last.ckpt")
    mark(run_dir.name, heartbeat_age_s=5)  # and the store says a process still runs it
    monkeypatch.setenv("ECA_RUN_ID", run_dir.name)
    capsys.readouterr()

    assert fit("--ckpt_path", "last", epochs=3) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"eca fit: error: run {run_dir.name} is still running") and err.count("\n") == 1, err
    assert "--force" in err
    assert fit("--ckpt_path", "last", "--force", epochs=3) == 0
    out = capsys.readouterr().out
    assert f"--ckpt_path last: run {run_dir.name}" in out and f"{run_dir / 'hpc_ckpt_1.ckpt'}" in out, out
    logs = sorted(run_dir.rglob("metrics.csv"), key=lambda path: path.stat().st_mtime)
    assert {epoch for epoch, _ in csv_epoch_metrics(logs[-1:])} == {2}  # it went on from epoch 1's end
    assert {epoch for epoch, _ in store_epoch_metrics(run_dir.name)} == {0, 1, 2}
    with session_scope(writer_engine()) as session:
        stored = session.get(Run, run_dir.name)
        assert stored.status == "succeeded" and "force" not in stored.config
