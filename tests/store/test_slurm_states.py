"""SLURM's word on runs the store still calls queued or running: parsed from sacct/squeue, one call for many runs,
cached, bounded by a timeout, nothing without SLURM; and on a real single-node SLURM (no accounting: squeue), a job
cancelled while queued, one cancelled while running and one over its time limit, as `eca runs` shows them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ecaplatform.cli.main import main as eca
from ecaplatform.store import slurm_states
from ecaplatform.store.slurm_states import SlurmEnd, clear_cache, shown_status, slurm_ended
from ecaplatform.training.run import RunStatus
from tests.services import SlurmCluster, wait_for


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def fake_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sacct: str, squeue: str) -> Path:
    """`sacct` and `squeue` on PATH (alone) running the given shell bodies; each call is appended to calls.log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(parents=True)
    for name, body in (("sacct", sacct), ("squeue", squeue)):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin")
    return log


NO_ACCOUNTING = 'echo "Slurm accounting storage is disabled" >&2; exit 1'


def test_squeue_answers_where_accounting_is_disabled_in_one_call_then_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    squeue = "printf '11|CANCELLED|2026-12-06T10:00:00\\n12|RUNNING|N/A\\n13|TIMEOUT|2026-12-06T11:00:00\\n'"
    log = fake_clients(tmp_path, monkeypatch, NO_ACCOUNTING, squeue)
    runs = [("a", "11"), ("b", "12"), ("c", "13"), ("d", "14")]
    ended = slurm_ended(runs)
    assert ended == {"a": SlurmEnd("CANCELLED", None, "2026-12-06T10:00:00"),
                     "c": SlurmEnd("TIMEOUT", None, "2026-12-06T11:00:00")}  # fmt: skip
    assert (ended["a"].status, ended["c"].status) == ("cancelled", "timed out")
    calls = log.read_text().splitlines()
    assert calls == ["sacct -j 11,12,13,14 -X -n -P -o JobID,State,ExitCode,End",
                     "squeue -h --states=all -j 11,12,13,14 -o %i|%T|%e"]  # fmt: skip
    assert slurm_ended(runs) == ended and len(log.read_text().splitlines()) == 2  # cached: SLURM not asked again
    monkeypatch.setattr(slurm_states, "CACHE_S", 0.0)
    slurm_ended(runs)
    assert len(log.read_text().splitlines()) == 4


def test_accounting_is_asked_first_and_squeue_only_for_the_jobs_it_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sacct = "printf '21|CANCELLED by 1000|0:15|2026-12-06T10:00:00\\n22|OUT_OF_MEMORY|0:125|2026-12-06T10:05:00\\n" \
            "23|RUNNING|0:0|Unknown\\n'"  # fmt: skip
    squeue = "printf '24|NODE_FAIL|2026-12-06T12:00:00\\n'"
    log = fake_clients(tmp_path, monkeypatch, sacct, squeue)
    ended = slurm_ended([("a", "21"), ("b", "22"), ("c", "23"), ("d", "24")])
    assert ended == {"a": SlurmEnd("CANCELLED", "0:15", "2026-12-06T10:00:00"),
                     "b": SlurmEnd("OUT_OF_MEMORY", "0:125", "2026-12-06T10:05:00"),
                     "d": SlurmEnd("NODE_FAIL", None, "2026-12-06T12:00:00")}  # fmt: skip
    assert [e.status for e in ended.values()] == ["cancelled", "failed", "failed"]
    assert log.read_text().splitlines()[1] == "squeue -h --states=all -j 24 -o %i|%T|%e"


def test_no_slurm_or_a_slurm_that_does_not_answer_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct, no squeue
    assert slurm_ended([("a", "11")]) == {}
    clear_cache()
    fake_clients(tmp_path, monkeypatch, "sleep 30", "sleep 30")
    monkeypatch.setattr(slurm_states, "TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert slurm_ended([("a", "11")]) == {}
    assert time.monotonic() - started < 5
    # squeue refuses a list of jobs it does not know at all (they ended long ago, or belong to another cluster)
    clear_cache()
    fake_clients(tmp_path / "x", monkeypatch, NO_ACCOUNTING, 'echo "Invalid job id specified" >&2; exit 1')
    assert slurm_ended([("a", "11")]) == {}


def test_slurms_word_replaces_only_an_unfinished_status() -> None:
    cancelled, done = SlurmEnd("CANCELLED"), SlurmEnd("COMPLETED")
    assert [shown_status(s, cancelled) for s in ("queued", "running", "lost")] == ["cancelled"] * 3
    assert [shown_status(s, cancelled) for s in ("succeeded", "failed", "interrupted")] == [
        "succeeded", "failed", "interrupted"]  # fmt: skip
    assert shown_status("running", None) == "running"
    assert shown_status("running", done) == "lost"  # the job ended, the run never recorded its end


# --- the real single-node SLURM ---------------------------------------------------------------------------------

JOB = {
    "model": {"model_name": "eca_resnet18"},
    "data": {"class_path": "ecaplatform.datamodules.DigitsDataModule", "init_args": {"batch_size": 90}},
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
    "job": {"name": "held", "launcher": "slurm", "wandb_mode": "disabled",
            "resources": {"tasks_per_node": 1, "cpus_per_task": 1, "mem": "1G"}},
}  # fmt: skip


def _squeue_state(cluster: SlurmCluster, job: str) -> str:
    return subprocess.run(["squeue", "-h", "--states=all", "-j", job, "-o", "%T"], capture_output=True, text=True,
                          env=cluster.env).stdout.strip()  # fmt: skip


def _runs_listing(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    """`eca runs` (SLURM asked afresh): run id -> its row."""
    clear_cache()
    capsys.readouterr()
    assert eca(["runs", *args]) == 0
    return {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_eca_runs_shows_jobs_slurm_cancelled_queued_or_running_and_one_over_its_time_limit(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.chdir(tmp_path)

    def sbatch(*options: str) -> str:
        command = ["sbatch", "--parsable", f"--output={tmp_path}/%j.out", *options, "--wrap", "sleep 600"]
        return subprocess.run(command, capture_output=True, text=True, env=slurm_cluster.env,
                              check=True).stdout.strip().split(";")[0]  # fmt: skip

    # Over its time limit (1 min; slurmctld looks every 30 s): started first, checked last.
    over_time, running = sbatch("--time=0:01", "-J", "over-time"), sbatch("-J", "running")
    # Runs whose processes never got to record an end: running as SIGKILL left them (their jobs sleep instead).
    for run_id, job in (("over-time", over_time), ("killed", running)):
        monkeypatch.setenv("SLURM_JOB_ID", job)
        status = RunStatus(run_id)
        status.start(job_name=run_id, command="fit", model_name="eca_resnet18")
        status.stop_heartbeat()
    monkeypatch.delenv("SLURM_JOB_ID")
    # Queued through `eca submit`, held (SBATCH_HOLD: as if waiting for resources), then cancelled before it ran.
    job_file = tmp_path / "held.yaml"
    job_file.write_text(yaml.safe_dump(JOB))
    monkeypatch.setenv("SBATCH_HOLD", "1")
    assert eca(["submit", str(job_file), "--log-dir", str(tmp_path / "logs")]) == 0
    held, held_run = capsys.readouterr().out.split("submitted SLURM job ")[1].split(" as run ")
    held_run = held_run.split()[0]
    listing = _runs_listing(capsys)
    assert "queued" in listing[held_run].split() and "running" in listing["killed"].split(), listing
    wait_for(lambda: _squeue_state(slurm_cluster, running) == "RUNNING", "the running job started", timeout=60)

    subprocess.run(["scancel", held, running], env=slurm_cluster.env, check=True)
    wait_for(lambda: _squeue_state(slurm_cluster, running) == "CANCELLED", "the running job cancelled", timeout=60)
    listing = _runs_listing(capsys)
    assert "cancelled" in listing[held_run].split() and f"{held} (CANCELLED)" in listing[held_run], listing
    assert "cancelled" in listing["killed"].split() and f"{running} (CANCELLED)" in listing["killed"], listing
    assert set(_runs_listing(capsys, "--status", "cancelled")) == {held_run, "killed"}
    assert eca(["runs", "--show", "killed"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["slurm_state"]["state"]) == ("cancelled", "CANCELLED")
    assert "over-time" in _runs_listing(capsys, "--status", "running")

    wait_for(lambda: _squeue_state(slurm_cluster, over_time) == "TIMEOUT", "the job over its limit", timeout=180)
    assert set(_runs_listing(capsys, "--status", "timed out")) == {"over-time"}
    assert "over-time" not in _runs_listing(capsys, "--status", "running")
