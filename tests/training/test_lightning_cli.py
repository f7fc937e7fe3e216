"""`eca fit|validate|test`: configs with a job section, clear errors, checkpoints, resume, the CPU demo job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ecaplatform.training.lightning_cli import main
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder
from tests.training_helpers import DEMO, QUICK, released_style_checkpoint

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # runs/<job>/ folders land in the test's own directory

JOBS = REPO_ROOT / "jobs"


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# --- parsing -----------------------------------------------------------------------------------------------------


def printed_config(capsys: pytest.CaptureFixture, path: Path, command: str = "fit") -> dict:
    """What `eca <command> --config PATH --print_config` shows: the config as the run would use it."""
    capsys.readouterr()
    assert main([command, "--config", str(path), "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_shows_the_resolved_config_with_the_job(capsys: pytest.CaptureFixture) -> None:
    printed = printed_config(capsys, DEMO)
    assert printed["job"]["name"] == "demo_cpu"
    assert printed["model"]["model_name"] == "eca_resnet18"
    assert "num_classes" not in printed["model"]  # linked: it comes from the data module
    assert printed["data"]["class_path"] == "ecaplatform.datamodules.DigitsDataModule"
    assert printed["checkpoint"]["monitor"] == "val_top1" and printed["checkpoint"]["save_last"] is True


def test_a_job_file_extends_its_recipe_and_overrides_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    printed = printed_config(capsys, JOBS / "eca_resnet50.yaml")
    assert printed["extends"] is None  # the printed config is complete: it runs from any folder as it is
    assert (printed["job"]["name"], printed["job"]["resources"]["time"]) == ("eca_resnet50", "96:00:00")
    assert printed["job"]["resources"]["gpus_per_node"] == 4  # from the shared imagenet_4gpu recipe
    assert (printed["model"]["optimizer"]["lr"], printed["data"]["init_args"]["batch_size"]) == (0.1, 256)
    # A file of one's own on top of a repository job: only what it says changes.
    mine = write_config(tmp_path / "mine.yaml", {"extends": str(JOBS / "eca_resnet50.yaml"), "job": {"name": "mine"},
                                                 "model": {"optimizer": {"lr": 0.2}}})  # fmt: skip
    printed = printed_config(capsys, mine)
    assert (printed["model"]["optimizer"], printed["model"]["model_name"], printed["job"]["name"]) == (
        {"lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}, "eca_resnet50", "mine")  # fmt: skip
    assert printed["job"]["claim"] == "eca_resnet50-imagenet-top1" and printed["trainer"]["max_epochs"] == 100
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert printed_config(capsys, write_config(elsewhere / "printed.yaml", printed)) == printed


def test_an_extends_loop_or_a_missing_base_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_config(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write_config(tmp_path / "b.yaml", {"extends": "a.yaml"})
    assert main(["fit", "--config", str(tmp_path / "a.yaml")]) == 1
    assert "`extends:` loops back" in capsys.readouterr().err
    write_config(tmp_path / "c.yaml", {"extends": "gone.yaml"})
    assert main(["fit", "--config", str(tmp_path / "c.yaml")]) == 1
    assert "gone.yaml: no such config file" in capsys.readouterr().err


def test_unknown_job_key_is_rejected_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = yaml.safe_load(DEMO.read_text())
    config["job"]["gpu_count"] = 4
    code = main(["fit", "--config", str(write_config(tmp_path / "bad.yaml", config))])
    assert code == 2
    assert "gpu_count" in capsys.readouterr().err


def test_unknown_model_option_is_rejected_by_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", "--config", str(DEMO), "--model.learning_rate", "0.1"]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_unknown_model_name_says_which_exist(capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", "--config", str(DEMO), "--model.model_name", "eca_resnet51", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'eca_resnet51'" in err and "eca_resnet50" in err


def test_missing_data_root_names_the_path_and_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["fit", "--config", str(JOBS / "eca_resnet50.yaml"), "--data.root", str(tmp_path / "no_imagenet"),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
            "--trainer.precision", "32-true", "--model.model_name", "resnet18", "--job.wandb_mode", "disabled",
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"data root {tmp_path / 'no_imagenet'} does not exist" in err
    assert "<root>/train/<wnid>/*.JPEG" in err


def test_unknown_claim_is_rejected_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["fit", "--config", str(DEMO), "--job.claim", "eca_resnet51-imagenet-top1", *QUICK]
    assert main([*args, "--trainer.default_root_dir", str(tmp_path / "run")]) == 1
    assert "job.claim: 'eca_resnet51-imagenet-top1' is not a claim id" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_validate_refuses_random_weights(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--config", str(DEMO)]) == 1
    assert "refuses to evaluate randomly initialised weights" in capsys.readouterr().err
    assert main(["test", "--config", str(DEMO)]) == 1


def test_missing_ckpt_path_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--config", str(DEMO), "--ckpt_path", str(tmp_path / "gone.ckpt")]) == 1
    assert "gone.ckpt does not exist" in capsys.readouterr().err


def test_usage_for_other_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert main(["predict"]) == 2
    assert "fit,validate,test" in capsys.readouterr().err


# --- the job files -----------------------------------------------------------------------------------------------


def test_recipe_jobs_follow_the_paper(capsys: pytest.CaptureFixture) -> None:
    from ecaplatform.store.claims import claim_ids

    claims = set(claim_ids())
    expected = {"eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenet_v2",
                "resnet50", "se_resnet50", "mobilenet_v2"}  # fmt: skip
    for name in expected:
        config = printed_config(capsys, JOBS / f"{name}.yaml")
        model, data, trainer, job = config["model"], config["data"]["init_args"], config["trainer"], config["job"]
        assert model["model_name"] == name and config["data"]["class_path"].endswith("ImageNetDataModule")
        assert job["claim"] == f"{name}-imagenet-top1" and job["claim"] in claims
        assert job["launcher"] == "slurm" and job["resources"]["gpus_per_node"] == trainer["devices"]
        optimizer, schedule = model["optimizer"], model["schedule"]
        assert optimizer["momentum"] == 0.9 and model["label_smoothing"] == 0.0 and schedule["warmup_epochs"] == 0
        if "mobilenet" in name:
            assert (optimizer["lr"], optimizer["weight_decay"], data["batch_size"]) == (0.045, 4e-5, 96)
            assert (schedule["kind"], schedule["exp_gamma"], trainer["max_epochs"]) == ("exponential", 0.98, 400)
        else:
            assert (optimizer["lr"], optimizer["weight_decay"], data["batch_size"]) == (0.1, 1e-4, 256)
            assert (schedule["kind"], schedule["step_size"], schedule["step_gamma"]) == ("step", 30, 0.1)
            assert trainer["max_epochs"] == 100
    released = ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenet_v2"]
    for name in released:
        config = printed_config(capsys, JOBS / f"verify_{name}.yaml", "validate")
        assert config["model"]["model_name"] == name and config["model"]["checkpoint"]
        assert config["job"]["command"] == "validate" and config["trainer"]["precision"] == "32-true"
        assert config["job"]["claim"] == f"{name}-imagenet-top1" and config["job"]["claim"] in claims


# --- running -----------------------------------------------------------------------------------------------------


def test_verify_command_scores_a_released_checkpoint_and_names_a_corrupt_image(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=1, val_per_class=3, size=24)
    weights = released_style_checkpoint(tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18", num_classes=3)
    args = ["validate", "--config", str(JOBS / "verify_eca_resnet18.yaml"), "--model.checkpoint", str(weights),
            "--data.root", str(root), "--data.init_args.image_size", "16",
            "--data.init_args.num_workers", "1", "--trainer.accelerator", "cpu", "--job.wandb_mode", "disabled",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    assert "val_samples" in capsys.readouterr().out

    bad = sorted((root / "val" / "n00000002").iterdir())[0]
    bad.write_bytes(b"GIF89a not really")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"cannot decode image {bad}" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_job_trains_saves_checkpoints_and_validates_best(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = ["--trainer.default_root_dir", str(tmp_path / "demo")]
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", *QUICK, *root]) == 0
    out = capsys.readouterr().out
    [checkpoints] = (tmp_path / "demo").glob("*/checkpoints")  # one run, one folder of its own
    assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
    assert f"checkpoints: {checkpoints}" in out and "best.ckpt (val_top1" in out and "logs (CSVLogger)" in out
    assert main(["validate", "--config", str(DEMO), "--ckpt_path", "best", *QUICK, *root]) == 0
    assert "val_top1" in capsys.readouterr().out
    # A checkpoint saved with the flat optimizer settings of an older ecaplatform: refused in one line saying what
    # scores it, and that works.
    saved = torch.load(checkpoints / "best.ckpt", weights_only=True)
    saved["hyper_parameters"] = {**saved["hyper_parameters"], "lr": 0.1, "lr_schedule": "cosine"}
    saved["hyper_parameters"].pop("optimizer")
    torch.save(saved, old := tmp_path / "old.ckpt")
    assert main(["validate", "--config", str(DEMO), "--ckpt_path", str(old), *QUICK, *root]) == 1
    assert f"--model.checkpoint {old} instead" in capsys.readouterr().err
    assert main(["validate", "--config", str(DEMO), "--model.checkpoint", str(old), *QUICK, *root]) == 0


def test_fit_without_checkpointing_runs_and_saves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["fit", "--config", str(DEMO), "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
            "--trainer.default_root_dir", str(tmp_path / "nockpt"), *QUICK]  # fmt: skip
    assert main(args) == 0
    assert not (tmp_path / "nockpt" / "checkpoints").exists()
    assert "logs (CSVLogger)" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_resumes_from_last_checkpoint_at_the_right_epoch_and_step(tmp_path: Path) -> None:
    root = ["--trainer.default_root_dir", str(tmp_path / "resume")]
    # "Stopped" after one epoch of two batches...
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", *QUICK, *root]) == 0
    [last] = (tmp_path / "resume").glob("*/checkpoints/last.ckpt")
    first = torch.load(last, weights_only=True, map_location="cpu")
    assert (first["epoch"], first["global_step"]) == (0, 2)
    # ...resumed with the job's longer schedule: it continues at epoch 1 / step 2 and does not redo epoch 0.
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "2", "--ckpt_path", "last", *QUICK, *root]) == 0
    second = torch.load(last, weights_only=True, map_location="cpu")
    assert second["global_step"] == 4
    assert second["lr_schedulers"][0]["last_epoch"] == 4  # the LR schedule resumed with it
    rows = (last.parents[1] / "csv" / "version_1" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    assert {(row["epoch"], row["step"]) for row in logged} == {("1", "3")}  # epoch 1 only, steps 2-3
    assert any(row["val_top1"] for row in logged) and any(row["train_loss"] for row in logged)


@pytest.mark.slow
def test_fit_logs_training_throughput(tmp_path: Path) -> None:
    root = tmp_path / "speed"
    args = ["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "22",
            "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1", "--data.init_args.image_size",
            "16", "--job.wandb_mode", "disabled", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(root)]  # fmt: skip
    assert main(args) == 0
    [metrics] = root.glob("*/csv/version_0/metrics.csv")
    rows = metrics.read_text().splitlines()
    header = rows[0].split(",")
    rates = [float(row.split(",")[header.index("train/device/samples_per_sec")]) for row in rows[1:]
             if row.split(",")[header.index("train/device/samples_per_sec")]]  # fmt: skip
    assert rates and all(rate > 0 for rate in rates)


@pytest.mark.slow
def test_console_script_dispatches_here(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ecaplatform", "validate", "--config", str(DEMO)],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "refuses to evaluate randomly initialised weights" in proc.stderr
