"""Shared pytest setup: keep every test away from the user's real store, W&B and home directory. The plugins: the
services the tests start (PostgreSQL, SLURM, Chromium) as fixtures, and the CI rule (under CI a skip fails unless the
test needs a GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.services", "tests.ci_skip_rule"]

# Property tests: bounded and without a per-example deadline, so each file runs in seconds also on a busy 2-core
# machine; no example database, so nothing is written into the work tree (a failure prints its shrunk example).
settings.register_profile("eca", max_examples=150, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.load_profile("eca")

REPO_ROOT = Path(__file__).resolve().parents[1]
INHERITED_RUN_VARIABLES = (
    "ECA_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
)


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test gets its own SQLite store and offline W&B directory unless it sets its own.
    monkeypatch.setenv("ECA_DB_URL", f"sqlite:///{tmp_path / 'eca-test.db'}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # A suite run inside `eca submit` or a SLURM allocation must not continue that job's run record.
    for name in INHERITED_RUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on an empty database of the real PostgreSQL server (a module using it
    imports `fresh_postgres_url, postgres_server` from services)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own directory, where runs/<job>/<run id>/ folders land."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
