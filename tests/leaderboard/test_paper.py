"""The paper's page without a browser: the Running rule every reader shares, each claim's Reproduce text, the
Reproductions list, the run page's verdicts and the Compare page's pairing, on a reproducer's store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from ecaplatform.cli.main import main as eca
from ecaplatform.paper import DETECTION_RESULTS, RESULTS, detection_result
from ecaplatform.store.board import build_board
from ecaplatform.store.claims import file_claims
from ecaplatform.store.reproduce import JOBS_DIR, job_files, reproduce
from ecaplatform.store.schema import Run
from ecaplatform.store.verification import RUNNING, UNVERIFIED
from leaderboard import ap_figure, paired, queries
from tests.leaderboard_data import RunSpec, add_reproducer_runs, add_runs, create_store, fit_config


@pytest.fixture
def store():  # type: ignore[no-untyped-def]
    engine = create_store(os.environ["ECA_DB_URL"])
    yield engine
    engine.dispose()


def _statuses(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {row.claim.id: row.status for row in build_board(engine).rows}


def test_only_a_run_that_could_qualify_holds_a_claim_running(store, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    add_runs(store, [RunSpec(id="demo", model="eca_resnet18", status="running", command="fit", dataset="digits",
                             job="demo_cpu"),  # the CPU demo: digits, never an ImageNet result
                     RunSpec(id="test-split", model="eca_resnet34", status="running", command="test")])  # fmt: skip
    statuses = _statuses(store)
    assert statuses["eca_resnet18-imagenet-top1"] == UNVERIFIED
    assert statuses["eca_resnet34-imagenet-top1"] == UNVERIFIED  # a test run's result is on test, the claim on val
    # `eca claims` says the same: one rule for every reader.
    assert eca(["claims", "--json"]) == 0
    records = {r["id"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert records["eca_resnet18-imagenet-top1"] == UNVERIFIED

    # A queued SLURM job has no data set recorded yet: its config's data module (or its job's claim) says it.
    add_runs(store, [RunSpec(id="queued", model="eca_resnet50", status="queued", dataset=None, config=fit_config(0)),
                     RunSpec(id="queued-claim", model="eca_resnet101", status="queued", dataset=None,
                             config={"model": {}}, claim_id="eca_resnet101-imagenet-top1"),
                     RunSpec(id="live", model="eca_resnet152", status="running", command="fit")])  # fmt: skip
    statuses = _statuses(store)
    for model in ("eca_resnet50", "eca_resnet101", "eca_resnet152"):
        assert statuses[f"{model}-imagenet-top1"] == statuses[f"{model}-imagenet-top5"] == RUNNING
    assert statuses["eca_resnet18-imagenet-top1"] == UNVERIFIED


def _claim(claim_id: str):  # type: ignore[no-untyped-def]
    return next(c for c in file_claims() if c.id == claim_id)


def test_reproduce_names_the_jobs_the_released_file_and_an_estimate_it_derives() -> None:
    r50 = reproduce(_claim("eca_resnet50-imagenet-top1"))
    verify = r50.verify_commands or ""
    assert "eca data imagenet --archives /downloads --out /data/imagenet --split val" in verify
    assert RESULTS["eca_resnet50"].released_checkpoint in verify and "github.com/BangguWu/ECANet" in verify
    assert verify.splitlines()[-1] == "eca submit jobs/verify_eca_resnet50.yaml"
    # 50,000 images at a quarter of the paper's 4-GPU inference rate on the verify job's 1 GPU.
    minutes = round(50_000 / (RESULTS["eca_resnet50"].infer_fps / 4) / 60)  # type: ignore[operator]
    assert f"about {minutes} min on the job's 1 GPU" in r50.verify_note and "estimate" in r50.verify_note
    assert "eca submit jobs/eca_resnet50.yaml" in (r50.train_commands or "")
    assert "--ckpt_path last --from_run" in (r50.train_commands or "")
    assert r50.train_note.startswith("100 epochs.") and "4 GPUs" in r50.train_note
    assert "77.38" in r50.rule and "50,000" in r50.rule and r50.record()["claim_id"] == r50.claim_id

    # Every job a command names exists, runs the claim's model, and validates (verify) or trains (train).
    for claim in file_claims():
        how = reproduce(claim)
        for commands, command in ((how.verify_commands, "validate"), (how.train_commands, "fit")):
            for line in (commands or "").splitlines():
                if line.startswith("eca submit "):
                    job = next(j for j in job_files() if j.path == line.split()[2])
                    assert (job.model, job.command) == (claim.model, command)
                    assert claim.dataset.startswith(job.dataset or "?")  # CocoDataModule's coco: coco2017
                    assert (JOBS_DIR.parent / job.path).is_file()
    baseline = reproduce(_claim("resnet18-imagenet-top1"))  # no released weights, no job: said, not invented
    assert baseline.verify_commands is None and "released no checkpoint" in baseline.verify_note
    assert baseline.train_commands is None and "No job" in baseline.train_note


def test_reproduce_a_coco_claim_names_eca_data_coco_the_released_detector_and_no_invented_estimate() -> None:
    mask = reproduce(_claim("mask_rcnn_eca_resnet50_fpn-coco-mask_ap"))
    verify = mask.verify_commands or ""
    assert "eca data coco --archives /downloads --out /data/coco --split val" in verify
    assert "val2017.zip, annotations_trainval2017.zip" in verify
    released = detection_result("mask_rcnn_eca_resnet50_fpn").released_checkpoint  # type: ignore[union-attr]
    assert f"{released}.pth" in verify and "github.com/BangguWu/ECANet" in verify
    assert verify.splitlines()[-1] == "eca submit jobs/coco/verify_mask_rcnn_eca_resnet50_fpn.yaml"
    assert "no estimate" in mask.verify_note and "no estimate" in mask.train_note  # the paper gives no throughput
    train = mask.train_commands or ""
    assert "eca data coco --archives /downloads --out /data/coco\n" in train  # both splits: no --split
    assert "eca submit jobs/coco/mask_rcnn_eca_resnet50_fpn.yaml" in train and mask.train_note.startswith("12 epochs.")
    assert "backbone's ImageNet weights at checkpoints/eca_resnet50_k3557.pth.tar" in train  # what training starts from
    for words in ("mask AP", "COCOeval", "5,000 images", "each scored once", "at least 35.4", "paper's 35.6"):
        assert words in mask.rule, words
    baseline = reproduce(_claim("retinanet_se_resnet101_fpn-coco-box_ap"))  # no released weights: train only
    assert baseline.verify_commands is None and "released no checkpoint" in baseline.verify_note
    assert "eca submit jobs/coco/retinanet_se_resnet101_fpn.yaml" in (baseline.train_commands or "")


def test_the_coco_figure_has_table_5s_points_and_ours_and_compare_pairs_only_coco_val(store) -> None:  # type: ignore[no-untyped-def]
    add_reproducer_runs(store)  # a COCO val2017 validation of the released Mask R-CNN ECA-ResNet-50
    compare = queries.compare_frame(build_board(store))
    points = ap_figure.ap_params_frame(compare)
    paper = points[points["source"] == "paper"]
    table5 = {r.model: (r.params_m, r.box_ap[0]) for r in DETECTION_RESULTS if r.model}
    assert dict(zip(paper["model"], zip(paper["params_m"], paper["ap"], strict=True), strict=True)) == table5
    assert set(paper["family"]) == {"Faster R-CNN", "Mask R-CNN", "RetinaNet"}
    assert set(paper["label"]) == {"ResNet", "SE", "ECA"}
    ours = points[points["source"] == "ours"]
    assert ours[["model", "params_m", "ap"]].values.tolist() == [["mask_rcnn_eca_resnet50_fpn", 44.18, 38.93]]
    assert len(ap_figure.ap_params_chart(points).to_dict()["layer"]) == 3  # lines, labels, our squares
    mask = ap_figure.ap_params_frame(compare, "mask_ap")
    assert len(mask[mask["source"] == "paper"]) == 6 and mask[mask["source"] == "ours"]["ap"].tolist() == [35.54]
    # The pairing looks at COCO val2017 results only: none with per-image outcomes there, said so.
    [entry] = paired.paired_comparisons(store, [("mask_rcnn_resnet50_fpn", "mask_rcnn_eca_resnet50_fpn", "coco2017",
                                                 "val")])  # fmt: skip
    assert entry.comparison is None and "on coco2017/val" in (entry.missing or "")


def test_a_job_file_is_read_through_its_extends_chain(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        "job: {command: validate, resources: {nodes: 2, gpus_per_node: 4, time: '01:00:00'}}\n"
        "data: {class_path: x.ImageNetDataModule, init_args: {root: /data/in}}\n")  # fmt: skip
    (tmp_path / "v.yaml").write_text("extends: recipes/base.yaml\njob: {name: v, resources: {time: '03:00:00'}}\n"
                                     "model: {model_name: eca_resnet50, checkpoint: ck/w.pth.tar}\n")  # fmt: skip
    [job] = job_files(tmp_path)
    assert (job.command, job.gpus, job.time, job.dataset, job.data_root, job.checkpoint) == (
        "validate", 8, "03:00:00", "imagenet", "/data/in", "ck/w.pth.tar")


def test_reproductions_list_the_paper_runs_newest_first_and_say_whether_each_counts(store) -> None:  # type: ignore[no-untyped-def]
    add_reproducer_runs(store)
    claims = file_claims()
    listed = queries.reproductions(store, claims)
    assert not listed["dataset"].eq("digits").any()  # the demo is no reproduction of an ImageNet claim
    assert listed["created_at"].is_monotonic_decreasing
    why = dict(zip(listed["id"], listed["why"], strict=True))
    counts = dict(zip(listed["id"], listed["counts"], strict=True))
    assert counts["verify-r50-7f3c9a2e1b"] and why["verify-r50-7f3c9a2e1b"].startswith("counts: verifies top-1 77.48")
    assert counts["fit-r101-5d1e8b7c44"] and "below tolerance for top-1 78.65" in why["fit-r101-5d1e8b7c44"]
    assert not counts["partial-r34-1a2b3c4d"] and "12800 samples counted" in why["partial-r34-1a2b3c4d"]
    assert why["lost-r152-9e8d7c6b5a"].startswith("lost") and why["preempted-mbv2-4c3b2a"].startswith("interrupted")
    seeds = dict(zip(listed["id"], listed["seed"], strict=True))
    assert seeds["verify-r50-7f3c9a2e1b"] == "0"
    everything = queries.reproductions(store, claims, other_datasets=True)
    assert {"demo-live-00aa11bb22", "demo-eca18-bbbb"} <= set(everything["id"])
    one = queries.reproductions(store, claims, claim=_claim("eca_resnet34-imagenet-top1"))
    assert set(one["id"]) == {"partial-r34-1a2b3c4d", "failed-r34-0f0e0d0c"}
    assert len(queries.reproductions(store, claims, other_datasets=True, limit=3)) == 3


def test_run_page_marks_a_partial_evaluation_and_the_runs_page_shows_a_validate_runs_top1(store) -> None:  # type: ignore[no-untyped-def]
    add_reproducer_runs(store)
    detail = queries.run_detail(store, "partial-r34-1a2b3c4d")
    assert detail is not None
    assert detail.partial == ["Partial evaluation: 12,800 of 50,000 ImageNet val images; it does not count toward "
                              "a claim."]  # fmt: skip
    assert detail.results["Counts for a claim"].iloc[0].startswith("does not count")
    assert queries.run_detail(store, "verify-r50-7f3c9a2e1b").partial == []  # type: ignore[union-attr]
    runs = queries.runs_frame(store).set_index("id")
    assert runs.loc["verify-r50-7f3c9a2e1b", "top1"] == pytest.approx(77.43)  # validate: no best_top1, its result
    with Session(store) as session:
        assert session.get(Run, "verify-r50-7f3c9a2e1b").best_top1 is None  # type: ignore[union-attr]


def test_compare_pairs_only_results_on_the_claims_data_set(store) -> None:  # type: ignore[no-untyped-def]
    add_reproducer_runs(store)  # digits runs of resnet18 and eca_resnet18, both with per-image outcomes
    [entry] = paired.paired_comparisons(store, [("resnet18", "eca_resnet18", "imagenet", "val")])
    assert entry.comparison is None and "on imagenet/val" in (entry.missing or "")
    [digits] = paired.paired_comparisons(store, [("resnet18", "eca_resnet18", "digits", "val")])
    assert digits.comparison is not None and digits.dataset == "digits/val"
