"""Results keep their proportions as exact counts and every reader derives the percentage from them; a result on a
split larger than the claim's is called so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import Engine

from ecaplatform.cli.main import main as eca
from ecaplatform.store import writes
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Result
from tests.leaderboard_data import imagenet_val_fingerprint


def float32_percent(correct: int, evaluated: int) -> float:
    """What torchmetrics hands the recorder: the share in float32, times 100 in float32."""
    return float(np.float32(correct) / np.float32(evaluated) * np.float32(100))


def validate_run(engine: Engine, run_id: str, model: str, correct: int, n: int, **result: object) -> int:
    """A succeeded validate run whose result the recorder's write path stores (float32 percentages)."""
    writes.start_run(engine, run_id, job_name=f"verify-{model}", command="validate", model_name=model)
    fields = {"dataset": "imagenet", "split": "val", "samples_evaluated": n, "fingerprint": imagenet_val_fingerprint(n),
              "top1": float32_percent(correct, n), **result}  # fmt: skip
    result_id = writes.add_result(engine, run_id, model_name=model, **fields)
    writes.finish_run(engine, run_id, "succeeded")
    return result_id


def test_80_of_203_is_kept_exactly_and_every_reader_shows_the_exact_percentage(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert f"{float32_percent(80, 203):.10f}" == "39.4088668823"  # what the store kept before counts
    engine = writer_engine(store_url)
    result_id = validate_run(engine, "partial", "eca_resnet50", 80, 203, top5=float32_percent(150, 203))
    # 38,741 of ImageNet's 50,000: float32 gives 77.48200225830078
    validate_run(engine, "whole", "eca_resnet50", 38_741, 50_000, top5=float32_percent(46_801, 50_000))
    with session_scope(engine) as session:
        result = session.get(Result, result_id)
        assert f"{result.metric_values['top1']:.10f}" == "39.4088669951" and result.metric_values["top1"] == 8000 / 203
        assert result.counts == {"top1": {"correct": 80, "evaluated": 203}, "top5": {"correct": 150, "evaluated": 203}}
        assert (result.top1, result.metrics["top1"]) == (8000 / 203, 8000 / 203)  # what older readers read too
    engine.dispose()

    monkeypatch.setenv("ECA_DB_URL", store_url)
    assert eca(["runs", "--show", "partial"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["metrics"] == {"top1": 8000 / 203, "top5": 15000 / 203}
    assert eca(["claims", "--json", "--model", "eca_resnet50"]) == 0
    claims = {claim["metric"]: claim for claim in json.loads(capsys.readouterr().out)}
    assert (claims["top1"]["verified_value"], claims["top5"]["verified_value"]) == (77.482, 93.602)
    assert eca(["runs"]) == 0
    assert "39.41" in capsys.readouterr().out


def test_a_metric_that_is_no_proportion_stays_a_plain_value(store_url: str) -> None:
    """Detection's box AP is no share of the images: no count; a percentage no whole number of images makes (99%
    of 360 is 356.4) keeps the value it was given rather than one rounded to a count."""
    engine = writer_engine(store_url)
    writes.start_run(engine, "r", job_name="j", command="validate", model_name="eca_resnet50")
    result_id = writes.add_result(engine, "r", model_name="eca_resnet50", dataset="coco", split="val",
                                  samples_evaluated=360, fingerprint={}, metrics={"box_ap": 38.1234567},
                                  top1=60.0, top5=99.0)  # fmt: skip
    with session_scope(engine) as session:
        result = session.get(Result, result_id)
        assert result.metric_values == {"top1": 60.0, "top5": 99.0, "box_ap": 38.1234567}
        assert result.counts == {"top1": {"correct": 216, "evaluated": 360}}
    engine.dispose()


def test_a_result_on_a_split_larger_than_the_claims_is_not_called_a_subset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = writer_engine()
    validate_run(engine, "bigger", "eca_resnet50", 50_000, 60_000)
    engine.dispose()
    assert eca(["claims", "--json", "--model", "eca_resnet50"]) == 0
    [top1] = [claim for claim in json.loads(capsys.readouterr().out) if claim["metric"] == "top1"]
    assert top1["best_other_reason"] == "larger than the claim's split (60000 of 50000 samples)"
