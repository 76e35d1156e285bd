"""Who is asking: web sign-in with a token (session cookie) and bearer tokens for the API.

Listeners sign in with the token ``cratedigger tokens create --user U`` printed for them;
the session keeps the token's id, so revoking the token signs them out everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy import Select

from recsys.db.tokens import Principal, authenticate, authenticate_and_read, principal_of
from webapp import db_session, settings_of

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])

#: failed sign-ins are counted per token prefix too: this many first characters, as many as
#: each token keeps in clear (``cratedigger tokens list``; :func:`recsys.db.tokens.create_token`)
TOKEN_PREFIX_LENGTH = 10
#: a longer ``next`` is not one of the app's own paths: ignored
MAX_NEXT_LENGTH = 2000


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    """The sign-in form, and its post. Failed posts are rate-limited (:func:`init_app`)."""
    next_url = safe_next(request.values.get("next", ""))
    if request.method == "GET":
        if web_principal() is not None:
            return redirect(next_url or url_for("pages.index"), 303)
        return render_template("signin.html", next_url=next_url)
    principal = _signin_principal()
    if principal is None:
        return render_template(
            "signin.html",
            next_url=next_url,
            error="That token is not valid. Ask for a new one if it was revoked.",
        ), 401
    session.clear()  # a fresh session (and CSRF token) at each sign-in
    session.permanent = True
    session["token_id"] = principal.token_id
    if principal.is_operator:
        target = next_url or url_for("operator.runs")
    else:
        target = next_url or url_for("pages.listener", user_id=principal.user_id)
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> Any:
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("auth.signin"), 303)


def init_app(app: Flask, limiter: Limiter) -> None:
    """Rate-limit failed sign-ins with the app's own ``limiter`` (:mod:`webapp.security`).

    Failures count per client address and per token prefix, each against
    ``CRATEDIGGER_SIGNIN_RATE_LIMIT``. A valid token is exempt from both: at 256 random bits
    it cannot have been guessed, so refusing it would only lock its listener out because of
    other people's typos from the same address (an office, a NAT) or against the same prefix.
    """
    view: Callable[..., Any] = app.view_functions["auth.signin"]
    for key in (_address_key, _token_prefix_key):
        view = limiter.limit(
            _signin_limit,
            key_func=key,
            methods=["POST"],
            exempt_when=_valid_token,
            deduct_when=_failed,
        )(view)
    app.view_functions["auth.signin"] = view


@bp.before_request
def _check_the_token() -> None:
    # Before the rate limit, which exempts a valid token. Here, not in the limit's exemption
    # check: the limiter takes any error there for its storage failing.
    if request.endpoint == "auth.signin" and request.method == "POST":
        g.signin_principal = authenticate(db_session(), request.form.get("token", "").strip())


def _signin_principal() -> Principal | None:
    return cast(Principal | None, g.get("signin_principal"))


def _valid_token() -> bool:
    return _signin_principal() is not None


def _signin_limit() -> str:
    return settings_of(current_app).signin_rate_limit


def _address_key() -> str:
    return f"address:{get_remote_address()}"


def _token_prefix_key() -> str:
    return f"token:{request.form.get('token', '').strip()[:TOKEN_PREFIX_LENGTH]}"


def _failed(response: Response) -> bool:
    """Only a refused token counts against the limits (not a database outage's 503)."""
    return response.status_code == 401


# What browsers drop before they parse a URL (the WHATWG URL standard): C0 controls and
# spaces at either end, and tabs and newlines anywhere; then a backslash is a slash.
_URL_TRIMMED = "".join(map(chr, range(0x21)))
_URL_DROPPED = dict.fromkeys(map(ord, "\t\n\r"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_next(value: str) -> str:
    """``value`` if it is a path of this site, to a browser too; "" for anything else.

    A browser drops tabs and newlines anywhere before it parses a URL, so
    ``/\\t/evil.example`` is ``//evil.example`` to it: another host. So a value that a
    browser would read differently from how it is written (:func:`_as_browsers_read`) is
    refused, and so is one that, percent-decoded, reads as another host (``/%2F/host``,
    ``/%09/host``): a proxy or framework that decodes must not see one either. What is kept
    starts with one slash, not two, and has no control characters; anything else (a scheme
    such as ``https:`` or ``javascript:``, ``//host``, ``\\\\host``, a value longer than
    :data:`MAX_NEXT_LENGTH`) gives "", and the caller falls back to its default page.
    """
    if len(value) > MAX_NEXT_LENGTH or _as_browsers_read(value) != value:
        return ""
    decoded = value
    for _ in range(3):  # nested encodings (%252F) too, a few levels deep
        decoded, previous = _as_browsers_read(unquote(decoded)), decoded
        if decoded == previous:
            break
    return value if _is_local_path(value) and _is_local_path(decoded) else ""


def _as_browsers_read(value: str) -> str:
    return value.strip(_URL_TRIMMED).translate(_URL_DROPPED).replace("\\", "/")


def _is_local_path(path: str) -> bool:
    return path.startswith("/") and not path.startswith("//") and not _CONTROL.search(path)


def web_principal() -> Principal | None:
    """The signed-in principal of this browser session, or None."""
    if "web_principal" not in g:
        token_id = session.get("token_id")
        principal = None
        if isinstance(token_id, int):
            principal = principal_of(db_session(), token_id)
            if principal is None:
                session.clear()  # the token was revoked
        g.web_principal = principal
    return cast(Principal | None, g.web_principal)


def page_login_required(view: F) -> F:
    """Pages: anonymous visitors go to the sign-in page, then come back."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if web_principal() is None:
            return redirect(url_for("auth.signin", next=request.full_path.rstrip("?")), 303)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def operator_page(view: F) -> F:
    """Operator pages: sign-in first; a listener gets 404, as for any page not theirs."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = web_principal()
        if principal is None:
            return redirect(url_for("auth.signin", next=request.full_path.rstrip("?")), 303)
        if not principal.is_operator:
            abort(404)
        return view(*args, **kwargs)

    return cast(F, wrapper)


class Unauthorized(Exception):
    """No valid bearer token (the API answers 401)."""


class Forbidden(Exception):
    """A valid token without the right to an operator route (the API answers 403)."""


def bearer_principal() -> Principal:
    """The principal of the request's ``Authorization: Bearer`` token.

    Raises
    ------
    Unauthorized
        If the header is missing, malformed or names an unknown or revoked token.
    """
    return checked(authenticate(db_session(), bearer_token()))


def bearer_principal_and_read(
    companion: Select[Any], params: dict[str, Any]
) -> tuple[Principal, tuple[Any, ...] | None]:
    """:func:`bearer_principal` and the first row of ``companion``, in one round trip (see
    :func:`recsys.db.tokens.authenticate_and_read`). The caller authorises the read."""
    principal, row = authenticate_and_read(db_session(), bearer_token(), companion, params)
    return checked(principal), row


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an API token as 'Authorization: Bearer <token>'")
    return token.strip()


def checked(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthorized("the API token is not valid or was revoked")
    return principal


def require_operator(principal: Principal) -> None:
    if not principal.is_operator:
        raise Forbidden("this route is for operators; listener tokens cannot use it")


def _principal_for_templates() -> Principal | None:
    try:
        return web_principal()
    except Exception:  # the error page of a database outage must still render
        return None


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"current_principal": _principal_for_templates}
