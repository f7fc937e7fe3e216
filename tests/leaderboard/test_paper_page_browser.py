"""The paper's page as a reproducer meets it, in the real server and headless Chromium at 1,280 px: statuses that
never mislead, every table inside the content width, every page reachable by URL, and a path from the claims
table to the command that verifies a claim. One server and one browser for all of it (each costs seconds).

Screenshots are kept in artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import pytest

from tests.leaderboard_data import add_reproducer_runs
from tests.services import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH = 1280
MAIN = '[data-testid="stMainBlockContainer"]'
WAIT_MS = 30_000


def _open(page, url: str, ready: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url, wait_until="domcontentloaded")
    page.locator(ready).first.wait_for(timeout=WAIT_MS)
    _settle(page)


def _settle(page) -> None:  # type: ignore[no-untyped-def]
    """Until the page's elements stop arriving (Streamlit sends them one by one): the same count 0.7 s apart."""
    count = "document.querySelectorAll('[data-testid=\"stElementContainer\"], table.eca tr').length"
    before = -1
    for _ in range(40):
        now = page.evaluate(count)
        if now == before:
            return
        before = now
        page.wait_for_timeout(700)


def _overflowing_tables(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Each table whose right edge is past the main block's content (its box less its right padding)."""
    right = page.locator(MAIN).first.evaluate(
        "e => e.getBoundingClientRect().right - parseFloat(getComputedStyle(e).paddingRight)"
    )
    found = []
    for table in page.locator("table.eca").all():
        box = table.bounding_box()
        if box and box["x"] + box["width"] > right + 1:
            header = table.locator("th").first.inner_text()
            found.append(f"{header}...: table {box['x'] + box['width']:.0f} px > content {right:.0f}")
    return found


def _row(page, label: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    table = page.locator("table.eca", has_text=label).first
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    cells = table.locator("tbody tr:not(.note-row)", has_text=label).first.locator("td").all_inner_texts()
    return dict(zip(headers, (c.strip() for c in cells), strict=True))


@pytest.mark.parametrize("board_url", [add_reproducer_runs], indirect=True)
def test_the_paper_page_at_1280_px_tells_the_truth_and_fits(board_url: str, screenshot) -> None:  # type: ignore[no-untyped-def]
    problems: list[str] = []  # every defect at once, not only the first
    with chromium_page(WIDTH, 900) as page:
        # /claims is a URL of its own, as every page's is.
        _open(page, f"{board_url}/claims", "table.eca")
        page.wait_for_timeout(1000)  # Streamlit's "Page not found" dialog comes with the default page
        if page.get_by_text("Page not found").count():
            problems.append("/claims: Page not found")
        problems += [f"claims page: {p}" for p in _overflowing_tables(page)]
        # Only the digits demo (eca_resnet18) is alive: it can never qualify for an ImageNet claim.
        status = _row(page, "ECA-Net (ResNet-18)")["Status"]
        if status == "Running":
            problems.append("ECA-Net (ResNet-18) ImageNet top-1 shows Running while only a digits demo run is alive")
        # The COCO claims: a section per task, their metric named, AP with one decimal as Tables 5 and 6 print it.
        for section in ("ImageNet classification", "COCO 2017 object detection", "COCO 2017 instance segmentation"):
            if not page.get_by_role("heading", name=section).count():
                problems.append(f"claims page: no section {section!r}")
        boxes = page.locator("table.eca", has_text="Faster R-CNN")
        detection = _row(page, "ECA-Net (Faster R-CNN, ResNet-50)")
        if boxes.count() != 1 or boxes.locator("tbody tr:not(.note-row)").count() != 18 \
                or (detection["Metric"], detection["Claimed"]) != ("box AP", "38.0"):  # fmt: skip
            problems.append(f"detection claims: {boxes.count()} tables, ECA-Net (Faster R-CNN, ResNet-50): {detection}")
        masks = page.locator("table.eca", has_text="mask AP")
        mask = masks.first.locator("tbody tr", has_text="ECA-Net (Mask R-CNN, ResNet-50)").first.inner_text()
        if masks.count() != 1 or "box AP" in masks.first.inner_text() or "35.6" not in mask or "Verified" not in mask:
            problems.append(f"mask claims: {masks.count()} tables; ECA-Net (Mask R-CNN, ResNet-50): {mask!r}")
        screenshot(page, "paper_claims_1280.png")

        _open(page, f"{board_url}/compare", "table.eca")
        paired = page.locator("table.eca", has_text="McNemar p")
        if paired.count() and "digits" in paired.first.inner_text():
            problems.append(f"compare: digits runs paired under an ImageNet claim: {paired.first.inner_text()[:200]}")
        problems += [f"compare page: {p}" for p in _overflowing_tables(page)]
        assert problems == [], "\n".join(problems)

        # From the claims table to the exact command that verifies ECA-ResNet-50, nothing else read.
        _open(page, board_url, "table.eca")
        page.locator("table.eca").first.get_by_role("link", name="ECA-Net (ResNet-50)").first.click()
        page.locator('[data-testid="stCode"]').nth(1).wait_for(timeout=WAIT_MS)
        _settle(page)
        commands = "\n".join(page.locator('[data-testid="stCode"]').all_inner_texts())
        for command in ("eca data imagenet --archives", "eca submit jobs/verify_eca_resnet50.yaml",
                        "eca_resnet50_k3557.pth.tar", "eca submit jobs/eca_resnet50.yaml"):  # fmt: skip
            assert command in commands, command
        assert page.get_by_text("verify-r50-7f3c9a2e1b").count() == 0  # long ids are shortened...
        assert page.locator("a[title='verify-r50-7f3c9a2e1b']").count() >= 1  # ...with the whole id on hover
        assert _overflowing_tables(page) == []
        screenshot(page, "paper_reproduce_1280.png")

        # The paper's reproductions: ImageNet runs, newest first; the digits demo only behind the filter.
        _open(page, f"{board_url}/reproductions", "table.eca")
        listed = page.locator("table.eca").first.inner_text()
        assert "verify-r5" in listed and "fit-r101" in listed and "demo-" not in listed
        assert listed.index("fit-r101") < listed.index("verify-r5")  # newest first
        assert _overflowing_tables(page) == []
        page.get_by_text("Also runs on other data sets").first.click()
        page.locator("table.eca", has_text="demo-liv").first.wait_for(timeout=WAIT_MS)
        _settle(page)
        screenshot(page, "paper_reproductions_1280.png")

        # Run pages: a lost run's advice resumes that run, an interrupted one is no failure, a partial one is marked.
        _open(page, f"{board_url}/run?run=lost-r152-9e8d7c6b5a", "table.eca")
        assert "--ckpt_path last --from_run lost-r152-9e8d7c6b5a" in page.locator(MAIN).inner_text()
        _open(page, f"{board_url}/run?run=preempted-mbv2-4c3b2a", "table.eca")
        text = page.locator(MAIN).inner_text()
        assert "The run failed" not in text and "Interrupted" in text
        _open(page, f"{board_url}/run?run=partial-r34-1a2b3c4d", "table.eca")
        assert "does not count" in page.locator(MAIN).inner_text()
        assert _overflowing_tables(page) == []
