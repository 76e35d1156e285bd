"""The operator pages in real headless Chromium at a desktop width (1280 px) and a phone's
(360 px): nothing widens the document past the screen (wide tables scroll in their own
box), the Content-Security-Policy reports nothing, hostile quarantined text stays text.

Saves ``build/screenshots/operator-<page>-<width>.png`` (the whole page).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.db.engine import make_session_factory
from recsys.db.models import WeeklyRun
from tests.test_operator_pages import (  # noqa: F401 (operator_world is a fixture)
    HOSTILE_RECORD,
    PAGES,
    operator_world,
)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
WIDTHS = (1280, 360)

pytestmark = pytest.mark.browser


def _sign_in(page, live_url: str, token: str) -> None:
    page.goto(f"{live_url}/signin")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/signin" not in page.url


@pytest.mark.usefixtures("operator_world")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_operator_pages_fit_the_screen_without_csp_violations(
    page, live_url: str, web_world
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _sign_in(page, live_url, web_world.operator)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in PAGES.items():
            response = page.goto(f"{live_url}{path}")
            assert response is not None and response.status == 200, name
            assert page.evaluate("document.styleSheets.length") == 2, name  # style + operator
            document_width = page.evaluate("document.documentElement.scrollWidth")
            assert document_width <= width, f"{name} is {document_width} px wide at {width} px"
            # Every chart fits the screen too, and has its text alternative.
            for box in page.locator("figure.chart svg").evaluate_all(
                "svgs => svgs.map(s => [s.getBoundingClientRect().right,"
                " s.querySelector('title').textContent])"
            ):
                assert box[0] <= width + 0.5 and box[1].strip(), name
            shot = SCREENSHOTS / f"operator-{name}-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000
    assert page.csp_violations == []  # type: ignore[attr-defined]
    assert dialogs == []


@pytest.mark.usefixtures("operator_world")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_at_360_px_wide_tables_scroll_in_their_box(page, live_url: str, web_world) -> None:
    _sign_in(page, live_url, web_world.operator)
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto(f"{live_url}/operator/")
    box = page.get_by_role("region", name="Figures of the published weeks")
    sizes = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
    assert sizes[0] > sizes[1]  # the table is wider than the screen: its box scrolls
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    assert box.evaluate("b => b.scrollLeft") > 0
    assert page.evaluate("window.scrollX") == 0
    for path, region in (
        ("/operator/tuning", "Parameter searches"),
        ("/operator/models", "Model versions"),
    ):
        page.goto(f"{live_url}{path}")
        wide = page.get_by_role("region", name=region)
        assert wide.evaluate("b => b.scrollWidth > b.clientWidth"), path
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
    page.goto(f"{live_url}/operator/")
    tiles = page.locator("dl.tiles dd[data-figure]").all_inner_texts()
    assert tiles[:4] == ["3", "80", "2,460", "2"]

    page.goto(f"{live_url}/operator/quarantine")
    records = page.locator("pre.record").all_inner_texts()
    assert HOSTILE_RECORD in records  # shown as the text it is
    assert page.locator("main script, main img").count() == 0
    record_box = page.locator("pre.record").nth(1).bounding_box()
    assert record_box is not None and record_box["x"] + record_box["width"] <= 360
    assert page.csp_violations == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_last_runs_timeline_at_both_widths(
    request, app, page, live_url: str, web_world
) -> None:
    world = request.getfixturevalue("operator_world")
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    with sessions.begin() as session:  # without the failed run, the rerun is the last
        session.delete(session.get(WeeklyRun, world.failed_run))
    _sign_in(page, live_url, web_world.operator)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_url}/operator/")
        timeline = page.get_by_role("img", name=f"Timeline of run #{world.rerun}")
        timeline.scroll_into_view_if_needed()
        box = timeline.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
        assert timeline.locator("rect.span").count() == 7
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shot = SCREENSHOTS / f"operator-timeline-{width}.png"
        page.locator("section[aria-labelledby=last-run]").screenshot(path=str(shot))
        assert shot.stat().st_size > 5_000
    assert page.csp_violations == []  # type: ignore[attr-defined]
