"""The real leaderboard server (`eca leaderboard --port N`) loaded in headless Chromium.

Screenshots are kept in artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import Engine

from tests.leaderboard_data import HOSTILE_RUN_IDS, XSS_TAG, RunSpec, add_hostile_runs, add_runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _typical_runs(engine: Engine) -> None:
    add_runs(
        engine,
        [
            RunSpec(id="run-r50-verify", top1=77.52, top5=93.71, epochs=6, command="fit", job="train-eca_resnet50"),
            RunSpec(
                id="run-r101-subset", model="eca_resnet101", top1=79.1, samples_evaluated=5_000, split_size=5_000
            ),
            RunSpec(id="run-mbv2-live", model="eca_mobilenet_v2", status="running", command="fit", epochs=3),
        ],
    )


@pytest.mark.parametrize("board_url", [_typical_runs], indirect=True)
def test_claims_page_in_a_real_browser_then_the_evidence_run(board_url: str, browser_page, screenshot) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    page.goto(board_url, wait_until="domcontentloaded")
    claims_table = page.locator("table.eca").first
    claims_table.wait_for(timeout=60_000)

    # Claim names and statuses are real text in the DOM, not pixels in a canvas.
    text = claims_table.inner_text()
    for label in ("ECA-Net (ResNet-152)", "ECA-Net (ResNet-101)", "ECA-Net (ResNet-50)", "ECA-Net (MobileNetV2)"):
        assert label in text
    # Each claim's cells by column, compared whole ("Verified" is also a substring of "Unverified").
    headers = [h.strip() for h in claims_table.locator("thead th").all_inner_texts()]
    assert "Status" in headers and "Verified" in headers
    rows = {}
    for label in ("ECA-Net (ResNet-152)", "ECA-Net (ResNet-101)", "ECA-Net (ResNet-50)", "ECA-Net (MobileNetV2)"):
        cells = claims_table.locator("tbody tr:not(.note-row)", has_text=label).locator("td").all_inner_texts()
        rows[label] = dict(zip(headers, (c.strip() for c in cells), strict=True))
    assert (rows["ECA-Net (ResNet-50)"]["Status"], rows["ECA-Net (ResNet-50)"]["Verified"]) == ("Verified", "77.52")
    assert rows["ECA-Net (ResNet-101)"]["Status"] == "Unverified"
    note = claims_table.locator("tr.note-row", has=page.locator("a[title='run-r101-subset']"))  # the id, shortened
    assert note.is_visible() and "a subset" in note.inner_text()
    assert rows["ECA-Net (MobileNetV2)"]["Status"] == "Running"
    assert rows["ECA-Net (ResNet-152)"]["Status"] == "Unverified"
    assert page.get_by_text("1910.03151").first.is_visible()
    screenshot(page, "leaderboard_claims.png")

    # The evidence is one click away: the run page with its provenance and learning curves.
    page.locator("table.eca").first.get_by_role("link", name="run-r50-verify").click()
    page.get_by_text("Learning curves").wait_for(timeout=60_000)
    page.locator("canvas, svg.marks").first.wait_for(timeout=60_000)  # Vega draws the curves
    assert "run=run-r50-verify" in page.url
    assert page.get_by_text("This run is the evidence for the claim").first.is_visible()
    page.wait_for_timeout(1000)  # let the charts finish their first paint before the screenshot
    screenshot(page, "leaderboard_run.png")

    page.goto(f"{board_url}/compare", wait_until="domcontentloaded")
    page.get_by_text("ECA-Net against its baselines").wait_for(timeout=60_000)
    page.locator("canvas, svg.marks").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    screenshot(page, "leaderboard_compare.png")


@pytest.mark.parametrize("board_url", [add_hostile_runs], indirect=True)
def test_html_in_the_store_stays_text_in_a_real_browser(  # type: ignore[no-untyped-def]
    board_url: str, browser_page, screenshot
) -> None:
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    pages = {"": "table.eca", "runs": "canvas", "compare": "table.eca"}
    pages |= {f"run?run={quote(run_id, safe='')}": "table.eca" for run_id in HOSTILE_RUN_IDS}
    for path, ready in pages.items():
        page.goto(f"{board_url}/{path}", wait_until="domcontentloaded")
        page.locator(ready).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # an injected <img src=x> would have failed to load and fired onerror by now
        assert page.locator("img[src='x']").count() == 0, f"/{path}: an <img src=x> from the store is in the DOM"
        assert page.locator("img[src*='tracker.invalid']").count() == 0, f"/{path}: a Markdown image from the store"
        if path.startswith("run?"):
            assert XSS_TAG in page.locator("body").inner_text(), f"/{path}: the hostile text should show as text"
    screenshot(page, "leaderboard_hostile_run.png")
    assert dialogs == []
