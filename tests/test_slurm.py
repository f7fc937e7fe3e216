"""A real single-node SLURM runs a job submitted with `eca submit` as 2 DDP tasks on the CPU (gloo), and the store
holds exactly one run for it: its SLURM job id, status succeeded, world size 2, the full val split counted once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from services import SlurmCluster, slurm_cluster  # noqa: F401
from sqlalchemy import select

from ecaplatform.cli import main as eca
from ecaplatform.tracking.schema import Result, Run
from ecaplatform.tracking.store import session_scope, writer_engine

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_JOB = REPO_ROOT / "jobs" / "demo_cpu.yaml"
FINISHED = ("succeeded", "failed", "interrupted")


def _ddp_job(tmp_path: Path) -> Path:
    """The CPU demo, cut down to a few steps and run as 2 SLURM tasks = 2 DDP ranks."""
    if not DEMO_JOB.is_file():
        pytest.fail(f"{DEMO_JOB} is missing: the SLURM test builds on the CPU demo job")
    config = yaml.safe_load(DEMO_JOB.read_text())
    trainer = config.setdefault("trainer", {})
    trainer.update(accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", max_epochs=1, limit_train_batches=3,
                   default_root_dir=str(tmp_path / "lightning"), enable_progress_bar=False)  # fmt: skip
    trainer.pop("max_steps", None)
    config["job"] = {
        "name": "slurm-ddp",
        "launcher": "slurm",
        "wandb_mode": "offline",
        "resources": {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 2, "cpus_per_task": 1, "mem": "3G",
                      "time": "00:10:00"},  # fmt: skip
    }
    path = tmp_path / "slurm_ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_for_run(cluster: SlurmCluster, timeout: float = 240) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(writer_engine()) as session:
            runs = list(session.scalars(select(Run)))
        if runs and runs[0].status in FINISHED:
            return runs[0]
        time.sleep(2)
    queue = subprocess.run(["squeue"], capture_output=True, text=True, env=cluster.env).stdout
    pytest.fail(f"the SLURM job did not finish in {timeout}s\n{queue}\n{cluster.log('slurmctld.log')[-3000:]}")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_submitted_job_runs_as_two_ddp_tasks_and_is_recorded_once(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.delenv("ECA_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    assert eca(["submit", str(_ddp_job(tmp_path)), "--log-dir", str(logs)]) == 0
    out = capsys.readouterr().out
    slurm_id = out.split("submitted SLURM job ")[1].split()[0]

    run = _wait_for_run(slurm_cluster)
    log = "\n".join(path.read_text() for path in logs.glob("*.out"))
    assert run.status == "succeeded", f"{run.error}\n{log[-4000:]}"
    with session_scope(writer_engine()) as session:
        runs = list(session.scalars(select(Run)))
        results = list(session.scalars(select(Result)))
    assert len(runs) == 1, "both ranks and the submission must share one record"
    assert (run.slurm_job_id, run.world_size, run.num_nodes, run.command) == (slurm_id, 2, 1, "fit")
    assert run.config and run.config_hash and run.wandb_mode == "offline"
    [result] = results
    # Two ranks, and still every val sample counted exactly once.
    assert result.samples_evaluated == result.fingerprint["num_samples"] > 0
    assert "2 processes" in log or "MEMBER: 2/2" in log, log[-3000:]
