"""A store the user can only read (a shared store on a lab server) is still shown, by `eca runs`, `eca claims`
and the leaderboard; writing to it is one line saying why not.

Root ignores file permissions, so as root the readers run in a new user namespace (`unshare --user`): there the
files of the real root belong to an unmapped user, the process has no capability over them, and their permission
bits apply to it as to anyone else's process. A user who is not root runs them as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecaplatform.store.claims import ensure_claims
from ecaplatform.store.database import head_revision, writer_engine
from tests.leaderboard_data import RunSpec, add_runs

TESTS = Path(__file__).resolve().parent


def _without_root_powers(command: list[str]) -> list[str]:
    return ["unshare", "--user", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def unprivileged() -> None:
    if os.geteuid() == 0:
        probe = subprocess.run(["unshare", "--user", "true"], capture_output=True) if shutil.which("unshare") else None
        if probe is None or probe.returncode != 0:
            pytest.skip("as root, these tests need `unshare --user` to read files as a user without root's powers")


def run_as_user(*command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_without_root_powers(list(command)), capture_output=True, text=True, cwd=TESTS,
                          env={**os.environ, **env}, timeout=timeout)  # fmt: skip


def eca_as_user(url: str, *args: str) -> subprocess.CompletedProcess:
    return run_as_user(sys.executable, "-m", "ecaplatform", *args, env={"ECA_DB_URL": url})


@pytest.fixture(params=["read-only folder", "read-only file"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path, unprivileged: None) -> Iterator[Path]:
    """A store with a verifying run that this user may read and not write: the folder and the file read-only (no
    -wal/-shm files: nobody has it open), or only the file read-only."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "runs.db"
    engine = writer_engine(f"sqlite:///{path}")  # migrated, as every real store is
    ensure_claims(engine)
    add_runs(engine, [RunSpec(id="run-r50", top1=77.6, top5=93.8, epochs=2, command="fit")])
    engine.dispose()  # the last connection checkpoints the WAL and removes the -wal and -shm files
    assert [p.name for p in folder.iterdir()] == ["runs.db"]
    path.chmod(0o444)
    if request.param == "read-only folder":
        folder.chmod(0o555)
    try:
        yield path
    finally:
        folder.chmod(0o755)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".db"}


def test_the_command_line_reads_a_store_it_cannot_write(shared_store: Path) -> None:
    url = f"sqlite:///{shared_store}"
    before = _snapshot(shared_store.parent)
    listed = eca_as_user(url, "runs")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[2].split()[0] == "run-r50"
    shown = eca_as_user(url, "runs", "--show", "run-r50")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["best_top1"] == 77.6
    claims = eca_as_user(url, "claims", "--json")
    assert claims.returncode == 0, claims.stderr
    r50 = next(c for c in json.loads(claims.stdout) if c["id"] == "eca_resnet50-imagenet-top1")
    assert (r50["status"], r50["evidence_run_id"]) == ("Verified", "run-r50")
    current = eca_as_user(url, "db", "current")
    assert current.returncode == 0 and f"at {head_revision()}, newest" in current.stdout, current.stderr
    assert _snapshot(shared_store.parent) == before


LEADERBOARD_PAGES = """
from tests.leaderboard_data import claim_rows, run_app
row = claim_rows(run_app())["ECA-Net (ResNet-50)/Top-1 Accuracy"]
print(row["Status"][0], row["Evidence"][0])
run_page = run_app("views/run.py", {"run": "run-r50"})
print(len(run_page.get("vega_lite_chart")), "charts")
"""


def test_the_leaderboard_shows_a_store_it_cannot_write(shared_store: Path) -> None:
    before = _snapshot(shared_store.parent)
    shown = run_as_user(sys.executable, "-c", LEADERBOARD_PAGES, env={"ECA_DB_URL": f"sqlite:///{shared_store}"})
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.splitlines()[-2:] == ["Verified run-r50", "2 charts"]
    assert _snapshot(shared_store.parent) == before


WRITE_ONE_RUN = """
import sys
from ecaplatform.store.database import StoreError, writer_engine
from ecaplatform.store.writes import start_run
try:
    start_run(writer_engine(sys.argv[1]), "run-new", job_name="j", command="fit", model_name="m")
except StoreError as exc:
    print(exc)
"""


def test_writing_a_store_one_cannot_write_is_one_line(shared_store: Path) -> None:
    url = f"sqlite:///{shared_store}"
    before = _snapshot(shared_store.parent)
    done = run_as_user(sys.executable, "-c", WRITE_ONE_RUN, url, env={})
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = done.stdout.splitlines()
    assert line.startswith(f"cannot write the run store {shared_store}: ")
    assert "read-only for you" in line and "can still read it" in line and "ECA_DB_URL" in line
    assert _snapshot(shared_store.parent) == before


def test_a_new_store_in_a_folder_one_cannot_write_is_one_line(tmp_path: Path, unprivileged: None) -> None:
    folder = tmp_path / "lab"
    folder.mkdir(mode=0o555)
    try:
        for path in (folder / "runs.db", folder / "sub" / "runs.db"):
            done = eca_as_user(f"sqlite:///{path}", "db", "upgrade")
            assert done.returncode == 1 and done.stdout == ""
            [line] = done.stderr.splitlines()
            assert line.startswith("eca db upgrade: cannot ") and str(path) in line and "ECA_DB_URL" in line
            assert "read-only for you" in line or "Permission denied" in line
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
