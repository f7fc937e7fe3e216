"""`eca models` and `eca profile`: the tables they print, and the README's profile table is what they print."""

from __future__ import annotations

import pytest

from ecaplatform.cli.main import main as eca_main
from ecaplatform.cli.models import format_profile_markdown, format_profile_table
from ecaplatform.models import list_models
from ecaplatform.models.profile import profile_model
from tests.conftest import REPO_ROOT


def test_table_formatting() -> None:
    row = profile_model("eca_mobilenet_v2")
    assert row.eca_params == 31
    table = format_profile_table([row])
    line = next(ln for ln in table.splitlines() if ln.startswith("eca_mobilenet_v2"))
    assert "3,504,903" in line and "319.9M" in line and "3.34" in line


def test_eca_profile_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert eca_main(["profile", "eca_resnet18", "mobilenet_v2", "--input-size", "64"]) == 0
    out, err = capsys.readouterr()
    assert "[1/2] profiling eca_resnet18" in err and "[2/2] profiling mobilenet_v2" in err
    eca_line = next(ln for ln in out.splitlines() if ln.startswith("eca_resnet18"))
    assert "11,689,556" in eca_line and " 44 " in eca_line


def test_eca_profile_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert eca_main(["profile", "resnet9000"]) == 2
    assert "unknown model(s) resnet9000" in capsys.readouterr().err


def test_eca_models_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert eca_main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("eca_resnet50 "))
    assert "ResNet-50" in line and "eca" in line and "77.48" in line and "eca_resnet50_k3557.pth.tar" in line
    assert sum(1 for ln in out.splitlines()[2:] if ln.strip()) == len(list_models(None))  # every task


@pytest.mark.slow
def test_the_readme_profile_table_is_what_eca_profile_markdown_prints() -> None:

    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    header = "| model | params | params (2^20) | paper | ECA params | MACs (2^30) | paper | diff |"
    start = lines.index(header)
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    table = lines[start:end]
    rows = table[2:]
    names = [line.split("|")[1].strip() for line in rows]
    assert len(names) >= 10, "the README's profile table went missing"
    expected = format_profile_markdown([profile_model(name) for name in names])
    assert "\n".join(table) == expected, (
        f"README.md's table is stale; regenerate it with `eca profile --markdown {' '.join(names)}`"
    )
