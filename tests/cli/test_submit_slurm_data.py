"""A SLURM job whose data the submitting machine does not see (it sits on the compute nodes' disks): `eca submit`
checks what it can (job file, config, model, claim), defers the checks that need the data to the job's first step
on the node, where a failure is one line in the job's log and the run recorded failed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecaplatform.cli.main import main as eca
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Run
from ecaplatform.training.run import RunStatus
from tests.image_folders import make_imagenet_folder
from tests.services import SlurmCluster, wait_for


def _job(tmp_path: Path, root: Path, **edits: Any) -> Path:
    config: dict[str, Any] = {
        "model": {"model_name": "eca_resnet18"},
        "data": {"class_path": "ecaplatform.datamodules.ImageNetDataModule",
                 "init_args": {"root": str(root), "batch_size": 6, "image_size": 16, "num_workers": 0}},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "job": {"name": "node-data", "launcher": "slurm", "wandb_mode": "disabled",
                "resources": {"tasks_per_node": 1, "cpus_per_task": 1, "mem": "2G"}},
    }  # fmt: skip
    for section, values in edits.items():
        config[section].update(values)
    path = tmp_path / f"{config['job']['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _runs() -> list[Run]:
    with session_scope(writer_engine()) as session:
        return list(session.query(Run))


@pytest.fixture
def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "4242"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_slurm_job_whose_data_is_not_here_is_submitted_with_the_data_checks_as_its_first_step(
    tmp_path: Path, fake_sbatch: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "on-the-nodes" / "imagenet"
    path = _job(tmp_path, missing)
    assert eca(["submit", str(path), "--log-dir", "logs"]) == 0
    captured = capsys.readouterr()
    assert f"data root {missing} does not exist" in captured.err and "checked on the node" in captured.err
    [run] = _runs()
    assert (run.status, run.slurm_job_id, run.model_name, run.config["model"]["num_classes"]) == (
        "queued", "4242", "eca_resnet18", None)  # fmt: skip
    script = next((tmp_path / "logs").glob("*.sbatch")).read_text().splitlines()
    first, srun = script[-2:]
    assert first.endswith(f" -m ecaplatform submit --node-check --command fit {path.resolve()}"), script
    assert srun.startswith("srun "), script


@pytest.mark.parametrize(
    ("edit", "message"),
    [({"model": {"model_name": "eca_resnet51"}}, "unknown model 'eca_resnet51'"),
     ({"job": {"claim": "eca_resnet18-imagenet-top3", "launcher": "slurm"}}, "is not a claim id"),
     ({"trainer": {"devices": 2}}, "trainer.devices is 2 but SLURM would start 1 task"),
     ({"job": {"launcher": "local"}}, "does not exist")],  # a local job's data must be here
)  # fmt: skip
def test_what_needs_no_data_is_still_checked_before_submitting(
    tmp_path: Path, fake_sbatch: None, capsys: pytest.CaptureFixture[str], edit: dict[str, Any], message: str
) -> None:
    path = _job(tmp_path, tmp_path / "missing", **edit)
    assert eca(["submit", str(path), "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was submitted" in err, err
    assert _runs() == []


def test_the_first_step_on_a_node_without_the_data_records_the_run_failed_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing"
    path = _job(tmp_path, missing)
    RunStatus("RUN7").queued(job_name="node-data", command="fit", model_name="eca_resnet18")
    monkeypatch.setenv("ECA_RUN_ID", "RUN7")
    assert eca(["submit", "--node-check", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data root {missing} does not exist" in err[0] and "run RUN7 recorded failed" in err[0]
    [run] = _runs()
    assert run.status == "failed" and f"data root {missing} does not exist" in run.error
    # Where the data is, the step passes and leaves the run to the job.
    RunStatus("RUN8").queued(job_name="node-data", command="fit", model_name="eca_resnet18")
    monkeypatch.setenv("ECA_RUN_ID", "RUN8")
    make_imagenet_folder(missing, classes=3, train_per_class=2, val_per_class=2, size=16)
    assert eca(["submit", "--node-check", str(path)]) == 0
    assert {r.id: r.status for r in _runs()}["RUN8"] == "queued"


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(500)
def test_on_a_real_slurm_the_job_fails_on_its_node_or_runs_once_the_data_is_there(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"

    def submit(root: Path, name: str) -> tuple[str, str]:
        path = _job(tmp_path, root, job={"name": name}, trainer={"fast_dev_run": True})
        assert eca(["submit", str(path), "--log-dir", str(logs)]) == 0
        slurm_id, run_id = capsys.readouterr().out.split("submitted SLURM job ")[1].split(" as run ")
        return slurm_id, run_id.split()[0]

    def status(run_id: str) -> str:
        return {r.id: r.status for r in _runs()}[run_id]

    # Never there: the job's first step fails on the node.
    missing = tmp_path / "never"
    failing_job, failing = submit(missing, "no-data")
    # Made on the node only after submitting (held meanwhile, as a job waiting for its node): the job runs.
    appears = tmp_path / "node-disk" / "imagenet"
    monkeypatch.setenv("SBATCH_HOLD", "1")
    held_job, held = submit(appears, "data-later")
    make_imagenet_folder(appears, classes=3, train_per_class=2, val_per_class=2, size=16)
    subprocess.run(["scontrol", "release", held_job], env=slurm_cluster.env, check=True)

    def log_of(name: str, job: str) -> str:
        path = logs / f"{name}-{job}.out"
        return path.read_text() if path.exists() else f"no {path}"

    wait_for(lambda: status(failing) == "failed", "the job without data failed", timeout=240, poll=2,
             diagnostics=lambda: log_of("no-data", failing_job)[-3000:])  # fmt: skip
    log = log_of("no-data", failing_job)
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and f"data root {missing} does not exist" in lines[0], log
    [run] = [r for r in _runs() if r.id == failing]
    assert "data root" in run.error and run.slurm_job_id == failing_job

    def finished() -> bool:
        return status(held) in ("succeeded", "failed")

    wait_for(finished, "the job whose data appeared", timeout=300, poll=2,
             diagnostics=lambda: log_of("data-later", held_job)[-3000:])  # fmt: skip
    assert status(held) == "succeeded", log_of("data-later", held_job)[-3000:]
