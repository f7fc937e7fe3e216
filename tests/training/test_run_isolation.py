"""Every run has a folder of its own (runs/<job>/<run id>/): a rerun or a concurrent run of the same job never
touches another run's files, `--ckpt_path last|best` say which run they took, and identifiers that become path
components (run ids, job names) are checked where they enter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Run
from ecaplatform.training.lightning_cli import main
from ecaplatform.training.provenance import file_sha256
from ecaplatform.training.run import CHECKPOINT_KEY
from tests.training_helpers import DEMO, QUICK, csv_epoch_metrics, store_epoch_metrics

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # runs/<job>/ folders land in the test's own directory



def fit(*extra: str, epochs: int = 1) -> int:
    return main(["fit", "--config", str(DEMO), "--trainer.max_epochs", str(epochs), *QUICK, *extra])


def runs_by_age() -> list[Run]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Run).order_by(Run.created_at, Run.id)))


def test_a_rerun_of_a_job_never_touches_the_earlier_runs_checkpoint(tmp_path: Path) -> None:
    assert fit() == 0
    assert fit() == 0
    first, second = runs_by_age()
    assert first.checkpoint_path != second.checkpoint_path
    assert file_sha256(first.checkpoint_path) == first.checkpoint_sha256  # still the file it recorded
    assert file_sha256(second.checkpoint_path) == second.checkpoint_sha256
    for run in (first, second):
        assert Path(run.checkpoint_path) == tmp_path / "runs" / "demo_cpu" / run.id / "checkpoints" / "best.ckpt"


@pytest.mark.slow  # four fits and three validations
def test_last_and_best_resolve_to_the_latest_run_of_the_jobs_model_unless_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fit() == 0
    assert fit() == 0
    a, b = runs_by_age()
    assert fit("--model.model_name", "resnet18") == 0  # the job's newest run, of another model: passed over
    [other] = [run for run in runs_by_age() if run.id not in (a.id, b.id)]
    capsys.readouterr()

    def validate(*extra: str) -> Run:
        assert main(["validate", "--config", str(DEMO), *QUICK, "--ckpt_path", "best", *extra]) == 0
        with session_scope(writer_engine()) as session:
            return session.scalars(select(Run).where(Run.command == "validate").order_by(Run.created_at.desc())).first()

    latest = validate()
    out = capsys.readouterr().out
    assert f"--ckpt_path best: run {b.id} (newer runs of other models passed over: {other.id} (resnet18)): " \
           f"{b.checkpoint_path}" in out  # says which run and file it took
    assert latest.checkpoint_path == b.checkpoint_path and latest.id not in (a.id, b.id)
    named = validate("--from_run", a.id)
    assert f"--ckpt_path best: run {a.id}: {a.checkpoint_path}" in capsys.readouterr().out
    assert named.checkpoint_path == a.checkpoint_path

    # `fit --ckpt_path last --from_run A` continues A: the same record, one more epoch, nothing new.
    assert fit("--ckpt_path", "last", "--from_run", a.id, epochs=2) == 0
    assert f"--ckpt_path last: run {a.id}: {tmp_path / 'runs' / 'demo_cpu' / a.id / 'checkpoints' / 'last.ckpt'}" in (
        capsys.readouterr().out)  # fmt: skip
    assert {epoch for epoch, _ in store_epoch_metrics(a.id)} == {0, 1}
    assert {epoch for epoch, _ in store_epoch_metrics(b.id)} == {0}
    assert len(runs_by_age()) == 5  # a, b, other and the two validations

    assert main(["validate", "--config", str(DEMO), *QUICK, "--ckpt_path", "best", "--from_run", "nope"]) == 1
    err = capsys.readouterr().err
    assert "--from_run nope" in err and "runs/demo_cpu/nope" in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_four_concurrent_runs_of_one_job_share_no_file_and_all_succeed(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ecaplatform", "fit", "--config", str(DEMO), "--trainer.max_epochs", "1", *QUICK]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]  # fmt: skip
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], "\n".join(out[-2000:] for out in outputs)

    runs = runs_by_age()
    assert len(runs) == 4 and {run.status for run in runs} == {"succeeded"}
    folders = {tmp_path / "runs" / "demo_cpu" / run.id for run in runs}
    assert folders == set((tmp_path / "runs" / "demo_cpu").iterdir())
    for run in runs:
        folder = tmp_path / "runs" / "demo_cpu" / run.id
        assert Path(run.checkpoint_path).is_relative_to(folder)
        assert file_sha256(run.checkpoint_path) == run.checkpoint_sha256
        logged = csv_epoch_metrics(sorted(folder.rglob("metrics.csv")))
        assert logged == store_epoch_metrics(run.id) and {epoch for epoch, _ in logged} == {0}


# --- identifiers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../escape", "a/b", ".hidden", "x" * 41, "semi;colon", "sp ace"])
def test_an_unsafe_eca_run_id_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], run_id: str
) -> None:
    monkeypatch.setenv("ECA_RUN_ID", run_id)
    assert fit() == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("eca fit: error: ECA_RUN_ID") and repr(run_id) in err, err
    assert not (tmp_path / "runs").exists() and runs_by_age() == []


def test_an_unsafe_job_name_is_refused_by_eca_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fit("--job.name", "../../outside") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("eca fit: error: job.name") and "'../../outside'" in err and err.count("\n") == 0, err
    assert not (tmp_path.parent / "outside").exists() and not (tmp_path / "runs").exists()


def test_a_checkpoint_holding_an_unsafe_run_id_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fit() == 0
    [run] = runs_by_age()
    checkpoint = torch.load(run.checkpoint_path, map_location="cpu", weights_only=True)
    checkpoint["callbacks"][CHECKPOINT_KEY]["run_id"] = "../../evil"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    capsys.readouterr()
    assert fit("--ckpt_path", str(crafted), epochs=2) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("eca fit: error: ") and "'../../evil'" in err and str(crafted) in err, err
    assert len(runs_by_age()) == 1
