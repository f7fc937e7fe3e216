"""claims/eca_net.yaml: the paper's numbers as data, loaded idempotently, and `eca claims`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from ecaplatform import paper
from ecaplatform.cli.main import main as eca
from ecaplatform.store.claims import ClaimsFileError, claims_file, read_claims, sync_claims
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Claim

PUBLIC = [
    ("eca_resnet152-imagenet-top1", "ECA-Net (ResNet-152)", 78.92),
    ("eca_resnet101-imagenet-top1", "ECA-Net (ResNet-101)", 78.65),
    ("eca_resnet50-imagenet-top1", "ECA-Net (ResNet-50)", 77.48),
    ("eca_mobilenet_v2-imagenet-top1", "ECA-Net (MobileNetV2)", 72.56),
]


def test_the_four_public_claims_come_first_in_the_public_pages_order() -> None:
    claims = read_claims()
    assert [(c["id"], c["label"], c["claimed"]) for c in claims[:4]] == PUBLIC
    assert all(c["public"] for c in claims[:4]) and not any(c["public"] for c in claims[4:])


def test_every_claim_of_table_3_and_the_poster_is_there_with_a_registered_model() -> None:
    from ecaplatform.models import list_models

    claims = {c["id"]: c for c in read_claims() if c["task"] == "classification"}
    # 14 rows of Table 3 + 7 poster rows (ResNet-18/34), top-1 and top-5 each.
    assert len(claims) == 42
    spot_checks = {
        "resnet50-imagenet-top1": 75.20, "cbam_resnet50-imagenet-top5": 93.69, "se_resnet152-imagenet-top1": 78.43,
        "mobilenet_v2-imagenet-top5": 90.20, "eca_resnet18-imagenet-top1": 70.78, "cbam_resnet34-imagenet-top1": 74.01,
        "eca_resnet34-imagenet-top5": 91.83, "eca_mobilenet_v2-imagenet-top5": 90.81,
    }  # fmt: skip
    assert {cid: claims[cid]["claimed"] for cid in spot_checks} == spot_checks
    registered = set(list_models())
    for claim_id, claim in claims.items():
        assert claim_id == f"{claim['model']}-{claim['dataset']}-{claim['metric']}"
        assert claim["model"] in registered, claim_id
        assert (claim["dataset"], claim["split"], claim["expected_samples"], claim["expected_classes"]) == (
            "imagenet", "val", 50000, 1000)  # fmt: skip
        assert claim["tolerance"] == 0.10 and claim["source"]


def test_every_resnet_se_and_eca_row_of_tables_5_and_6_is_a_coco_claim_with_the_papers_ap() -> None:
    from ecaplatform.models import list_models

    claims = {c["id"]: c for c in read_claims() if c["task"] != "classification"}
    rows = [r for r in paper.DETECTION_RESULTS if r.model is not None]  # not the NL and GC rows
    assert len(rows) == 18 and len(claims) == 18 + 6  # box AP of every row, mask AP of the Mask R-CNN rows
    registered = set(list_models(None))
    for row in rows:
        box = claims[f"{row.model}-coco-box_ap"]
        assert (box["task"], box["metric"], box["claimed"], box["source"]) == ("detection", "box_ap", row.box_ap[0],
                                                                               "Table 5")  # fmt: skip
        if row.mask_ap is not None:
            mask = claims[f"{row.model}-coco-mask_ap"]
            assert (mask["task"], mask["claimed"], mask["source"]) == ("instance_segmentation", row.mask_ap[0],
                                                                       "Table 6")  # fmt: skip
    for claim in claims.values():
        assert claim["model"] in registered
        assert (claim["dataset"], claim["split"], claim["expected_samples"], claim["expected_classes"]) == (
            "coco2017", "val", 5000, 80)  # fmt: skip
        assert claim["tolerance"] == 0.2 and claim["method"] in ("ResNet", "SENet", "ECA-Net")
    assert claims["faster_rcnn_eca_resnet50_fpn-coco-box_ap"]["claimed"] == 38.0
    assert claims["mask_rcnn_eca_resnet101_fpn-coco-mask_ap"]["claimed"] == 37.4


def test_every_claimed_value_and_label_is_the_papers(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = [c for c in read_claims() if c["task"] == "classification"]
    for claim in claims:
        row = paper.RESULTS[claim["model"]]
        assert claim["claimed"] == getattr(row, claim["metric"]), claim["id"]
        assert (claim["backbone"], claim["method"], claim["source"]) == (row.backbone, row.method, row.source)
    # One source: a number changed in ecaplatform/paper.py is the claim's number.
    moved = dataclasses.replace(paper.RESULTS["eca_resnet50"], top1=80.0)
    monkeypatch.setitem(paper.RESULTS, "eca_resnet50", moved)
    assert next(c for c in read_claims() if c["id"] == "eca_resnet50-imagenet-top1")["claimed"] == 80.0


def test_loading_twice_changes_nothing_and_edits_update_in_place(tmp_path: Path) -> None:
    engine = writer_engine()
    with session_scope(engine) as session:
        first = sync_claims(session)
    with session_scope(engine) as session:
        second = sync_claims(session)
    assert (len(first.added), len(second.added), len(second.updated), len(second.unchanged)) == (66, 0, 0, 66)

    document = yaml.safe_load(claims_file().read_text())
    document["claims"][2]["tolerance"] = 0.25
    del document["claims"][-1]
    edited = tmp_path / "claims.yaml"
    edited.write_text(yaml.safe_dump(document))
    with session_scope(engine) as session:
        third = sync_claims(session, edited)
    assert third.updated == ["eca_resnet50-imagenet-top1"]
    assert third.not_in_file == ["mask_rcnn_eca_resnet101_fpn-coco-mask_ap"]
    with session_scope(engine) as session:
        assert session.get(Claim, "eca_resnet50-imagenet-top1").tolerance == 0.25
        assert session.scalar(select(func.count()).select_from(Claim)) == 66  # removed from the file, kept in store


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(toleranse=0.1), r"claim 'eca_resnet152-imagenet-top1': unknown field\(s\) \['toleranse'\]"),
        (lambda c: c.update(metric="top3"), r"metric 'top3' is not one of classification's \('top1', 'top5'\)"),
        (lambda c: c.update(task="detection"), r"metric 'top1' is not one of detection's \('box_ap', "),
        (lambda c: c.update(task="segmentation"), r"task 'segmentation' is not one of \['classification', 'detec"),
        (lambda c: c.update(tolerance="high"), r"tolerance must be a non-negative number"),
        (lambda c: c.update(claimed=78.92, source="x"), r"remove \['claimed', 'source'\]; .* ecaplatform/paper\.py"),
        (lambda c: c.update(model="eca_resnet9", id="eca_resnet9-imagenet-top1"), r"has no top1 for 'eca_resnet9'"),
        (lambda c: c.pop("model"), r"missing field\(s\) \['model'\]"),
        (lambda c: c.update(id="eca_resnet101-imagenet-top1"), r"duplicate id"),
    ],
)
def test_malformed_claims_name_the_claim_and_the_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    document = yaml.safe_load(claims_file().read_text())
    edit(document["claims"][0])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(ClaimsFileError, match=message):
        read_claims(bad)


def test_missing_claims_file_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECA_CLAIMS_FILE", "/nonexistent/eca_net.yaml")
    with pytest.raises(ClaimsFileError, match="ECA_CLAIMS_FILE=/nonexistent/eca_net.yaml: no such file"):
        claims_file()


def test_eca_claims_shows_the_public_claims_unverified_on_a_fresh_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert eca(["claims", "--public"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:6]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("ECA-Net", "(ResNet-152)", "Unverified"), ("ECA-Net", "(ResNet-101)", "Unverified"),
        ("ECA-Net", "(ResNet-50)", "Unverified"), ("ECA-Net", "(MobileNetV2)", "Unverified"),
    ]  # fmt: skip
    assert eca(["claims", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 66 and {r["status"] for r in records} == {"Unverified"}
