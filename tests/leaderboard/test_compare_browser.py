"""The Compare page's paired comparisons in the real leaderboard server, loaded in headless Chromium.

The screenshot is kept in artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from ecaplatform.store.comparison import fmt_p, paired_comparison
from tests.leaderboard_data import RunSpec, add_outcome_run, add_runs, add_seed_runs, image_outcomes

pytestmark = [pytest.mark.browser, pytest.mark.slow]


PLAIN, SE, ECA = image_outcomes(0.7520, seed=21), image_outcomes(0.7671, seed=22), image_outcomes(0.7748, seed=23)


def _paired_runs(engine: Engine) -> None:
    add_outcome_run(engine, "r50-plain", "resnet50", PLAIN)
    add_outcome_run(engine, "r50-se", "se_resnet50", SE)
    add_outcome_run(engine, "r50-eca", "eca_resnet50", ECA)
    add_runs(engine, [RunSpec(id="r50-cbam", model="cbam_resnet50", top1=77.30)])  # recorded without outcomes


@pytest.mark.parametrize("board_url", [_paired_runs], indirect=True)
def test_compare_page_shows_paired_comparisons_and_class_plots(board_url: str, browser_page, screenshot) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    page.goto(f"{board_url}/compare", wait_until="domcontentloaded")
    page.get_by_text("Paired, image by image").first.wait_for(timeout=60_000)
    table = page.locator("table.eca", has_text="McNemar p")
    assert table.count() == 1
    for method, baseline, paper_delta in [("ResNet", PLAIN, "+2.28"), ("SENet", SE, "+0.77")]:
        row = table.locator("tbody tr", has_text=method).first.inner_text()
        c = paired_comparison(baseline, ECA)
        for text in (f"{c.diff:+.2f}", f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]", fmt_p(c.p_value), paper_delta):
            assert text in row, (method, text, row)
    assert page.get_by_text("No paired comparison with CBAM").first.is_visible()

    # The Figure 1 chart and one per-class chart per paired baseline, drawn by Vega.
    page.wait_for_function("document.querySelectorAll('canvas, svg.marks').length >= 3", timeout=60_000)
    page.get_by_text("the 10 classes that differ most").first.wait_for(timeout=60_000)
    table.scroll_into_view_if_needed()  # the page scrolls inside Streamlit's container: show the paired section
    page.wait_for_timeout(1000)  # let the charts finish their first paint before the screenshot
    screenshot(page, "leaderboard_compare_paired.png")


SEED_TOP1 = (77.61, 77.38, 77.27)  # one recipe, three seeds: best 77.61, mean 77.42, sample std 0.17


def _seed_runs(engine: Engine) -> None:
    add_seed_runs(engine, SEED_TOP1)


@pytest.mark.parametrize("board_url", [_seed_runs], indirect=True)
def test_claims_page_shows_the_seed_spread_beside_the_best_value(board_url: str, browser_page, screenshot) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    page.goto(board_url, wait_until="domcontentloaded")
    page.get_by_text("ECA-Net (ResNet-50)").first.wait_for(timeout=60_000)
    row = page.locator("table.eca tbody tr", has_text="ECA-Net (ResNet-50)").first.inner_text()
    assert "77.61" in row and "best of 3 seeds: 77.42 ± 0.17" in row, row
    other = page.locator("table.eca tbody tr", has_text="ECA-Net (ResNet-101)").first.inner_text()
    assert "seeds" not in other  # no run, no spread
    screenshot(page, "leaderboard_claims_seed_spread.png")
