"""The listener pages in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): sign in, read the playlist, thumbs down, the track goes and stays gone; covers,
previews and downloads at desktop and phone width.

The run saves screenshots of the pages in ``build/screenshots/``.
"""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from pathlib import Path

import pytest

from tests.webworld import MEDIA_HOST

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
    assert page.get_by_role("heading", level=1).inner_text() == "Discoveries for Ada"
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


def _png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A real PNG of one colour (the media host's covers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """Half a second of silence as a WAV file (the media host's previews)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def _serve_media(page) -> list[str]:
    """Answer the allowed media host's requests in the browser; return the list of every
    request that went to any other host than the app's."""
    elsewhere: list[str] = []
    png, wav = _png(), _wav()

    def media(route) -> None:
        url = route.request.url
        body, kind = (wav, "audio/wav") if url.endswith(".wav") else (png, "image/png")
        route.fulfill(status=200, body=body, content_type=kind)

    def other(route) -> None:
        elsewhere.append(route.request.url)
        route.abort()

    page.route(f"https://{MEDIA_HOST}/**", media)
    page.route(lambda url: "127.0.0.1" not in url and MEDIA_HOST not in url, other)
    return elsewhere


def _document_width(page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_covers_previews_downloads_at_desktop_and_phone_width(
    page, live_url: str, web_world
) -> None:
    elsewhere = _serve_media(page)
    page.goto(f"{live_url}/signin")
    page.get_by_label("Access token").fill(web_world.u1)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_url}/users/u1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 900})
        page.reload()
        page.wait_for_load_state("networkidle")
        assert _document_width(page) <= width, f"the page overflows at {width} px"
        page.screenshot(path=str(SCREENSHOTS / f"playlist-{width}.png"))
    # At 360 px the length column stays; the position column goes.
    assert page.locator("tr[data-track-id='t00'] td.length").is_visible()
    assert not page.locator("tr[data-track-id='t00'] td.pos").is_visible()
    page.set_viewport_size({"width": 1280, "height": 900})
    images = page.locator("tr[data-track-id] td.art img")
    assert images.count() == 50
    loaded = images.evaluate_all(
        "imgs => imgs.map(i => [i.currentSrc.split('/').slice(2).join('/'), i.naturalWidth])"
    )
    cover, placeholder, allowed = loaded[0], loaded[1], loaded[2]
    assert cover == [f"{MEDIA_HOST}/covers/t00.png", 8]  # the catalog's cover, loaded
    assert placeholder[0].endswith("/art/a2.svg") and placeholder[1] > 0  # drawn by the app
    assert allowed == [f"{MEDIA_HOST}/covers/t02.png", 8]
    duration = page.locator("tr[data-track-id='t00'] audio.preview").evaluate(
        """audio => new Promise((resolve, reject) => {
            audio.addEventListener('loadedmetadata', () => resolve(audio.duration));
            audio.addEventListener('error', () => reject(new Error('no preview')));
            audio.load();
        })"""
    )
    assert abs(duration - 0.5) < 0.05
    assert page.locator("audio.preview").count() == 1  # only t00 has a preview
    with page.expect_download() as download:
        page.get_by_role("link", name="JSPF").click()
    saved = download.value
    assert saved.suggested_filename.endswith(".jspf")
    jspf = json.loads(Path(saved.path()).read_text())
    assert len(jspf["playlist"]["track"]) == 50

    page.get_by_role("link", name="Previous weeks").first.click()
    page.wait_for_url(f"{live_url}/users/u1/history")
    page.set_viewport_size({"width": 360, "height": 800})
    page.wait_for_load_state("networkidle")
    assert _document_width(page) <= 360
    covers = page.locator("ul.weeks li").first.locator("img")
    assert covers.count() == 4
    page.screenshot(path=str(SCREENSHOTS / "history-360.png"))
    assert elsewhere == []  # nothing was asked of another host (t01's cover included)
    assert page.csp_violations == []  # type: ignore[attr-defined]
