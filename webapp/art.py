"""Covers and previews on the pages: the catalog's images and audio load only from the hosts
``CRATEDIGGER_MEDIA_HOSTS`` names (the Content-Security-Policy says the same to the
browser); every other track gets a placeholder cover the app draws itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit

#: The placeholder's size in CSS pixels (square).
PLACEHOLDER_SIZE = 96


def csp_sources(hosts: Sequence[str]) -> str:
    """The policy's sources for ``hosts``: HTTPS unless a host names its scheme."""
    return " ".join(host if "://" in host else f"https://{host}" for host in hosts)


def allowed(url: str | None, hosts: Sequence[str]) -> bool:
    """Whether the pages may load ``url``: HTTPS (or the scheme a host names) on one of
    ``hosts``, a ``*.`` host matching its subdomains (as the policy's wildcard does)."""
    if not url or not hosts:
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    where = f"{host}:{port}" if port is not None else host
    for entry in hosts:
        scheme, _, name = entry.rpartition("://")
        if parts.scheme != (scheme or "https"):
            continue
        if name.startswith("*."):
            if where.endswith(name[1:]):  # ".scdn.co" (and its port, if it names one)
                return True
        elif where == name:
            return True
    return False


def placeholder_svg(seed: str) -> str:
    """A cover for a track without one: two tones picked by ``seed`` (the artist, so that an
    artist's tracks look alike) and a note. Plain SVG, no text from the catalog."""
    digest = hashlib.blake2s(seed.encode(), digest_size=4).digest()
    hue = int.from_bytes(digest[:2], "big") % 360
    other = (hue + 40 + digest[2] % 80) % 360
    size = PLACEHOLDER_SIZE
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
        f'width="{size}" height="{size}">'
        '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="hsl({hue},55%,46%)"/>'
        f'<stop offset="1" stop-color="hsl({other},60%,30%)"/>'
        "</linearGradient></defs>"
        f'<rect width="{size}" height="{size}" fill="url(#g)"/>'
        '<path fill="#fff" fill-opacity=".85" d="M58 22v36.5a11 11 0 1 0 6 9.8V36h12V22z"/>'
        "</svg>"
    )
