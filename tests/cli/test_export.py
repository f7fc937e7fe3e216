"""`eca export DIR`: board.json (valid against the schema.json it writes, and equal to `eca claims --json`), one
well-formed SVG badge per claim naming its status, clear one-line errors, and the badges in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import Engine

import ecaplatform
from ecaplatform.cli.export import BADGE_COLOURS, badge_svg
from ecaplatform.cli.main import main as eca
from tests.leaderboard_data import RunSpec, add_runs, add_seed_runs, create_store

SVG = "{http://www.w3.org/2000/svg}"
REPO_ROOT = Path(__file__).resolve().parents[2]
# What each status's badge must say (the value side), and its colour.
STATUS_TEXT = {"Verified": "✓ verified", "Not reproduced": "✗ not reproduced", "Unverified": "unverified",
               "Running": "running"}  # fmt: skip


@pytest.fixture
def store() -> Iterator[Engine]:
    engine = create_store(os.environ["ECA_DB_URL"])
    yield engine
    engine.dispose()


def _every_status(engine: Engine) -> None:
    """Verified with three seeds (ResNet-50), Not reproduced (ResNet-101), Running (MobileNetV2), the rest
    Unverified, one of them with a subset result shown beside it (ResNet-152)."""
    add_seed_runs(engine, (77.61, 77.30, 77.35))
    add_runs(engine, [
        RunSpec(id="r101-low", model="eca_resnet101", top1=77.90, top5=94.0),
        RunSpec(id="mbv2-live", model="eca_mobilenet_v2", status="running", command="fit", epochs=2),
        RunSpec(id="r152-subset", model="eca_resnet152", top1=80.0, samples_evaluated=500, split_size=500),
    ])  # fmt: skip


def _export(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, dict]:
    assert eca(["export", str(folder), *args]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.loads((folder / "board.json").read_text()), json.loads((folder / "schema.json").read_text())


def _claims_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert eca(["claims", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ board.json


def test_board_validates_against_its_schema_and_equals_eca_claims_json(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _every_status(store)
    board, schema = _export(tmp_path / "board", capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.validate(board, schema, cls=jsonschema.Draft202012Validator,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)  # fmt: skip
    assert board["claims"] == _claims_json(capsys)  # the same records, field for field
    assert {c["status"] for c in board["claims"]} == set(STATUS_TEXT)  # every branch of the schema is exercised
    assert board["ecaplatform_version"] == ecaplatform.__version__
    assert datetime.fromisoformat(board["generated_at"]).utcoffset().total_seconds() == 0
    r50 = next(c for c in board["claims"] if c["id"] == "eca_resnet50-imagenet-top1")
    assert (r50["verified_value"], r50["evidence_run_id"], r50["evidence_pipeline"]) == (77.61, "seed-0", "torchvision")
    assert r50["evidence_fingerprint"]["num_samples"] == 50_000 and r50["tolerance"] == 0.1
    assert (r50["seed_spread"]["n"], round(r50["seed_spread"]["mean"], 2)) == (3, 77.42)
    assert board["claims"][0]["id"] == "eca_resnet152-imagenet-top1"  # the claims' display order, public first


def test_board_json_is_safe_to_inline_in_a_script_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A claim label that would close a page's <script> block stays a string: `<`, `>`, `&` are \\u escapes."""
    label = "</script><script>alert(1)</script> & <!--"
    claims = (REPO_ROOT / "claims" / "eca_net.yaml").read_text()
    claims = claims.replace("    metric: top1\n", f"    metric: top1\n    label: {json.dumps(label)}\n", 1)
    (tmp_path / "claims.yaml").write_text(claims)
    monkeypatch.setenv("ECA_CLAIMS_FILE", str(tmp_path / "claims.yaml"))
    board, schema = _export(tmp_path / "board", capsys)
    assert board["claims"][0]["label"] == label and schema == json.loads(json.dumps(schema))
    for name in ("board.json", "schema.json"):
        text = (tmp_path / "board" / name).read_text()
        assert not {"<", ">", "&"} & set(text), name
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in (tmp_path / "board" / "board.json").read_text()


@pytest.mark.parametrize(
    ("break_it", "why"),
    [
        (lambda c: c.update(verified_value=None), "a verdict without its value"),
        (lambda c: c.update(seed_spread=None), "a verdict without its spread"),
        (lambda c: c["seed_spread"].pop("n"), "a spread without n"),
        (lambda c: c["seed_spread"].update(n=0), "n below 1"),
        (lambda c: c.update(status="Great"), "an unknown status"),
        (lambda c: c.update(extra=1), "a field the schema does not describe"),
        (lambda c: c.pop("evidence_fingerprint"), "a missing field"),
        (lambda c: c.update(evidence_pipeline="opencv"), "an unknown pipeline"),
    ],
)
def test_the_schema_rejects_a_board_that_breaks_it(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str], break_it, why: str  # type: ignore[no-untyped-def]
) -> None:
    _every_status(store)
    board, schema = _export(tmp_path / "board", capsys)
    claim = next(c for c in board["claims"] if c["status"] == "Verified")
    break_it(claim)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(board, schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_rejects_a_generation_time_that_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    board, schema = _export(tmp_path / "board", capsys)
    jsonschema.validate(board, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError, match="yesterday"):
        jsonschema.validate({**board, "generated_at": "yesterday"}, schema, cls=jsonschema.Draft202012Validator)


def test_export_without_a_store_lists_every_claim_unverified_and_creates_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_file = Path(os.environ["ECA_DB_URL"].removeprefix("sqlite:///"))
    board, schema = _export(tmp_path / "out", capsys)
    jsonschema.validate(board, schema, cls=jsonschema.Draft202012Validator)
    assert len(board["claims"]) == 66 and {c["status"] for c in board["claims"]} == {"Unverified"}
    assert not store_file.exists()


# ---------------------------------------------------------------------------------------------------- badges


def _badge(folder: Path, claim_id: str) -> ET.Element:
    return ET.parse(folder / "badges" / f"{claim_id}.svg").getroot()  # raises on XML that is not well-formed


def _badge_texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_every_badge_is_well_formed_svg_naming_its_status(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _every_status(store)
    folder = tmp_path / "board"
    board, _ = _export(folder, capsys)
    assert sorted(p.name for p in (folder / "badges").iterdir()) == sorted(f"{c['id']}.svg" for c in board["claims"])
    for claim in board["claims"]:
        root = _badge(folder, claim["id"])
        assert root.tag == f"{SVG}svg", claim["id"]
        assert int(root.get("width")) > 0 and int(root.get("height")) == 20
        texts = _badge_texts(root)
        metric = {"top1": "top-1", "top5": "top-5", "box_ap": "box AP", "mask_ap": "mask AP"}[claim["metric"]]
        assert f"{claim['model']} {metric}" in texts, texts
        value = next(t for t in texts if STATUS_TEXT[claim["status"]] in t)  # the value side names the status
        if claim["verified_value"] is not None:
            assert value.startswith(f"{claim['verified_value']:.2f} ")
        fills = [rect.get("fill") for rect in root.iter(f"{SVG}rect")]
        assert BADGE_COLOURS[claim["status"]] in fills, (claim["id"], fills)
        assert root.find(f"{SVG}title").text == f"{texts[0]}: {value}"
    r50 = _badge_texts(_badge(folder, "eca_resnet50-imagenet-top1"))
    assert "77.61 ✓ verified" in r50 and "eca_resnet50 top-1" in r50


def test_badge_text_is_escaped() -> None:
    hostile = 'x<img src=x onerror=alert(1)>&"\'\x07'
    root = ET.fromstring(badge_svg(hostile, "77.61 ✓ verified", "#4c1"))
    assert hostile.replace("\x07", "") in _badge_texts(root)
    assert root.get("aria-label") == f"{hostile.replace(chr(7), '')}: 77.61 ✓ verified"
    assert root.find(f"{SVG}img") is None and not list(root.iter("img"))
    longer = ET.fromstring(badge_svg(hostile * 3, "unverified", "#9f9f9f"))
    assert int(longer.get("width")) > int(root.get("width")) - 40  # the box grows with its text


def test_a_claim_no_longer_exported_loses_its_badge(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "board"
    _export(folder, capsys)
    (folder / "badges" / "notes.txt").write_text("mine")
    board, _ = _export(folder, capsys, "--model", "eca_resnet50")
    badges = sorted(p.name for p in (folder / "badges").glob("*.svg"))
    assert badges == sorted(f"{c['id']}.svg" for c in board["claims"])
    assert len(board["claims"]) == 2 and (folder / "badges" / "notes.txt").exists()  # only stale badges go


# ---------------------------------------------------------------------------------------------------- errors


def test_a_file_as_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "README.md"
    target.write_text("# paper\n")
    assert eca(["export", str(target)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"eca export: {target} is a file, not a folder; name a folder (it is created if missing)\n"
    assert target.read_text() == "# paper\n"
    assert eca(["export", str(target / "board")]) == 1  # below a file: cannot be created
    err = capsys.readouterr().err
    assert err.startswith(f"eca export: cannot create {target / 'board' / 'badges'}: ") and err.count("\n") == 1


def test_an_unwritable_dir_is_one_line_and_the_store_is_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "published"
    folder.mkdir()
    folder.chmod(0o555)
    command = [sys.executable, "-m", "ecaplatform", "export", str(folder)]
    if os.geteuid() == 0:  # root ignores permission bits; in a user namespace they apply to it as to anyone
        if not shutil.which("unshare") or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
            pytest.skip("as root this test needs `unshare --user`")
        command = ["unshare", "--user", *command]
    env = {**os.environ, "ECA_DB_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}  # would fail if read
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("eca export: cannot ") and "ermission denied" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and list(folder.iterdir()) == []


def test_export_and_the_claims_board_import_neither_torch_nor_lightning() -> None:
    code = ("import sys, ecaplatform.cli.export, ecaplatform.cli.store_commands, leaderboard.spread_view; "
            "print(sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------------------- browser




@pytest.mark.browser
def test_every_badge_renders_in_a_real_browser(
    store: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str], browser_page  # type: ignore[no-untyped-def]
) -> None:
    _every_status(store)
    folder = tmp_path / "board"
    board, _ = _export(folder, capsys)
    # As a README shows them: <img> tags. A badge Chromium cannot parse loads with no size.
    images = "".join(f'<p><img id="{c["id"]}" src="badges/{c["id"]}.svg"></p>' for c in board["claims"])
    (folder / "index.html").write_text(f"<!doctype html><html><body>{images}</body></html>")
    page = browser_page
    page.set_viewport_size({"width": 900, "height": 800})  # the badges at a narrow window
    page.goto((folder / "index.html").as_uri())
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
    sizes = page.evaluate("Array.from(document.images).map(i => [i.id, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == len(board["claims"])
    for claim_id, width, height in sizes:
        root = _badge(folder, claim_id)
        assert (width, height) == (int(root.get("width")), 20), claim_id
    # Opened on its own, the badge is an SVG document Chromium draws with the badge's size.
    for claim in board["claims"]:
        page.goto((folder / "badges" / f"{claim['id']}.svg").as_uri())
        box = page.locator("svg").first.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] == 20, claim["id"]
    page.goto((folder / "index.html").as_uri())
    (REPO_ROOT / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO_ROOT / "artifacts" / "export_badges.png"), full_page=True)
