"""`eca submit`: job files are checked before anything is submitted; the sbatch script asks for what the job says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sqlalchemy import func, select

from ecaplatform.cli.main import main as eca
from ecaplatform.cli.submit import Job, JobFileError, check_submission, load_job, sbatch_script, submit_slurm
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Run
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder

BASE: dict[str, Any] = {
    "seed_everything": 0,
    "model": {"model_name": "eca_resnet50"},
    "data": {"class_path": "ecaplatform.datamodules.ImageNetDataModule", "init_args": {"root": "DATA"}},
    "trainer": {"max_epochs": 100, "devices": 4, "num_nodes": 2, "accelerator": "gpu"},
    "job": {
        "name": "eca-r50",
        "claim": "eca_resnet50-imagenet-top1",
        "launcher": "slurm",
        "resources": {"nodes": 2, "gpus_per_node": 4, "cpus_per_task": 8, "mem": "64G", "time": "2-00:00:00",
                      "partition": "gpu", "account": "proj42"},  # fmt: skip
    },
}


def tiny_imagenet(tmp_path: Path) -> Path:
    return make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=1, val_per_class=1, size=16)


def _write(tmp_path: Path, edit: Any = None) -> Path:
    config = yaml.safe_load(yaml.safe_dump(BASE).replace("DATA", str(tiny_imagenet(tmp_path))))
    if edit:
        edit(config)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `sbatch` on PATH that records its call and answers like `sbatch --parsable`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sbatch-called"
    script = bin_dir / "sbatch"
    inherited = "env | grep -E '^(SLURM_|WANDB_SERVICE|ECA_DB_URL)'"
    script.write_text(f'#!/bin/sh\necho "$@" > {marker}\n{inherited} >> {marker}\necho "4242;cluster"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


def test_sbatch_script_asks_for_the_jobs_resources(tmp_path: Path) -> None:
    job = load_job(_write(tmp_path))
    check_submission(job)
    script = sbatch_script(job, "fit", "RUN1", tmp_path / "logs", tmp_path)
    for directive in [
        "--job-name=eca-r50", "--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-task=8",
        "--mem=64G", "--time=2-00:00:00", "--partition=gpu", "--account=proj42", "--signal=SIGUSR1@90",
        "--requeue", f"--output={tmp_path / 'logs'}/eca-r50-%j.out",
    ]:  # fmt: skip
        assert f"#SBATCH {directive}\n" in script
    assert "export ECA_RUN_ID=RUN1\n" in script
    assert f" -m ecaplatform fit --config {tmp_path / 'job.yaml'}\n" in script
    assert script.splitlines()[-1].startswith("srun ")


def test_cpu_job_runs_tasks_per_node_and_asks_for_no_gpu(tmp_path: Path) -> None:
    def cpu(config: dict[str, Any]) -> None:
        config["job"]["resources"] = {"gpus_per_node": 0, "tasks_per_node": 2}
        config["trainer"].update(devices=2, num_nodes=1, accelerator="cpu")

    job = load_job(_write(tmp_path, cpu))
    check_submission(job)
    script = sbatch_script(job, "validate", "RUN2", tmp_path, tmp_path)
    assert "#SBATCH --ntasks-per-node=2\n" in script and "--gres" not in script and "--partition" not in script
    assert " validate --config " in script


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["job"].update(resourcs={"nodes": 2}), "does not accept option 'job.resourcs"),
        (lambda c: c["job"]["resources"].update(gpus=4), "does not accept option 'job.resources.gpus'"),
        (lambda c: c["job"]["resources"].update(nodes="two"), 'Parser key "job.resources.nodes"'),
        (lambda c: c["job"].update(launcher="pbs"), 'Parser key "job.launcher"'),
        (lambda c: c["job"].update(claim="eca_resnet50-imagenet-top3"), "job.claim: 'eca_resnet50-imagenet-top3'"),
        # Run here, a job needs its data here (a SLURM job's data may be on its nodes: test_submit_slurm_data.py).
        (lambda c: (c["data"]["init_args"].update(root="/no/such/imagenet"), c["job"].update(launcher="local")),
         "data root /no/such/imagenet does not"),  # fmt: skip
        (lambda c: c["trainer"].update(devices=2), "trainer.devices is 2 but SLURM would start 4 task(s)"),
        (lambda c: c["trainer"].update(num_nodes=1), "trainer.num_nodes is 1 but job.resources.nodes is 2"),
    ],
)
def test_bad_job_files_fail_before_anything_is_submitted(
    tmp_path: Path, fake_sbatch: Path, capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    path = _write(tmp_path, edit)
    assert eca(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was submitted" in err
    assert not fake_sbatch.exists()
    with session_scope(writer_engine()) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_missing_or_unparsable_job_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert eca(["submit", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such job file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(JobFileError, match="not valid YAML"):
        load_job(bad)
    assert eca(["submit", str(bad)]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err


def test_slurm_submission_records_a_queued_run_with_its_job_id(
    tmp_path: Path, fake_sbatch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "999")  # as if submitted from inside another allocation
    monkeypatch.setenv("SLURM_NTASKS", "8")
    # The submitter's own W&B service (set by any wandb.init in this process) must not be the job's.
    monkeypatch.setenv("WANDB_SERVICE", "2-12345-unix-/tmp/wandb-service.sock")
    job = load_job(_write(tmp_path))
    assert submit_slurm(job, "fit", "RUN3", tmp_path / "logs") == "4242"
    call = fake_sbatch.read_text()
    assert call.startswith("--parsable ") and "SLURM_JOB_ID" not in call and "SLURM_NTASKS" not in call
    assert "WANDB_SERVICE" not in call
    assert (tmp_path / "logs" / "eca-r50-RUN3.sbatch").is_file()
    with session_scope(writer_engine()) as session:
        run = session.get(Run, "RUN3")
        assert (run.status, run.slurm_job_id, run.claim_id, run.model_name) == (
            "queued", "4242", "eca_resnet50-imagenet-top1", "eca_resnet50")  # fmt: skip


# --- end to end through the real LightningCLI (child processes) -------------------------------------------------

TINY_JOB: dict[str, Any] = {
    "seed_everything": 0,
    "model": {"model_name": "eca_resnet18", "optimizer": {"lr": 0.05}},
    "data": {"class_path": "ecaplatform.datamodules.DigitsDataModule",
             "init_args": {"batch_size": 90, "image_size": 16}},  # fmt: skip
    "trainer": {"max_epochs": 1, "limit_train_batches": 2, "accelerator": "cpu", "devices": 1,
                "enable_progress_bar": False, "enable_model_summary": False},  # fmt: skip
    "job": {"name": "tiny-local", "claim": "eca_resnet18-imagenet-top1"},
}


FAULTS = [
    (lambda c: c["model"].update(model_name="eca_resnet51"), "unknown model 'eca_resnet51'"),
    (lambda c: c["model"].update(model_kwargs={"k_size": 4}), "must be a positive odd integer (1, 3, 5, ...), got 4"),
    (lambda c: c["model"].update(model_kwargs={"k_size": [3, 5]}), "needs 4 kernel sizes, one per stage"),
    (lambda c: c["model"]["optimizer"].update(lr=-1), 'optimizer.lr": Not of type PositiveFloat: -1 does not conform'),
    (lambda c: c["model"]["optimizer"].update(lr=0), 'optimizer.lr": Not of type PositiveFloat: 0 does not conform'),
    (lambda c: c["data"]["init_args"].update(batch_size=0), 'batch_size": Not of type PositiveInt: 0 does not conform'),
    (lambda c: c["trainer"].update(max_epoch=1), "does not accept option 'trainer.max_epoch'"),
    (lambda c: c["model"].update(learning_rate=0.1), "does not accept option 'model.learning_rate'"),
    (lambda c: c["job"].update(gpus=1), "does not accept option 'job.gpus'"),
    (lambda c: c["job"].update(claim="eca_resnet18-imagenet-top3"), "job.claim: 'eca_resnet18-imagenet-top3' is not"),
    (lambda c: c["model"]["optimizer"].update(lr="fast"), 'Parser key "model.optimizer.lr"'),
    (lambda c: c["trainer"].update(max_epochs="many"), 'Parser key "trainer.max_epochs"'),
]


@pytest.mark.parametrize(("edit", "message"), FAULTS)
def test_dry_run_rejects_what_fit_rejects_in_one_line(
    tmp_path: Path, fake_sbatch: Path, capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    config = yaml.safe_load(yaml.safe_dump(TINY_JOB))
    edit(config)
    config["job"].update(launcher="slurm", resources={"tasks_per_node": 1})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    for argv in (["submit", str(path), "--dry-run"], ["submit", str(path)]):
        assert eca(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err  # one line, naming the fault
        assert err.startswith(f"eca submit: {path}: ") and err.endswith("nothing was submitted\n")
    assert not fake_sbatch.exists()
    # `eca fit` rejects the same job with the same words, before any training starts.
    assert eca(["fit", "--config", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("eca fit: error: ")


@pytest.mark.slow
def test_local_submit_records_the_run_then_a_verification_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ECA_RUN_ID", raising=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_JOB))

    assert eca(["submit", str(path)]) == 0
    run_id = capsys.readouterr().out.split("eca submit: run ")[1].split(":")[0]
    best = tmp_path / "runs" / "tiny-local" / run_id / "checkpoints" / "best.ckpt"  # the run's own folder
    assert eca(["submit", str(path), "--command", "validate", "--", "--ckpt_path", "best"]) == 0  # the newest run's

    with session_scope(writer_engine()) as session:
        runs = {run.command: run for run in session.scalars(select(Run))}
        assert set(runs) == {"fit", "validate"} and runs["fit"].id == run_id
        for run in runs.values():
            assert run.status == "succeeded" and run.claim_id == "eca_resnet18-imagenet-top1"
            assert run.model_name == "eca_resnet18" and run.dataset_name == "digits"
            [result] = run.results
            assert result.samples_evaluated == result.fingerprint["num_samples"] == 360
        fit, validate = runs["fit"], runs["validate"]
        assert {m.name for m in fit.metrics} >= {"train_loss", "val_top1", "val_top5", "val_loss"}
        assert fit.wandb_mode == "offline" and Path(fit.wandb_path).is_dir()
        # validate records the checkpoint it evaluated, and scores it exactly as the fit's final validation did
        assert validate.checkpoint_path == str(best) and validate.checkpoint_sha256 == fit.checkpoint_sha256
        assert validate.results[0].top1 == pytest.approx(fit.results[0].top1)


@pytest.mark.slow
def test_a_child_that_fails_before_recording_leaves_a_failed_run_and_the_hint_says_what_was_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check builds no Trainer, so a Trainer setting only the child refuses (as a GPU recipe on a machine
    without one) fails it before its run is recorded: `eca submit` records the run failed, with what it knows."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_JOB))
    assert eca(["submit", str(path), "--", "--trainer.strategy", "no_such_strategy"]) != 0
    out = capsys.readouterr().out
    run_id = out.split("eca submit: run ")[1].split(":")[0]
    assert f"`eca runs --show {run_id}` shows what was recorded" in out, out
    with session_scope(writer_engine()) as session:
        run = session.get(Run, run_id)
        assert run is not None and (run.status, run.job_name, run.command, run.model_name, run.claim_id) == (
            "failed", "tiny-local", "fit", "eca_resnet18", "eca_resnet18-imagenet-top1")  # fmt: skip
        assert "exited with code 1 before it recorded the run" in run.error and run.ended_at is not None
    # A store nobody can write: neither the child nor eca submit records anything, and the hint says so.
    monkeypatch.setenv("ECA_DB_URL", "sqlite:////proc/no-such-folder/runs.db")
    assert eca(["submit", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].endswith("exited with 1; nothing was recorded"), captured.out
    assert "could not record how run" in captured.err and "cannot create the folder /proc/no-such" in captured.err


def _tiny_slurm_job(tmp_path: Path) -> Path:
    config = yaml.safe_load(yaml.safe_dump(TINY_JOB))
    config["job"].update(name="tiny-slurm", launcher="slurm", resources={"tasks_per_node": 1})
    path = tmp_path / "tiny-slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_launcher_local_runs_a_slurm_job_here_and_the_run_records_local(
    tmp_path: Path, fake_sbatch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The smoke test of a SLURM recipe: `--launcher local` runs it in a child process here, never sbatch, and the
    run's recorded config says local (what ran), with the options after `--` passed on as before."""
    monkeypatch.chdir(tmp_path)
    path = _tiny_slurm_job(tmp_path)
    assert eca(["submit", str(path), "--launcher", "local", "--", "--trainer.fast_dev_run=true"]) == 0
    captured = capsys.readouterr()
    assert not fake_sbatch.exists()
    assert f"job.launcher is local for this run ({path} says slurm)" in captured.err
    started = captured.out.split("eca submit: run ")[1].splitlines()[0]
    run_id, shown = started.split(": ", 1)
    assert shown.endswith("--trainer.fast_dev_run=true --job.launcher local"), shown
    with session_scope(writer_engine()) as session:
        [run] = session.scalars(select(Run)).all()
        assert (run.id, run.status, run.slurm_job_id, run.job_name) == (run_id, "succeeded", None, "tiny-slurm")
        assert run.config["job"]["launcher"] == "local" and run.config["trainer"]["fast_dev_run"] is True


def test_launcher_overrides_the_jobs_launcher_both_ways_and_is_recorded(
    tmp_path: Path, fake_sbatch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slurm_job = _tiny_slurm_job(tmp_path)
    # A slurm job run here: the local command, not a script; `--launcher` wins over a `--job.launcher` after `--`.
    assert eca(["submit", str(slurm_job), "--launcher", "local", "--dry-run", "--", "--job.launcher", "slurm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ECA_RUN_ID=") and "#SBATCH" not in out
    assert out.rstrip().endswith(f"fit --config {slurm_job} --job.launcher slurm --job.launcher local"), out

    # A local job sent to SLURM: the script's command and the queued run's config both say slurm.
    local_job = tmp_path / "tiny-local.yaml"
    local_job.write_text(yaml.safe_dump({**TINY_JOB, "job": {**TINY_JOB["job"], "resources": {"tasks_per_node": 1}}}))
    assert eca(["submit", str(local_job), "--launcher", "slurm", "--log-dir", str(tmp_path / "logs")]) == 0
    captured = capsys.readouterr()
    assert f"job.launcher is slurm for this run ({local_job} says local)" in captured.err
    assert "submitted SLURM job 4242" in captured.out and fake_sbatch.exists()
    [script] = (tmp_path / "logs").glob("*.sbatch")
    assert script.read_text().splitlines()[-1].endswith(f"--config {local_job.resolve()} --job.launcher slurm")
    with session_scope(writer_engine()) as session:
        [run] = session.scalars(select(Run)).all()
        assert (run.status, run.slurm_job_id, run.config["job"]["launcher"]) == ("queued", "4242", "slurm")

    # Saying what the job already says changes nothing and says nothing.
    assert eca(["submit", str(slurm_job), "--launcher", "slurm", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH" in captured.out and "for this run" not in captured.err


def test_an_unknown_launcher_is_refused_with_the_choices(
    tmp_path: Path, fake_sbatch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        eca(["submit", str(_tiny_slurm_job(tmp_path)), "--launcher", "pbs"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--launcher: invalid choice: 'pbs'" in err and "local" in err and "slurm" in err, err
    assert not fake_sbatch.exists()


def test_a_data_root_given_on_the_command_line_is_the_one_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda c: c["data"]["init_args"].update(root="/no/such/imagenet"))
    root = tmp_path / "imagenet"
    load_job(path, overrides=["--data.init_args.root", str(root)])
    load_job(path, overrides=[f"--data.root={root}"])
    with pytest.raises(JobFileError, match="data root /elsewhere does not exist"):
        load_job(_write(tmp_path), overrides=["--data.init_args.root", "/elsewhere"])


JOB_FILES = sorted(p for p in (REPO_ROOT / "jobs").rglob("*.yaml") if "recipes" not in p.parts)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecaplatform.datamodules.coco_shapes import make_coco_shapes

    return make_coco_shapes(tmp_path_factory.mktemp("coco"), train=4, val=2)


JOB_IDS = [str(p.relative_to(REPO_ROOT / "jobs").with_suffix("")) for p in JOB_FILES]


@pytest.mark.parametrize("path", JOB_FILES, ids=JOB_IDS)
def test_every_job_file_of_the_repository_passes_every_check(tmp_path: Path, path: Path, tiny_coco: Path) -> None:
    """Each job as `eca submit` reads it, with ImageNet replaced by a tiny folder of the same layout (so the parse
    gets past the data root to the SLURM checks); a verification job scores a (weights-only) checkpoint instead of
    the released file that is not here. Each SLURM job's check is seen to run: its sbatch script asks for one task
    per device, and the same job with one device more is refused."""
    demo = path.stem.startswith("demo_")  # the CPU demos bring their own data
    root = tiny_coco if path.parent.name == "coco" else tiny_imagenet(tmp_path)  # same layouts as ImageNet / COCO
    overrides = [] if demo else ["--data.init_args.root", str(root)]
    if path.parent.name == "coco" and not path.name.startswith("verify_"):
        overrides += ["--model.backbone_checkpoint", "null"]  # the ImageNet weights are not here (a warning says so)
    if path.name.startswith("verify_"):
        dummy = tmp_path / "dummy.ckpt"  # shaped like ours (the CLI refuses another model's or a foreign file)
        torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": {},
                    "hyper_parameters": {"model_name": path.stem.removeprefix("verify_"), "model_kwargs": None}},
                   dummy)  # fmt: skip
        overrides += ["--model.checkpoint", "null", "--ckpt_path", str(dummy)]
    job = load_job(path, overrides=overrides)
    check_submission(job)
    assert job.spec.name == path.stem
    model_name = job.config["model"]["model_name"]
    assert model_name in job.spec.name or demo  # the demos train eca_resnet18 (and its Faster R-CNN)
    assert job.spec.command == ("validate" if path.name.startswith("verify_") else "fit")

    assert job.spec.launcher == ("local" if demo else "slurm")
    if job.spec.launcher != "slurm":
        return
    trainer = job.config["trainer"]
    devices, nodes = int(trainer["devices"]), int(trainer.get("num_nodes") or 1)
    script = sbatch_script(job, job.spec.command, "RUN1", tmp_path / "logs", tmp_path)
    assert f"#SBATCH --nodes={nodes}\n" in script and f"#SBATCH --ntasks-per-node={devices}\n" in script
    more_devices = Job(job.path, job.spec, {**job.config, "trainer": {**trainer, "devices": devices + 1}})
    with pytest.raises(JobFileError, match=rf"trainer.devices is {devices + 1} but SLURM would start {devices} task"):
        check_submission(more_devices)
    more_nodes = Job(job.path, job.spec, {**job.config, "trainer": {**trainer, "num_nodes": nodes + 1}})
    with pytest.raises(JobFileError, match=rf"trainer.num_nodes is {nodes + 1} but job.resources.nodes is {nodes}"):
        check_submission(more_nodes)


# --- secrets: the store's password never lands in a script, a dry run or a log ------------------------------------

@pytest.mark.parametrize("secret_url", ["postgresql+psycopg://eca:s3cret-pw@db.example:5432/eca",
                                        "postgresql+psycopg://eca@db.example/eca?password=s3cret-pw"])
def test_the_store_password_is_never_in_the_sbatch_script_or_the_dry_run(
    tmp_path: Path, fake_sbatch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    secret_url: str,
) -> None:
    from ecaplatform.store import database as store

    path = _write(tmp_path)
    local_store = os.environ["ECA_DB_URL"]  # the queued record goes here; the job gets the URL as it was given
    monkeypatch.setattr(store.Store, "writer", lambda self: store.make_engine(local_store, readonly=False))
    store.ensure_schema(store.make_engine(local_store))
    monkeypatch.setenv("ECA_DB_URL", secret_url)

    assert eca(["submit", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "s3cret-pw" not in printed and "#SBATCH --nodes=2" in printed

    job = load_job(path)
    assert submit_slurm(job, "fit", "RUN5", tmp_path / "logs") == "4242"
    script = (tmp_path / "logs" / "eca-r50-RUN5.sbatch").read_text()
    assert "s3cret-pw" not in script and "srun " in script
    # The job reaches the store through the environment sbatch hands it (and keeps for a requeued job).
    environment = fake_sbatch.read_text()
    assert "--export=ALL" in environment.splitlines()[0]
    assert f"ECA_DB_URL={secret_url}" in environment


# --- identifiers that become paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", ".hidden", "x" * 65, "with space"])
def test_a_job_name_that_is_not_a_safe_folder_name_is_refused(
    tmp_path: Path, fake_sbatch: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = _write(tmp_path, lambda c: c["job"].update(name=name))
    assert eca(["submit", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "job.name" in err and repr(name) in err and err.count("\n") == 1, err
    assert not fake_sbatch.exists()
