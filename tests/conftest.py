"""Shared pytest setup: keep every test away from the user's real store, W&B and home directory; under CI a
skipped test fails unless it needs a GPU."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def browser_page() -> Iterator[object]:
    """A page in headless Chromium, 1400x1000 (services.chromium_page)."""
    from services import chromium_page  # here, not at the top: test_ci_skips runs this file alone, without services

    with chromium_page() as page:
        yield page


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on an empty database of the real PostgreSQL server (a module using it
    imports `fresh_postgres_url, postgres_server` from services)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("fresh_postgres_url")


# --- under CI only GPU tests may skip ------------------------------------------------------------------------------
# Locally a missing service (PostgreSQL, SLURM, Chromium) skips its tests; on CI that would hide them behind a green
# run, so there a skip fails, naming the test and its reason. CI machines have no GPU: tests marked `gpu` (or in
# tests/test_gpu.py) still skip. xfail is reported as skipped internally and stays xfail.

CI_SKIP_HINT = ("under CI only GPU tests may skip: install the services with scripts/install_system_deps.sh (as "
                "root), or mark the test `gpu` if it needs a GPU")  # fmt: skip
GPU_TEST_FILE = "test_gpu.py"


def under_ci() -> bool:
    """True when the environment says CI (CI=true or CI=1, as GitHub, GitLab and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: reason").
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(reason).removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    assert isinstance(report, pytest.TestReport)
    may_skip = item.get_closest_marker("gpu") is not None or item.path.name == GPU_TEST_FILE
    if report.skipped and not hasattr(report, "wasxfail") and under_ci() and not may_skip:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} skipped ({_skip_reason(report.longrepr)}); {CI_SKIP_HINT}"
    return report


_CI_SKIPPED_MODULES: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    # A whole module skipped at import (importorskip): recorded and failed at the end, not failed here, where a
    # collection error would stop the rest of the suite from running.
    report = yield
    assert isinstance(report, pytest.CollectReport)
    if report.skipped and under_ci() and collector.path.name != GPU_TEST_FILE:
        _CI_SKIPPED_MODULES.append(f"{collector.nodeid} skipped ({_skip_reason(report.longrepr)})")
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _CI_SKIPPED_MODULES and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CI_SKIPPED_MODULES:
        terminalreporter.section("modules skipped under CI", red=True)
    for line in _CI_SKIPPED_MODULES:
        terminalreporter.write_line(f"FAILED (CI) {line}; {CI_SKIP_HINT}", red=True)
