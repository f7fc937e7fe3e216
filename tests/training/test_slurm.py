"""A real single-node SLURM runs a job submitted with `eca submit` as 2 DDP tasks on the CPU (gloo). The job is
preempted once (SLURM's requeue signal): Lightning checkpoints and requeues it, the requeued job resumes. The store
holds exactly one run for it all: its SLURM job id, status succeeded, world size 2, every epoch, one final result
counting the whole val split once."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from ecaplatform.cli.main import main as eca
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import EpochMetric, Result, Run
from tests.services import SlurmCluster, wait_for

FINISHED = ("succeeded", "failed")


# Enough epochs that the run is still going when the requeue signal, sent after epoch 0, arrives on a busy machine
# (with 3, a loaded CI machine once finished the run first).
EPOCHS = 8


def _ddp_job(tmp_path: Path) -> Path:
    """A few steps of ECA-ResNet-18 on digits (16 px), as 2 SLURM tasks = 2 DDP ranks on the CPU."""
    config = {
        "seed_everything": 0,
        "model": {"model_name": "eca_resnet18", "optimizer": {"lr": 0.05}},
        "data": {"class_path": "ecaplatform.datamodules.DigitsDataModule",
                 "init_args": {"batch_size": 90, "image_size": 16}},
        "trainer": {"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "ddp", "max_epochs": EPOCHS,
                    "limit_train_batches": 4, "enable_progress_bar": False, "enable_model_summary": False},
        "job": {
            "name": "slurm-ddp",
            "launcher": "slurm",
            "wandb_mode": "offline",
            "resources": {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 2, "cpus_per_task": 1, "mem": "3G",
                          "time": "00:10:00"},
        },
    }  # fmt: skip
    path = tmp_path / "slurm_ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _store_runs() -> list[Run]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Run)))


def _wait_until(predicate, what: str, cluster: SlurmCluster, timeout: float = 240, poll: float = 0.5):  # type: ignore[no-untyped-def]
    def diagnostics() -> str:
        queue = subprocess.run(["squeue"], capture_output=True, text=True, env=cluster.env).stdout
        job_logs = "\n".join(p.read_text()[-3000:] for p in Path.cwd().glob("logs/*.out"))
        return f"{queue}\n{job_logs}\n{cluster.log('slurmctld.log')[-1500:]}"

    return wait_for(predicate, what, timeout=timeout, poll=poll, diagnostics=diagnostics)


def _task_pid(slurm_id: str, rank: int) -> int:
    """The pid of the job's task `rank` (a process srun's slurmstepd started, with SLURM_PROCID=rank)."""
    wanted = {f"SLURM_JOB_ID={slurm_id}".encode(), f"SLURM_PROCID={rank}".encode(), b"SLURM_STEP_ID=0"}
    for proc in Path("/proc").iterdir():
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent_name = Path(f"/proc/{parent}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        if wanted <= environ and parent_name == "slurmstepd":
            return int(proc.name)
    pytest.fail(f"no task of rank {rank} in SLURM job {slurm_id}")


def _epochs_recorded() -> set[int]:
    with session_scope(writer_engine()) as session:
        return set(session.scalars(select(EpochMetric.epoch).where(EpochMetric.name == "val_top1")))


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(500)
def test_submitted_job_runs_as_two_ddp_tasks_survives_a_requeue_and_is_recorded_once(
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.delenv("ECA_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    assert eca(["submit", str(_ddp_job(tmp_path)), "--log-dir", str(logs)]) == 0
    slurm_id = capsys.readouterr().out.split("submitted SLURM job ")[1].split()[0]
    [queued] = _store_runs()
    assert (queued.status, queued.slurm_job_id) == ("queued", slurm_id)

    # Preempt it after its first epoch: SLURM's requeue signal, as before a time limit or a preemption. SLURM
    # signals each task on its own, so the ranks hear it at different steps; here, the extreme: rank 1 alone.
    # Rank 0 must still checkpoint with it and requeue (Lightning's own handler deadlocked the ranks instead).
    _wait_until(lambda: 0 in _epochs_recorded(), "the first epoch's metrics", slurm_cluster)
    os.kill(_task_pid(slurm_id, rank=1), signal.SIGUSR1)
    interrupted = _wait_until(lambda: [r for r in _store_runs() if r.status == "interrupted"], "interrupted",
                              slurm_cluster)  # fmt: skip
    assert "requeued by SLURM" in interrupted[0].error
    # SLURM may hold a requeued job back for a while (BeginTime); let it start again now.
    def job_state() -> str:
        squeue = ["squeue", "-h", "-o", "%T"]
        return subprocess.run(squeue, capture_output=True, text=True, env=slurm_cluster.env).stdout

    _wait_until(lambda: "PENDING" in job_state(), "the job back in the queue", slurm_cluster)
    update = ["scontrol", "update", f"jobid={slurm_id}", "BeginTime=now"]

    def released() -> bool:  # the requeued job waits no more (it may have been allowed to start already)
        if "PENDING" not in job_state():
            return True
        return subprocess.run(update, capture_output=True, env=slurm_cluster.env).returncode == 0

    _wait_until(released, "the requeued job released", slurm_cluster)

    run = _wait_until(lambda: [r for r in _store_runs() if r.status in FINISHED], "the requeued job's end",
                      slurm_cluster, poll=2)[0]  # fmt: skip
    log = "\n".join(path.read_text() for path in logs.glob("*.out"))
    assert run.status == "succeeded", f"{run.error}\n{log[-4000:]}"
    with session_scope(writer_engine()) as session:
        runs = list(session.scalars(select(Run)))
        results = list(session.scalars(select(Result)))
    assert len(runs) == 1, "both ranks, the submission and the requeued job must share one record"
    assert (run.slurm_job_id, run.world_size, run.num_nodes, run.command) == (slurm_id, 2, 1, "fit")
    assert run.config and run.config_hash and run.wandb_mode == "offline" and run.error is None
    assert _epochs_recorded() == set(range(EPOCHS))
    assert "Starting with 2 processes" in log, log[-3000:]  # Lightning took both SLURM tasks as DDP ranks
    assert "Restored all states from the checkpoint" in log and "hpc_ckpt" in log  # the requeued job resumed
    [result] = results
    # Two ranks, and still every val sample counted exactly once.
    assert result.samples_evaluated == result.fingerprint["num_samples"] > 0
