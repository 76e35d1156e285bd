"""Who is asking: web sign-in with a token (session cookie) and bearer tokens for the API.

Listeners sign in with the token ``cratedigger tokens create --user U`` printed for them;
the session keeps the token's id, so revoking the token signs them out everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
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
from sqlalchemy import Select

from recsys.db.tokens import Principal, authenticate, authenticate_and_read, principal_of
from webapp import db_session, settings_of
from webapp.security import limiter

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])


def _signin_limit() -> str:
    return settings_of(current_app).signin_rate_limit


def _failed(response: Response) -> bool:
    """Only failed attempts count against the limit."""
    return response.status_code != 303


@bp.route("/signin", methods=["GET", "POST"])
@limiter.limit(_signin_limit, methods=["POST"], deduct_when=_failed)
def signin() -> Any:
    next_url = _safe_next(request.values.get("next", ""))
    if request.method == "GET":
        if web_principal() is not None:
            return redirect(next_url or url_for("pages.index"), 303)
        return render_template("signin.html", next_url=next_url)
    token = request.form.get("token", "").strip()
    principal = authenticate(db_session(), token)
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


def _safe_next(value: str) -> str:
    """Only same-site paths: never ``//host`` or ``https://host`` (an open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:2000]
    return ""


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
