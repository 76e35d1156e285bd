"""The listener pages in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): sign in, read the playlist, thumbs down, the track goes and stays gone.

The run saves a screenshot of the playlist page in ``build/screenshots/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"

pytestmark = pytest.mark.browser


def _rows(page) -> list[str]:
    return page.locator("tr[data-track-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.trackId)"
    )


def test_sign_in_read_thumb_down_and_reload(page, live_url: str, web_world, database_url) -> None:
    page.goto(f"{live_url}/users/u1")
    assert page.url.startswith(f"{live_url}/signin")  # anonymous: sign in first
    page.get_by_label("Access token").fill(web_world.u1)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_url}/users/u1")
    assert page.get_by_role("heading", level=1).inner_text() == "Ada"
    rows = _rows(page)
    assert len(rows) == 50 and rows[:2] == ["t00", "t01"]
    assert "Bj\u00f6rk & <Friends>" in page.locator("tr[data-track-id='t00']").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"playlist-{database_url.split(':')[0].split('+')[0]}.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000

    page.get_by_role("button", name="Thumbs down: Song 3", exact=True).click()
    page.wait_for_load_state()
    assert "t03" not in _rows(page) and len(_rows(page)) == 49
    assert "is gone" in page.get_by_role("status").inner_text()
    page.reload()
    assert "t03" not in _rows(page) and len(_rows(page)) == 49

    page.get_by_role("button", name="Thumbs up: Song 4", exact=True).click()
    page.wait_for_load_state()
    pressed = page.get_by_role("button", name="Thumbs up: Song 4", exact=True).get_attribute(
        "aria-pressed"
    )
    assert pressed == "true"
    # Pressed again, the thumb is taken back; the removed track comes back with "Undo".
    page.get_by_role("button", name="Thumbs up: Song 4", exact=True).click()
    page.wait_for_load_state()
    assert "taken back" in page.get_by_role("status").inner_text()
    pressed = page.get_by_role("button", name="Thumbs up: Song 4", exact=True).get_attribute(
        "aria-pressed"
    )
    assert pressed == "false"
    page.get_by_role("button", name="Bring back: Song 3", exact=True).click()
    page.wait_for_load_state()
    assert "t03" in _rows(page) and len(_rows(page)) == 50
    page.get_by_role("button", name="Thumbs down: Song 3", exact=True).click()
    page.wait_for_load_state()
    assert "t03" not in _rows(page)

    page.get_by_role("link", name="Previous weeks").first.click()
    page.wait_for_url(f"{live_url}/users/u1/history")
    assert page.get_by_role("link", name="Week of 9 November 2026").is_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_url}/signin")
    page.goto(f"{live_url}/users/u1")
    assert page.url.startswith(f"{live_url}/signin")
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_another_listeners_page_is_not_found(page, live_url: str, web_world) -> None:
    page.goto(f"{live_url}/signin")
    page.get_by_label("Access token").fill(web_world.u2)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_url}/users/u2")
    response = page.goto(f"{live_url}/users/u1")
    assert response is not None and response.status == 404
    assert "404" in page.get_by_role("heading", level=1).inner_text()


def test_a_wrong_token_says_so(page, live_url: str) -> None:
    page.goto(f"{live_url}/signin")
    page.get_by_label("Access token").fill("cd_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Access token").get_attribute("aria-invalid") == "true"
