"""The CI rule (tests/ci_skip_rule.py): under CI (CI=true or CI=1) a skipped test fails, naming itself and its reason,
unless it needs a GPU (marked `gpu`, or in test_gpu.py); xfail stays xfail. Without CI a skip stays a skip.

Each case runs a tiny generated suite in a pytest subprocess with a copy of the real rule as its conftest, so the
hooks under test are the ones this suite runs with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

RULE = Path(__file__).resolve().parent / "ci_skip_rule.py"

SAMPLE = '''
import pytest

def test_passes():
    pass

def test_skips_in_the_test():
    pytest.skip("PostgreSQL server binaries are not installed")

@pytest.fixture
def service():
    pytest.skip("SLURM is not installed")

def test_skips_in_a_fixture(service):
    pass

@pytest.mark.skipif(True, reason="chromium not installed")
def test_skipif_marker():
    pass

@pytest.mark.gpu
def test_gpu_marked():
    pytest.skip("needs a CUDA GPU")

@pytest.mark.xfail(strict=True, reason="known bug")
def test_known_bug():
    assert False

def test_imperative_xfail():
    pytest.xfail("known limitation")
'''

GPU_FILE = '''
import pytest

def test_unmarked_but_in_the_gpu_file():
    pytest.skip("no CUDA here")
'''

MODULE_SKIP = '''
import pytest

pytest.importorskip("no_such_module_for_eca_tests", reason="the optional extra is not installed")

def test_never_collected():
    pass
'''


def run_suite(tmp_path: Path, ci: str | None, files: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Run the files with the real rule; exit code, {test name: outcome} from the JUnit XML, and the output."""
    suite = tmp_path / f"suite-{ci}"
    suite.mkdir()
    shutil.copy(RULE, suite / "conftest.py")
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    for name, text in files.items():
        (suite / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    xml = suite / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", f"--junitxml={xml}",
                           "--rootdir", str(suite), *files], cwd=suite, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    outcomes = {}
    for case in ET.parse(xml).iter("testcase"):
        child = next(iter(case), None)
        outcome = "passed" if child is None else child.tag
        if child is not None and child.tag == "skipped" and child.get("type") == "pytest.xfail":
            outcome = "xfailed"
        outcomes[case.get("name")] = outcome
    return proc.returncode, outcomes, proc.stdout + proc.stderr


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_under_ci_a_skip_fails_naming_the_test_and_reason_but_gpu_tests_and_xfail_do_not(
    tmp_path: Path, ci: str
) -> None:
    code, outcomes, output = run_suite(tmp_path, ci, {"test_sample.py": SAMPLE, "test_gpu.py": GPU_FILE})
    assert code == pytest.ExitCode.TESTS_FAILED, output
    # A skip in the test body fails; one in setup (a fixture or a skipif marker) is reported as a setup error.
    assert outcomes == {
        "test_passes": "passed",
        "test_skips_in_the_test": "failure",
        "test_skips_in_a_fixture": "error",
        "test_skipif_marker": "error",
        "test_gpu_marked": "skipped",
        "test_known_bug": "xfailed",
        "test_imperative_xfail": "xfailed",
        "test_unmarked_but_in_the_gpu_file": "skipped",
    }, output
    for test, reason in [("test_skips_in_the_test", "PostgreSQL server binaries are not installed"),
                         ("test_skips_in_a_fixture", "SLURM is not installed"),
                         ("test_skipif_marker", "chromium not installed")]:  # fmt: skip
        assert f"test_sample.py::{test} skipped ({reason}); under CI only GPU tests may skip" in output, output
    assert "scripts/install_system_deps.sh" in output
    assert "needs a CUDA GPU" in output and "no CUDA here" in output  # the GPU skips' reasons, shown by -ra


def test_without_ci_every_skip_stays_a_skip(tmp_path: Path) -> None:
    code, outcomes, output = run_suite(tmp_path, None, {"test_sample.py": SAMPLE, "test_gpu.py": GPU_FILE})
    assert code == pytest.ExitCode.OK, output
    skipped = {"test_skips_in_the_test", "test_skips_in_a_fixture", "test_skipif_marker", "test_gpu_marked",
               "test_unmarked_but_in_the_gpu_file"}  # fmt: skip
    assert {name for name, outcome in outcomes.items() if outcome == "skipped"} == skipped, output
    assert outcomes["test_known_bug"] == outcomes["test_imperative_xfail"] == "xfailed"
    assert "under CI" not in output


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_ci_variable_that_does_not_say_true_is_not_ci(tmp_path: Path, ci: str) -> None:
    code, outcomes, output = run_suite(tmp_path, ci, {"test_sample.py": SAMPLE})
    assert code == pytest.ExitCode.OK and outcomes["test_skips_in_the_test"] == "skipped", output


def test_under_ci_a_module_skipped_at_import_fails_the_run_after_the_rest_ran(tmp_path: Path) -> None:
    files = {"test_extra.py": MODULE_SKIP, "test_sample.py": "def test_passes():\n    pass\n"}
    code, outcomes, output = run_suite(tmp_path, "true", files)
    assert code == pytest.ExitCode.TESTS_FAILED and outcomes.get("test_passes") == "passed", output
    assert "FAILED (CI) test_extra.py skipped (the optional extra is not installed)" in output, output
    code, _, output = run_suite(tmp_path, None, files)  # locally the module's skip is only a skip
    assert code == pytest.ExitCode.OK and "FAILED" not in output, output
