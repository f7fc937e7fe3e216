"""Paired comparisons of two evaluations (tracking.comparison): the statistics against scipy and by hand, the
bootstrap's coverage, refusals, `eca compare`, and the leaderboard's Compare page (Streamlit AppTest)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import binom, binomtest
from sqlalchemy import Engine

from ecaplatform.cli.main import main as eca
from ecaplatform.store import writes
from ecaplatform.store.comparison import (
    ComparedResult,
    ComparisonError,
    binomial_lower_tail_numerator,
    check_same_images,
    class_differences,
    fmt_p,
    mcnemar_exact_p,
    paired_comparison,
    per_class_accuracy,
)
from ecaplatform.store.database import writer_engine
from ecaplatform.store.outcomes import Outcomes
from tests.leaderboard_data import (
    RunSpec,
    add_outcome_run,
    add_runs,
    chart_data,
    clear_app_caches,
    create_store,
    html_tables,
    image_outcomes,
    run_app,
)


def outcomes_of(target: list[int], right: list[bool]) -> Outcomes:
    """Outcomes with the given true classes and top-1 correctness (a wrong guess is the next class)."""
    t, r = np.asarray(target), np.asarray(right, dtype=bool)
    return Outcomes(target=t, predicted=np.where(r, t, t + 1), top1=r, top5=r)


def paired_sample(n: int, p_b_only: float, p_a_only: float, seed: int) -> tuple[Outcomes, Outcomes]:
    """n images drawn from a population where B alone is right with p_b_only, A alone with p_a_only, both 0.7."""
    kinds = [p_b_only, p_a_only, 0.7, 0.3 - p_b_only - p_a_only]
    kind = np.random.default_rng(seed).choice(4, size=n, p=kinds)
    target = np.zeros(n, dtype=int)
    return outcomes_of(target, (kind == 1) | (kind == 2)), outcomes_of(target, (kind == 0) | (kind == 2))


# ------------------------------------------------------------------------------------------------ statistics


def test_mcnemar_p_is_scipys_binomial_test_and_stays_exact_where_floats_underflow() -> None:
    rng = np.random.default_rng(7)
    cases = [(0, 0), (1, 0), (0, 1), (3, 3), (2100, 1715), (24_000, 26_000), (24_999, 25_001), (25_000, 25_000)]
    cases += [(int(k), int(m - k)) for m in rng.integers(1, 50_001, 40) for k in [rng.integers(0, m + 1)]]
    for b_only, a_only in cases:
        m = b_only + a_only
        mine = mcnemar_exact_p(b_only, a_only)
        scipy_p = binomtest(b_only, m, 0.5).pvalue if m else 1.0
        if scipy_p > 1e-250:
            assert mine == pytest.approx(scipy_p, rel=1e-9), (b_only, a_only)
        else:  # scipy's pvalue underflows first; its log-CDF still shows the exact value is right
            log_p = math.log(2) + binom.logcdf(min(b_only, a_only), m, 0.5)
            if math.isfinite(log_p) and mine > 0:
                assert math.log(mine) == pytest.approx(log_p, rel=1e-9), (b_only, a_only)
    # 50,000 images, every one discordant: 22,000 to 28,000 is about 1e-158, not 0 and not NaN
    assert mcnemar_exact_p(22_000, 28_000) == pytest.approx(binomtest(22_000, 50_000, 0.5).pvalue, rel=1e-9)
    assert 0 < mcnemar_exact_p(22_000, 28_000) < 1e-100
    # 20,000 to 30,000 is below the smallest double (0.0 is the correctly rounded value), yet the integer it comes
    # from is exact: its log is the log of the summed binomial terms (scipy's log-pmf, summed in log space)
    exact_log = math.log(2 * binomial_lower_tail_numerator(50_000, 20_000)) - 50_000 * math.log(2)
    assert exact_log == pytest.approx(math.log(2) + logsumexp(binom.logpmf(np.arange(20_001), 50_000, 0.5)), rel=1e-12)
    assert mcnemar_exact_p(20_000, 30_000) == 0.0 and fmt_p(0.0) == "< 1e-300"


def test_ten_images_by_hand() -> None:
    # image:        0      1      2      3      4      5      6      7      8      9
    target = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    a = [True, True, False, False, False, True, False, False, False, False]  # 3 right
    b = [True, True, True, True, False, False, True, True, False, False]  # 6 right
    c = paired_comparison(outcomes_of(target, a), outcomes_of(target, b), resamples=2000, seed=3)
    assert (c.n, c.top1_a, c.top1_b, c.diff) == (10, 30.0, 60.0, 30.0)
    # B alone right on images 2, 3, 6, 7; A alone on 5; both on 0, 1; neither on 4, 8, 9
    assert (c.b_only, c.a_only, c.both_right, c.both_wrong, c.discordant) == (4, 1, 2, 3, 5)
    # McNemar: P(X <= 1 | X ~ Bin(5, 1/2)) = (1 + 5) / 32, two-sided 12/32
    assert c.p_value == 12 / 32 == binomtest(1, 5, 0.5).pvalue
    # A resample of 10 images moves B - A in steps of 10 points: the interval's ends are on that grid
    assert c.ci_low < c.diff < c.ci_high and c.ci_low % 10 == 0 == c.ci_high % 10
    # per class: class 0 has A 2/5, B 4/5; class 1 has A 1/5, B 2/5
    assert per_class_accuracy(outcomes_of(target, a)).tolist() == [40.0, 20.0]
    assert per_class_accuracy(outcomes_of(target, b), num_classes=3)[:2].tolist() == [80.0, 40.0]
    assert np.isnan(per_class_accuracy(outcomes_of(target, b), num_classes=3)[2])  # no image of class 2
    top = class_differences(outcomes_of(target, a), outcomes_of(target, b), k=5)
    assert [(d.class_index, d.acc_a, d.acc_b, d.images) for d in top] == [(0, 40.0, 80.0, 5), (1, 20.0, 40.0, 5)]
    assert top[0].diff == 40.0

    same = paired_comparison(outcomes_of(target, a), outcomes_of(target, a))
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_multinomial_bootstrap_is_the_bootstrap_over_images() -> None:
    """Drawing the three counts is the same distribution as drawing n image indices with replacement."""
    a, b = paired_sample(400, 0.12, 0.07, seed=1)
    c = paired_comparison(a, b, resamples=20_000, seed=5)
    rng = np.random.default_rng(11)
    draws = rng.integers(0, a.num_samples, size=(20_000, a.num_samples))
    naive = 100.0 * (b.top1[draws].astype(int) - a.top1[draws].astype(int)).mean(axis=1)
    low, high = np.percentile(naive, [2.5, 97.5])
    step = 100.0 / a.num_samples  # the grid B - A moves on
    assert abs(c.ci_low - low) <= 2 * step and abs(c.ci_high - high) <= 2 * step
    assert paired_comparison(a, b, resamples=20_000, seed=5) == c  # seeded: the same interval every time


def test_the_bootstrap_interval_covers_the_true_difference_and_narrows_with_n() -> None:
    true_diff = 100.0 * (0.08 - 0.05)
    covered = 0
    for seed in range(300):
        a, b = paired_sample(2000, 0.08, 0.05, seed=seed)
        c = paired_comparison(a, b, resamples=2000, seed=seed)
        covered += c.ci_low <= true_diff <= c.ci_high
    assert 0.90 <= covered / 300 <= 0.985, covered  # a 95% interval: 285 expected, 3 standard deviations either way

    def width(n: int) -> float:
        c = paired_comparison(*paired_sample(n, 0.08, 0.05, seed=n))
        return c.ci_high - c.ci_low

    # The paired difference's standard error is sqrt((p10 + p01 - (p10 - p01)^2) / n): 4x the images, half the width
    assert width(40_000) / width(10_000) == pytest.approx(0.5, abs=0.06)
    normal = 2 * 1.96 * 100 * math.sqrt((0.13 - 0.03**2) / 10_000)
    assert width(10_000) == pytest.approx(normal, rel=0.08)


def test_results_of_different_images_are_refused() -> None:
    ten = [0] * 5 + [1] * 5
    with pytest.raises(ComparisonError, match="10 and 9 images"):
        paired_comparison(outcomes_of(ten, [True] * 10), outcomes_of(ten[:9], [True] * 9))
    with pytest.raises(ComparisonError, match="true classes differ at 1 of 10 images"):
        paired_comparison(outcomes_of(ten, [True] * 10), outcomes_of([1, 0, *ten[2:]], [True] * 10))
    with pytest.raises(ComparisonError, match="true classes differ"):
        class_differences(outcomes_of(ten, [True] * 10), outcomes_of(ten[::-1], [True] * 10))

    def side(result_id: int, **fingerprint: object) -> ComparedResult:
        full = {"dataset": "imagenet", "split": "val", "num_samples": 50_000, "hash": "a" * 64, **fingerprint}
        return ComparedResult(result_id, f"run{result_id}", "eca_resnet50", "imagenet", "val", full, None)

    check_same_images(side(1), side(2))
    with pytest.raises(ComparisonError) as refused:
        check_same_images(side(1), side(2, num_samples=5000, hash="b" * 64))
    assert str(refused.value) == (
        "result 1 and result 2 evaluated different images (num_samples, hash differ): imagenet/val, 50,000 images, "
        "hash aaaaaaaaaaaa against imagenet/val, 5,000 images, hash bbbbbbbbbbbb"
    )


# ----------------------------------------------------------------------------------------------- eca compare

FINGERPRINT = {"dataset": "imagenet", "split": "val", "num_samples": 50_000, "num_classes": 1000, "hash": "f" * 64}


def record(engine: Engine, run_id: str, model: str, outcomes: Outcomes | None, *, n: int = 50_000,
           split: str = "val", fingerprint: dict | None = None, top1: float | None = None,
           class_names: list[str] | None = None) -> int:  # fmt: skip
    """A validate run as the recorder writes it (through writes.add_result): succeeded, with one result."""
    writes.start_run(engine, run_id, job_name=f"verify-{model}", command="validate", model_name=model,
                     checkpoint_path=f"/ckpt/{model}.pth")  # fmt: skip
    result_id = writes.add_result(
        engine, run_id, model_name=model, dataset="imagenet", split=split, loss=1.0, samples_evaluated=n,
        top1=outcomes.top1_percent if outcomes else top1, top5=outcomes.top5_percent if outcomes else None,
        fingerprint=fingerprint or FINGERPRINT, outcomes=outcomes, class_names=class_names,
    )  # fmt: skip
    writes.finish_run(engine, run_id, "succeeded")
    return result_id


BASE, ECA = image_outcomes(0.7671, seed=1), image_outcomes(0.7748, seed=2)


@pytest.fixture
def compared_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """SE-ResNet-50 and ECA-ResNet-50 evaluated on the same 50,000 images, with per-image outcomes."""
    monkeypatch.setenv("ECA_DB_URL", store_url)
    engine = writer_engine(store_url)
    record(engine, "r-se", "se_resnet50", BASE)
    record(engine, "r-eca", "eca_resnet50", ECA)
    engine.dispose()
    return store_url


def test_eca_compare_reports_the_difference_its_interval_and_p(
    compared_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = paired_comparison(BASE, ECA)
    assert eca(["compare", "r-se", "r-eca"]) == 0
    out = capsys.readouterr().out
    assert "A: run r-se (se_resnet50), result 1 (the run's newest val result)" in out
    assert "B: run r-eca (eca_resnet50), result 2 (the run's newest val result)" in out
    assert "same images: imagenet/val, 50,000 images, hash ffffffffffff" in out
    assert re.search(rf"top-1 A\s+{expected.top1_a:.2f}%", out)
    assert re.search(rf"top-1 B\s+{expected.top1_b:.2f}%", out)
    interval = f"[{expected.ci_low:+.2f}, {expected.ci_high:+.2f}]"
    assert f"B - A     {expected.diff:+.2f} points, 95% interval {interval}" in out
    assert expected.diff == pytest.approx(77.48 - 76.71) and expected.ci_low < expected.diff < expected.ci_high
    assert f"McNemar   p = {expected.p_value:.3g} (exact, two-sided, on the {expected.discordant:,} discordant" in out
    assert f"images    {expected.b_only:,} only B right, {expected.a_only:,} only A right" in out
    classes = out.split("classes where they differ most")[1].splitlines()[3:]
    top5 = class_differences(BASE, ECA, 5)
    assert [int(line.split()[0]) for line in classes] == [c.class_index for c in top5]
    assert [line.split()[-1] for line in classes] == [f"{c.diff:+.1f}" for c in top5]

    assert eca(["compare", "r-se", "r-eca", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["diff"], report["ci95"], report["mcnemar_p"]) == (
        expected.diff, [expected.ci_low, expected.ci_high], expected.p_value
    )
    assert (report["b_only"], report["a_only"], report["n"]) == (expected.b_only, expected.a_only, 50_000)
    assert report["a"]["result_id"] == 1 and report["b"]["model_name"] == "eca_resnet50"
    assert [c["class_index"] for c in report["classes"]] == [c.class_index for c in top5]

    assert eca(["compare", "--result", "2", "1", "--json"]) == 0  # result ids, the other way round
    swapped = json.loads(capsys.readouterr().out)
    assert swapped["diff"] == -expected.diff and swapped["a"]["chosen"] == "given by id"


def test_eca_compare_uses_the_newest_val_result_and_reads_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("ECA_DB_URL", url)
    engine = writer_engine(url)
    record(engine, "r-base", "resnet50", image_outcomes(0.752, seed=3, n=5000, classes=100),
           n=5000, fingerprint={**FINGERPRINT, "num_samples": 5000})  # fmt: skip
    record(engine, "r-eca", "eca_resnet50", image_outcomes(0.70, seed=4, n=5000, classes=100),
           n=5000, fingerprint={**FINGERPRINT, "num_samples": 5000})  # fmt: skip
    newer = image_outcomes(0.775, seed=5, n=5000, classes=100)
    writes.add_result(engine, "r-eca", model_name="eca_resnet50", dataset="imagenet", split="val", loss=1.0,
                      samples_evaluated=5000, top1=newer.top1_percent, top5=newer.top5_percent,
                      fingerprint={**FINGERPRINT, "num_samples": 5000}, outcomes=newer)  # fmt: skip
    writes.add_result(engine, "r-eca", model_name="eca_resnet50", dataset="imagenet", split="test", loss=1.0,
                      samples_evaluated=10, top1=50.0, top5=None, fingerprint={})  # fmt: skip; newest, not val
    engine.dispose()
    path = tmp_path / "store.db"
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    # In a fresh interpreter: `eca compare` imports no torch (it reads the store as `eca runs` does).
    script = ("import sys; from ecaplatform.cli.main import main; "
              "code = main(['compare', 'r-base', 'r-eca', '--json']); "
              "print('torch' in sys.modules, code)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *report, last = done.stdout.splitlines()
    assert last == "False 0"
    assert json.loads("\n".join(report))["b"]["result_id"] == 3  # the newer val result, not the test one after it
    assert json.loads("\n".join(report))["diff"] == paired_comparison(
        image_outcomes(0.752, seed=3, n=5000, classes=100), newer
    ).diff
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["compare", "r-se", "nope"], "eca compare: no run with id 'nope'; `eca runs` lists the ids"),
        (["compare", "r-se", "r-empty"], "eca compare: run r-empty has no result (status running)"),
        (["compare", "r-se", "r-test"], "eca compare: run r-test has no val result (only test)"),
        (["compare", "r-se", "r-old"], "eca compare: result 3 of run r-old was recorded before per-image outcomes "
                                       "were kept; re-run `eca validate` on its checkpoint (/ckpt/resnet50.pth)"),
        (["compare", "r-subset", "r-se"], "eca compare: result 4 and result 1 evaluated different images "
                                          "(num_samples, hash differ): imagenet/val, 5,000 images, hash 555555555555 "
                                          "against imagenet/val, 50,000 images, hash ffffffffffff"),
        (["compare", "--result", "1", "99"], "eca compare: no result with id 99"),
        (["compare", "r-se", "r-partial"], "eca compare: result 5 of run r-partial is a partial evaluation (128 of "
                                           "50,000 images): per-image outcomes are kept only for the whole split"),
    ],
    ids=["unknown run", "no result", "no val result", "no outcomes", "different images", "unknown result",
         "partial"],  # fmt: skip
)
def test_eca_compare_says_in_one_line_why_it_cannot_compare(
    argv: list[str], problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("ECA_DB_URL", url)
    engine = writer_engine(url)
    record(engine, "r-se", "se_resnet50", BASE)  # result 1
    writes.start_run(engine, "r-empty", job_name="j", command="validate", model_name="resnet50")
    record(engine, "r-test", "resnet50", None, split="test", top1=70.0)  # result 2
    record(engine, "r-old", "resnet50", None, top1=75.2)  # result 3: recorded before outcomes were kept
    record(engine, "r-subset", "resnet50", image_outcomes(0.75, seed=9, n=5000, classes=100), n=5000,
           fingerprint={**FINGERPRINT, "num_samples": 5000, "hash": "5" * 64})  # fmt: skip
    record(engine, "r-partial", "resnet50", None, n=128, top1=50.0)  # result 5: limit_val_batches, 128 images
    engine.dispose()
    assert eca(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(problem) and captured.err.count("\n") == 1 and captured.out == ""


BASE_5000, OTHER_5000 = (image_outcomes(top1, seed=seed, n=5000, classes=100) for top1, seed in ((0.75, 1), (0.77, 2)))


def test_eca_compare_of_two_equal_results_says_no_image_differs(capsys: pytest.CaptureFixture[str]) -> None:
    engine = writer_engine()
    for run_id in ("a", "same"):
        record(engine, run_id, "resnet50", BASE_5000, n=5000, fingerprint={**FINGERPRINT, "num_samples": 5000})
    engine.dispose()
    assert eca(["compare", "a", "same"]) == 0
    out = capsys.readouterr().out
    assert "No image differs: A and B are right at top-1 on the same 3,750 images." in out
    assert "differ most" not in out and "+0.0\n" not in out


def test_eca_compare_names_classes_by_their_folder_names(capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"folder-{i:03d}" for i in range(100)]
    base, other, fingerprint = BASE_5000, OTHER_5000, {**FINGERPRINT, "num_samples": 5000}
    engine = writer_engine()
    for run_id, outcomes in (("a", base), ("other", other)):
        record(engine, run_id, "resnet50", outcomes, n=5000, fingerprint=fingerprint, class_names=names)
    record(engine, "unnamed", "resnet50", other, n=5000, fingerprint=fingerprint)  # recorded without names
    engine.dispose()
    expected = class_differences(base, other, 5)
    assert eca(["compare", "a", "other"]) == 0
    rows = capsys.readouterr().out.split("classes where they differ most")[1].splitlines()[3:]
    assert [row.split()[0] for row in rows] == [names[c.class_index] for c in expected] and len(rows) == 5
    assert eca(["compare", "a", "other", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["class_name"] for c in report["classes"]] == [names[c.class_index] for c in expected]
    assert eca(["compare", "unnamed", "a"]) == 0  # names from either side
    assert capsys.readouterr().out.split("differ most")[1].splitlines()[3].split()[0].startswith("folder-")


def test_class_differences_leave_out_classes_where_the_two_are_equal() -> None:
    a = outcomes_of([0, 0, 1, 1, 2, 2], [True, False, True, False, True, True])
    b = outcomes_of([0, 0, 1, 1, 2, 2], [False, True, True, True, True, True])  # class 0: same share, other image
    assert [c.class_index for c in class_differences(a, b)] == [1]
    assert class_differences(a, a) == []


def test_eca_compare_without_a_store_says_how_one_is_made(capsys: pytest.CaptureFixture[str]) -> None:
    assert eca(["compare", "a", "b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eca compare: ") and "eca db upgrade" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ leaderboard page


def test_compare_page_shows_paired_differences_next_to_the_papers() -> None:
    clear_app_caches()
    engine = create_store(os.environ["ECA_DB_URL"])
    plain, se = image_outcomes(0.7520, seed=11), image_outcomes(0.7671, seed=12)
    eca_out = image_outcomes(0.7748, seed=13)
    add_outcome_run(engine, "r50-plain", "resnet50", plain)
    add_outcome_run(engine, "r50-se", "se_resnet50", se)
    add_outcome_run(engine, "r50-eca", "eca_resnet50", eca_out)
    add_runs(engine, [RunSpec(id="r50-cbam", model="cbam_resnet50", top1=77.30)])  # recorded without outcomes
    add_outcome_run(engine, "r18-plain", "resnet18", image_outcomes(0.704, seed=14))  # ECA-ResNet-18 has none
    engine.dispose()

    at = run_app("views/compare.py", {})
    paired = next(t for t in html_tables(at) if t and "McNemar p" in t[0])
    rows = {row["ECA-Net vs"][0]: row for row in paired}
    assert list(rows) == ["ResNet", "SENet"]
    for method, baseline, run_id, paper_delta in [("ResNet", plain, "r50-plain", 77.48 - 75.20),
                                                  ("SENet", se, "r50-se", 77.48 - 76.71)]:  # fmt: skip
        expected = paired_comparison(baseline, eca_out)
        row = rows[method]
        assert row["Images"][0] == "imagenet/val, 50,000"
        assert row["Top-1 base → ECA"][0] == f"{expected.top1_a:.2f} → {expected.top1_b:.2f}"
        assert row["Δ ours"][0] == f"{expected.diff:+.2f}"
        assert row["95% interval"][0] == f"[{expected.ci_low:+.2f}, {expected.ci_high:+.2f}]"
        assert row["McNemar p"][0] == fmt_p(expected.p_value)
        assert row["Discordant"][0] == f"{expected.b_only:,} / {expected.a_only:,}"
        assert row["Δ paper"][0] == f"{paper_delta:+.2f}"
        inside = expected.ci_low <= paper_delta <= expected.ci_high
        assert row["Paper Δ inside"][0] == ("yes" if inside else "no")
        assert row["Runs"][1] == [f"run?run={run_id}", "run?run=r50-eca"]

    captions = [c.value for c in at.caption]
    missing = "No paired comparison with CBAM\\: no result with per-image outcomes for cbam\\_resnet50 on imagenet/val."
    assert missing in captions
    r18 = [c for c in captions if "eca\\_resnet18" in c]
    assert len(r18) == 1 and "ResNet, SENet" in r18[0]  # one line for the backbone, not one per baseline

    class_charts = [frame for frame in chart_data(at) if "top1_eca" in frame.columns]
    assert len(class_charts) == 2
    top10 = class_differences(plain, eca_out, 10)
    assert class_charts[0]["class"].tolist() == [c.class_index for c in top10]
    assert class_charts[0]["diff"].tolist() == pytest.approx([c.diff for c in top10])
