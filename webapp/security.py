"""CSRF protection, rate limits, security headers and the session cookie's Secure flag.

Rate limits are counted where ``CRATEDIGGER_RATELIMIT_STORAGE_URL`` says (Redis, shared by
the workers). When that store cannot be reached, Flask-Limiter counts in this process's
memory instead and logs one warning ("falling back to in-memory storage"); it tries the
store again after 1, 2, 4 ... 32 seconds and goes back to it once it answers ("recovered").
An error between a request's check and its count is logged and swallowed: a limit store
must never turn a sign-in into a 500.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

from recsys.settings import Settings
from webapp.art import csp_sources

csrf = CSRFProtect()

#: seconds a rate-limit store may take to connect or answer before it counts as down: a
#: store that hangs (a dropped network) must not hang sign-ins with it
STORE_TIMEOUT_SECONDS = 0.5


# No inline scripts or styles anywhere: every asset is a file the app serves itself, but the
# catalog's covers and previews, from the hosts CRATEDIGGER_MEDIA_HOSTS names.
def content_security_policy(media_sources: str = "") -> str:
    """The policy of every response; ``media_sources`` (:func:`webapp.art.csp_sources`) may
    serve images and audio."""
    extra = f" {media_sources}" if media_sources else ""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data:{extra}",
            f"media-src 'self'{extra}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SessionInterface(SecureCookieSessionInterface):
    """Marks the session cookie Secure whenever the request came over HTTPS (directly or,
    with ``CRATEDIGGER_TRUSTED_PROXIES``, through a proxy that says so)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or _request_is_secure(request)


def _request_is_secure(req: Request) -> bool:
    try:
        return req.is_secure
    except RuntimeError:  # outside a request
        return False


def limiter_config(storage_url: str) -> dict[str, Any]:
    """Flask-Limiter's configuration for a store at ``storage_url``."""
    config: dict[str, Any] = {
        "RATELIMIT_STORAGE_URI": storage_url,
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
    }
    if urlsplit(storage_url).scheme.startswith("redis"):
        config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_connect_timeout": STORE_TIMEOUT_SECONDS,
            "socket_timeout": STORE_TIMEOUT_SECONDS,
        }
    return config


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Install CSRF protection, security headers and the app's rate limiter, and return it.

    One limiter per app, not one per module: Flask-Limiter keeps its store, and whether the
    store is down, on the limiter, and each app must have its own.
    """
    app.session_interface = SessionInterface()
    csrf.init_app(app)
    limiter = Limiter(get_remote_address)
    limiter.init_app(app)
    policy = content_security_policy(csp_sources(settings.media_host_list))

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", policy)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return limiter
