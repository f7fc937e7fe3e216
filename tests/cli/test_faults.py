"""The fault catalogue: every bad input a user can hand the platform ends in ONE line that names the file or
setting and says what to do, a non-zero exit, and a store left as it was (here: never written at all)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from ecaplatform.cli.main import main as eca
from ecaplatform.models import create_model
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder
from tests.models.test_unreadable_checkpoints import KINDS as UNREADABLE_KINDS

DEMO = REPO_ROOT / "jobs" / "demo_cpu.yaml"
VERIFY = REPO_ROOT / "jobs" / "verify_eca_resnet18.yaml"
QUIET = ["--job.wandb_mode", "disabled", "--trainer.enable_progress_bar", "false"]


def store_path() -> Path:
    return Path(os.environ["ECA_DB_URL"].removeprefix("sqlite:///"))


def assert_one_line_refusal(capsys: pytest.CaptureFixture[str], code: int, command: str, *needles: str) -> str:
    """Exit non-zero; stderr ends in one line `eca <command>: ...` naming every needle (before it at most
    Lightning's own INFO lines, for a fault found once the Trainer exists); the store was not touched."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO: ")]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith(f"eca {command}: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    path = store_path()
    if path.exists():  # a refused command may have read it, never written a run
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "runs" in tables:
                assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    return lines[0]


def write_yaml(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is now (the capture of the running test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Lightning's log handlers keep the stderr of the test during which Lightning was imported (closed by now).
    import lightning.pytorch  # noqa: F401  (creates them)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                monkeypatch.setattr(handler, "stream", _CurrentStderr())


# --- job files ---------------------------------------------------------------------------------------------------

JOB_FILE_FAULTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing": (lambda d: d / "nope.yaml", ("nope.yaml", "no such")),
    "not YAML": (lambda d: write_yaml(d / "bad.yaml", "model: [unclosed\n"), ("bad.yaml", "not valid YAML")),
    "empty": (lambda d: write_yaml(d / "e.yaml", "# nothing yet\n"), ("e.yaml: the config file is empty; expected "
                                                                     "a mapping of sections (job:, model:",)),
    "a list": (lambda d: write_yaml(d / "l.yaml", ["fit"]), ("l.yaml: the config file holds a YAML list, not a "
                                                             "mapping",)),
    "a number": (lambda d: write_yaml(d / "n.yaml", "42\n"), ("n.yaml: the config file holds a YAML int",)),
    "extends an empty file": (lambda d: write_yaml(d / "j.yaml", {"extends": str(write_yaml(d / "b.yaml", ""))}),
                              ("b.yaml: the config file is empty",)),
    "extends a missing base": (lambda d: write_yaml(d / "j.yaml", {"extends": "base.yaml"}), ("base.yaml", "no such")),
    "extends itself": (lambda d: write_yaml(d / "j.yaml", {"extends": "j.yaml"}), ("j.yaml", "loops back")),
    "unknown key": (lambda d: write_yaml(d / "j.yaml", {"extends": str(DEMO), "model": {"learning_rate": 1}}),
                    ("model.learning_rate",)),
    "wrong type": (lambda d: write_yaml(d / "j.yaml", {"extends": str(DEMO), "trainer": {"max_epochs": "many"}}),
                   ("trainer.max_epochs", "many")),
    "out of range": (lambda d: write_yaml(d / "j.yaml", {"extends": str(DEMO), "data": {"batch_size": 0}}),
                     ('Parser key "batch_size": Not of type PositiveInt: 0 does not conform to restriction v>0',)),
    "not a choice": (lambda d: write_yaml(d / "j.yaml", {"extends": str(VERIFY), "data": {"backend": "pil"}}),
                     ('Parser key "backend": Expected a typing.Literal[\'torchvision\', \'dali\']. Got value: pil',)),
}


@pytest.mark.parametrize("fault", JOB_FILE_FAULTS)
@pytest.mark.parametrize("command", ["fit", "submit"])
def test_bad_job_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, command: str) -> None:
    make, needles = JOB_FILE_FAULTS[fault]
    path = make(tmp_path)
    argv = ["submit", str(path), "--dry-run"] if command == "submit" else ["fit", "--config", str(path)]
    assert_one_line_refusal(capsys, eca(argv), command, *needles)


# --- data folders --------------------------------------------------------------------------------------------------


def imagenet_job(tmp_path: Path, root: Path) -> list[str]:
    return ["validate", "--config", str(VERIFY), "--data.root", str(root), "--model.checkpoint", "null",
            "--ckpt_path", str(tmp_path / "unused.ckpt"), *QUIET]  # fmt: skip


DATA_FAULTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "no such root": (lambda d: d / "no_imagenet", ("no_imagenet does not exist", "<root>/train/<wnid>/*.JPEG")),
    "no val split": (lambda d: (d / "only_train" / "train" / "n0").mkdir(parents=True) or d / "only_train",
                     ("only_train/val", "does not exist")),
    "no class folders": (lambda d: (d / "flat" / "val").mkdir(parents=True) or d / "flat", ("flat/val",)),
    "a file, not a folder": (lambda d: write_yaml(d / "imagenet.txt", "x"), ("imagenet.txt",)),
}


@pytest.mark.parametrize("fault", DATA_FAULTS)
def test_bad_data_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str) -> None:
    make, needles = DATA_FAULTS[fault]
    torch.save({"pytorch-lightning_version": "2", "hyper_parameters": {"model_name": "eca_resnet18"}},
               tmp_path / "unused.ckpt")  # fmt: skip
    assert_one_line_refusal(capsys, eca(imagenet_job(tmp_path, make(tmp_path))), "validate", *needles)


def test_splits_with_different_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=1, val_per_class=1, size=16)
    shutil.rmtree(root / "train" / "n00000002")
    args = ["fit", "--config", str(VERIFY), "--data.root", str(root), "--model.checkpoint", "null", *QUIET]
    assert_one_line_refusal(capsys, eca(args), "fit", "different class folders", "n00000002")


# --- checkpoints -------------------------------------------------------------------------------------------------


class _Payload:
    """Pickled by reference: loading it would import and run code from this module."""


def code_executing(path: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    return path


def truncated(path: Path) -> Path:
    torch.save({"state_dict": create_model("eca_resnet18", num_classes=10).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def released_weights(path: Path) -> Path:
    torch.save({"state_dict": {f"module.{k}": v for k, v in create_model("eca_resnet18", num_classes=10)
                               .state_dict().items()}, "arch": "eca_resnet18"}, path)  # fmt: skip
    return path


def lightning_checkpoint_of(model_name: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        torch.save({"pytorch-lightning_version": "2.6", "hyper_parameters": {"model_name": model_name},
                    "state_dict": {}}, path)  # fmt: skip
        return path

    return make


CKPT_PATH_FAULTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing": (lambda p: p, ("x.ckpt does not exist",)),
    "a text file": (lambda p: write_yaml(p, "101 not a checkpoint\n"), ("x.ckpt", "not a file written by torch.save")),
    "truncated": (truncated, ("x.ckpt", "truncated or corrupted")),
    "would run code": (code_executing, ("x.ckpt", "_Payload", "could run arbitrary code")),
    "released weights": (released_weights, ("x.ckpt", "not a Lightning checkpoint", "--model.checkpoint")),
    "another model": (lightning_checkpoint_of("resnet50"), ("x.ckpt", "'resnet50'", "'eca_resnet18'",
                                                             "--trust_ckpt_hparams")),
}


@pytest.mark.parametrize("fault", CKPT_PATH_FAULTS)
def test_bad_ckpt_path(tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str) -> None:
    make, needles = CKPT_PATH_FAULTS[fault]
    path = make(tmp_path / "x.ckpt")
    assert_one_line_refusal(capsys, eca(["validate", "--config", str(DEMO), "--ckpt_path", str(path), *QUIET]),
                            "validate", *needles)  # fmt: skip


MODEL_CHECKPOINT_FAULTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing": (lambda p: p, ("w.pth.tar", "does not exist")),
    "a text file": (lambda p: write_yaml(p, "101 not a checkpoint\n"), ("w.pth.tar", "not a file written by torch")),
    "would run code": (code_executing, ("w.pth.tar", "_Payload", "could run arbitrary code")),
    "another architecture": (lambda p: torch.save({"state_dict": create_model("resnet18", num_classes=10)
                                                   .state_dict()}, p) or p,  # fmt: skip
                             ("w.pth.tar", "does not fit", "resnet18(num_classes=10)")),
}


@pytest.mark.parametrize("fault", MODEL_CHECKPOINT_FAULTS)
def test_bad_model_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str) -> None:
    make, needles = MODEL_CHECKPOINT_FAULTS[fault]
    path = make(tmp_path / "w.pth.tar")
    code = eca(["validate", "--config", str(DEMO), "--model.checkpoint", str(path), *QUIET])
    assert_one_line_refusal(capsys, code, "validate", "cannot build 'eca_resnet18'", *needles)


# Each kind of file that is no checkpoint (the reader's own test covers every kind): one line from each command.
UNREADABLE = ["text", "empty", "a directory", "a zip not torch's", "truncated (legacy format)", "a plain pickle",
              "torch.save of a list", "a dict without a state dict"]  # fmt: skip
NOT_LIGHTNING = {"torch.save of a list": "(it holds a list)", "a dict without a state dict": "(it holds a dict with "
                                                                                           "keys ['epoch'])"}


@pytest.mark.parametrize("kind", UNREADABLE)
@pytest.mark.parametrize("option", ["--ckpt_path", "--model.checkpoint"])
def test_any_unreadable_file_as_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str,
                                        option: str) -> None:  # fmt: skip
    make, words = UNREADABLE_KINDS[kind]
    make(tmp_path / "x.pth")
    code = eca(["validate", "--config", str(DEMO), option, str(tmp_path / "x.pth"), *QUIET])
    words = NOT_LIGHTNING.get(kind, words) if option == "--ckpt_path" else words
    assert_one_line_refusal(capsys, code, "validate", "x.pth", words)


@pytest.mark.parametrize("kind", UNREADABLE_KINDS)
def test_any_unreadable_file_given_to_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    make, words = UNREADABLE_KINDS[kind]
    make(tmp_path / "x.pth")
    assert_one_line_refusal(capsys, eca(["profile", "--checkpoint", str(tmp_path / "x.pth")]), "profile", words)


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused_unless_its_hparams_are_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = ["--data.init_args.image_size", "16", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches",
             "1", "--trainer.max_epochs", "1", *QUIET]  # fmt: skip
    assert eca(["fit", "--config", str(DEMO), "--model.model_name", "resnet18", *quick,
                "--trainer.default_root_dir", str(tmp_path / "r18")]) == 0  # fmt: skip
    [checkpoint] = (tmp_path / "r18").rglob("last.ckpt")
    capsys.readouterr()
    with sqlite3.connect(store_path()) as db:
        runs_before = db.execute("SELECT count(*) FROM runs").fetchone()
    # The demo job says eca_resnet18: scoring this resnet18 under its name would be a silent swap.
    code = eca(["validate", "--config", str(DEMO), "--ckpt_path", str(checkpoint), *quick])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("eca validate: error: --ckpt_path ")
    assert "'resnet18'" in err[-1] and "'eca_resnet18'" in err[-1] and "--trust_ckpt_hparams" in err[-1]
    with sqlite3.connect(store_path()) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == runs_before
    # Asked for explicitly, the checkpoint's own model is built and scored.
    assert eca(["validate", "--config", str(DEMO), "--ckpt_path", str(checkpoint), "--trust_ckpt_hparams", "true",
                *quick]) == 0  # fmt: skip
