"""The suite's CI rule, a pytest plugin (tests/conftest.py loads it): locally a missing service (PostgreSQL, SLURM,
Chromium) skips its tests; under CI that would hide them behind a green run, so there a skip fails, naming the test
and its reason. CI machines have no GPU: tests marked `gpu` (or in test_gpu.py) still skip. xfail stays xfail."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

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
