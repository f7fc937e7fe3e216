"""Runs whose process dies: a killed run shows `lost` (its heartbeat stops) and never keeps a claim Running;
`eca submit` records how its local child ended when the child could not, and forwards SIGTERM/SIGINT to it;
resuming through `eca submit` continues the same run (one record, every epoch once, one W&B run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Run
from ecaplatform.store.verification import RUNNING, UNVERIFIED, evaluate_claims
from tests.services import wait_for
from tests.training_helpers import CLASSIFIER_EPOCH_METRICS, DEMO, csv_epoch_metrics, store_epoch_metrics

# The demo trains eca_resnet18 on digits: a claim on digits is one it can hold Running (an ImageNet claim never).
CLAIM = "eca_resnet18-digits-top1"
DIGITS_CLAIMS = f"""claims:
  - {{id: {CLAIM}, paper: demo, model: eca_resnet18, task: classification, dataset: digits, split: val,
     expected_samples: 360, expected_classes: 10, metric: top1, tolerance: 0.1}}
"""
QUICK = ["--data.init_args.image_size", "16", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
# A run that goes on until it is stopped (and writes no checkpoint files while it does).
ENDLESS = ["--trainer.max_epochs", "100000", "--trainer.enable_checkpointing", "false", "--job.wandb_mode", "disabled",
           *QUICK]  # fmt: skip




def the_run() -> Run | None:
    with session_scope(writer_engine()) as session:
        runs = list(session.scalars(select(Run)))
    assert len(runs) <= 1, [r.id for r in runs]
    return runs[0] if runs else None


def running_run() -> Run | None:
    run = the_run()
    return run if run is not None and run.status == "running" else None


def claim_status() -> str:
    with session_scope(writer_engine()) as session:
        return next(s.status for s in evaluate_claims(session) if s.claim.id == CLAIM)


def child_of(pid: int) -> int:
    """The one child process of `pid` (eca submit's training process)."""
    children = wait_for(lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split(), f"a child of {pid}")
    return int(children[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else ""
    return state != "Z"


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    """`eca ARGS` in a child process; its output goes to a file (read with `output`), never to a pipe that an
    orphaned grandchild could keep open."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(cwd / f"eca-{len(list(cwd.glob('eca-*.log')))}.log", "w")  # noqa: SIM115 (the child holds it)
    proc = subprocess.Popen([sys.executable, "-m", "ecaplatform", *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()[-4000:]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_killed_run_shows_lost_and_no_longer_keeps_its_claim_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "3")  # a beat every 0.6 s; lost 3 s after the last one
    (tmp_path / "claims.yaml").write_text(DIGITS_CLAIMS)
    monkeypatch.setenv("ECA_CLAIMS_FILE", str(tmp_path / "claims.yaml"))  # the child process reads it too
    proc = spawn(["fit", "--config", str(DEMO), "--job.claim", CLAIM, *ENDLESS], tmp_path)
    try:
        first_beat = getattr(wait_for(running_run, "the run marked running"), "heartbeat_at", None)
        assert claim_status() == RUNNING
        time.sleep(2)  # a few beats
    finally:
        proc.kill()  # kill -9, as the OOM killer does: no handler runs, nothing is recorded
        proc.wait()
    time.sleep(3.5)
    assert claim_status() == UNVERIFIED  # nothing is running for the claim any more

    from ecaplatform.store.verification import LOST, run_status

    run = the_run()
    assert run.status == "running"  # what the dead process left; `lost` is how the store is read
    assert run_status(run.status, run.heartbeat_at, run.started_at) == LOST
    assert first_beat is not None and run.heartbeat_at > first_beat  # it did beat while it lived


@pytest.mark.slow
def test_submit_records_a_child_killed_by_sigkill(tmp_path: Path) -> None:
    submit = spawn(["submit", str(DEMO), "--", *ENDLESS], tmp_path)
    try:
        wait_for(running_run, "the run marked running")
        os.kill(child_of(submit.pid), signal.SIGKILL)
        submit.wait(timeout=60)
    finally:
        submit.kill()
    assert submit.returncode == 128 + signal.SIGKILL, output(submit)
    run = the_run()
    assert run.status == "failed" and run.ended_at is not None, output(submit)
    assert "SIGKILL" in run.error and "out of memory" in run.error


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_submit_stops_its_child_and_the_run_is_recorded(tmp_path: Path, signum: int) -> None:
    submit = spawn(["submit", str(DEMO), "--", *ENDLESS], tmp_path)
    child = None
    try:
        wait_for(running_run, "the run marked running")
        child = child_of(submit.pid)
        submit.send_signal(signum)
        submit.wait(timeout=90)
        time.sleep(1)
        assert not alive(child), f"eca submit left its training process {child} running\n{output(submit)}"
    finally:
        submit.kill()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)
    assert submit.returncode != 0
    run = the_run()
    assert run.status == "interrupted" and run.ended_at is not None, output(submit)


@pytest.mark.slow
def test_resuming_through_submit_continues_the_same_run_and_wandb_run(tmp_path: Path) -> None:
    first = spawn(["submit", str(DEMO), "--", "--trainer.max_epochs", "2", *QUICK], tmp_path)
    assert first.wait(timeout=300) == 0, output(first)
    resumed = spawn(["submit", str(DEMO), "--", "--trainer.max_epochs", "3", "--ckpt_path", "last", *QUICK], tmp_path)
    assert resumed.wait(timeout=300) == 0, output(resumed)
    out = output(resumed)

    run = the_run()  # one record for both
    assert run.status == "succeeded" and run.wandb_id == run.id
    assert f"eca submit: run {run.id}" in out
    logged = csv_epoch_metrics(sorted((tmp_path / "runs").rglob("metrics.csv")))  # every epoch logged once
    assert len(logged) == 3 * len(CLASSIFIER_EPOCH_METRICS)
    assert store_epoch_metrics(run.id) == logged
    offline_runs = sorted(p.name for p in (tmp_path / "wandb").rglob("offline-run-*") if p.is_dir())
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run.id}") for name in offline_runs)
