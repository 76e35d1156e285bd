"""Who is asking: web sign-in (a token, or OpenID Connect) and bearer tokens for the API.

Listeners sign in with the token ``cratedigger tokens create --user U`` printed for them;
the session keeps the token's id, so revoking the token signs them out everywhere.

With ``CRATEDIGGER_OIDC_ISSUER`` set, listeners may sign in at that OpenID provider instead
(Authlib's Flask client: the authorization code flow with PKCE S256, state and nonce, the ID
token's signature, issuer, audience and times checked). The claim
``CRATEDIGGER_OIDC_USER_CLAIM`` names an existing listener; nobody is created. The session
then keeps the id of that listener's "OpenID Connect sign-in" token, made on their first
such sign-in and never shown: a listener's principal like a pasted token's (their own
playlist only, never the operator pages), and revoking it ends those sessions too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
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
from joserfc.errors import JoseError
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from recsys.contract import is_valid_id
from recsys.db.models import ApiToken
from recsys.db.repository import get_user
from recsys.db.tokens import (
    LISTENER,
    Principal,
    authenticate,
    authenticate_and_read,
    create_token,
    principal_of,
)
from recsys.settings import Settings
from webapp import db_session, db_transaction, settings_of

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])

#: failed sign-ins are counted per token prefix too: this many first characters, as many as
#: each token keeps in clear (``cratedigger tokens list``; :func:`recsys.db.tokens.create_token`)
TOKEN_PREFIX_LENGTH = 10
#: a longer ``next`` is not one of the app's own paths: ignored
MAX_NEXT_LENGTH = 2000
#: the name of the provider in Authlib's registry (and in its state keys in the session)
OIDC_CLIENT = "oidc"
#: the label of each listener's token that their OpenID Connect sign-ins keep in the session
OIDC_TOKEN_LABEL = "OpenID Connect sign-in"
#: seconds a call to the provider (discovery, keys, token, userinfo) may take
OIDC_TIMEOUT_SECONDS = 10
#: an OAuth error code as RFC 6749 writes them; any other ``error`` value is not shown
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    """The sign-in form, and its post. Failed posts are rate-limited (:func:`init_app`)."""
    next_url = safe_next(request.values.get("next", ""))
    if request.method == "GET":
        if web_principal() is not None:
            return redirect(next_url or url_for("pages.index"), 303)
        return _signin_page(next_url)
    principal = _signin_principal()
    if principal is None:
        return _signin_page(
            next_url, "That token is not valid. Ask for a new one if it was revoked.", 401
        )
    session.clear()  # a fresh session (and CSRF token) at each sign-in
    session.permanent = True
    session["token_id"] = principal.token_id
    if principal.is_operator:
        target = next_url or url_for("operator.overview")
    else:
        target = next_url or url_for("pages.listener", user_id=principal.user_id)
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> Any:
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("auth.signin"), 303)


def _signin_page(next_url: str, error: str | None = None, status: int = 200) -> Any:
    return render_template(
        "signin.html",
        next_url=next_url,
        error=error,
        token_refused=status == 401,
        oidc_provider=oidc_provider_name(settings_of(current_app)),
    ), status


def oidc_provider_name(settings: Settings) -> str | None:
    """The provider's name on the sign-in button; None when OpenID Connect is off."""
    if not settings.oidc_issuer:
        return None
    return settings.oidc_provider_name or urlsplit(settings.oidc_issuer).hostname or "OpenID"


class ProviderError(Exception):
    """The OpenID provider could not be used: unreachable, or its answer is not acceptable.

    ``status`` is the page's status: 400 for a sign-in the browser's request spoils (a
    stale state, a refusal), 403 for a login that names no listener here, 502 for a
    provider that answers wrongly or not at all.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@bp.get("/signin/oidc")
def oidc_signin() -> Any:
    """Off to the provider's sign-in page (a link, not a form: ``form-action 'self'`` of the
    CSP would stop a form's redirect to another origin)."""
    client = _oidc_client()
    next_url = safe_next(request.args.get("next", ""))
    if web_principal() is not None:
        return redirect(next_url or url_for("pages.index"), 303)
    try:
        _checked_metadata(client)
        response = client.authorize_redirect(url_for("auth.oidc_callback", _external=True))
    except ProviderError as exc:
        return _signin_page(next_url, str(exc), exc.status)
    except requests.RequestException as exc:
        return _signin_page(next_url, _unreachable(exc), 502)
    session["oidc_next"] = next_url
    return response


@bp.get("/signin/oidc/callback")
def oidc_callback() -> Any:
    """Back from the provider: check its answer, then sign the listener in."""
    client = _oidc_client()
    next_url = safe_next(str(session.get("oidc_next", "")))
    try:
        user_id = _signed_in_listener(client)
        with db_transaction() as transaction:
            if get_user(transaction, user_id) is None:
                raise ProviderError(
                    f"You signed in at {_provider()} as {user_id!r}, but there is no listener "
                    f"{user_id!r} here, and signing in does not create one. Ask an operator "
                    "to check which name your account maps to.",
                    403,
                )
            token_id = _oidc_token_id(transaction, user_id)
    except ProviderError as exc:
        return _signin_page(next_url, str(exc), exc.status)
    except requests.RequestException as exc:
        return _signin_page(next_url, _unreachable(exc), 502)
    session.clear()  # a fresh session (and CSRF token), without the provider's state
    session.permanent = True
    session["token_id"] = token_id
    return redirect(next_url or url_for("pages.listener", user_id=user_id), 303)


def _oidc_client() -> Any:
    client = current_app.extensions.get("cratedigger_oidc")
    if client is None:
        abort(404)  # OpenID Connect is off: the routes do not exist
    return client


def _provider() -> str:
    return oidc_provider_name(settings_of(current_app)) or "the provider"


def _unreachable(exc: requests.RequestException) -> str:
    log.warning("OpenID provider %s: %s", settings_of(current_app).oidc_issuer, exc)
    return f"{_provider()} cannot be reached or answered with an error. Try again later."


def _checked_metadata(client: Any) -> Mapping[str, Any]:
    """The provider's discovery document, once it names the configured issuer (a document
    of another issuer would have its ID tokens accepted)."""
    metadata: Mapping[str, Any] = client.load_server_metadata()
    issuer = settings_of(current_app).oidc_issuer
    if str(metadata.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        log.error(
            "the discovery document of %s names the issuer %r", issuer, metadata.get("issuer")
        )
        raise ProviderError(
            f"{_provider()} is not configured as this site expects (its discovery document "
            "names another issuer). Tell an operator.",
            502,
        )
    return metadata


def _signed_in_listener(client: Any) -> str:
    """The listener id the provider's answer names.

    Raises
    ------
    ProviderError
        If the answer is a refusal, is not for this browser's sign-in, cannot be verified,
        or names no valid listener id.
    """
    metadata = _checked_metadata(client)
    # RFC 9207: a provider that says it sends ``iss`` must send its own.
    if "iss" in request.args and request.args["iss"] != metadata.get("issuer"):
        raise ProviderError(_start_again("the answer came from another provider"), 400)
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        raise ProviderError(
            _start_again("it was not started in this browser, or it expired or was used"), 400
        ) from None
    except OAuthError as exc:
        raise ProviderError(_refusal(str(exc.error or "")), 400) from None
    except JoseError as exc:
        log.warning("an ID token of %s was refused: %s", metadata.get("issuer"), exc)
        raise ProviderError(_start_again("its ID token could not be verified"), 400) from None
    claims = token.get("userinfo")
    if not claims:  # no ID token: OAuth, not OpenID Connect
        raise ProviderError(f"{_provider()} did not send an ID token. Tell an operator.", 502)
    return _listener_id(client, token, claims)


def _listener_id(client: Any, token: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    claim = settings_of(current_app).oidc_user_claim
    value = claims.get(claim)
    if value is None and client.load_server_metadata().get("userinfo_endpoint"):
        # Providers may keep profile claims out of the ID token (node-oidc-provider's
        # conformIdTokenClaims, Keycloak's mappers): ask the userinfo endpoint.
        info = client.userinfo(token=token)
        if info.get("sub") != claims.get("sub"):  # OpenID Connect Core 5.3.2
            raise ProviderError(_start_again("its userinfo is about someone else"), 502)
        value = info.get(claim)
    if value is None:
        raise ProviderError(
            f"{_provider()} did not say who you are here (its answer has no {claim!r}). "
            "Tell an operator.",
            502,
        )
    if not isinstance(value, str) or not is_valid_id(value):
        raise ProviderError(
            f"You signed in at {_provider()} as {value!r}, which is not a listener name "
            "here; signing in does not create accounts. Ask an operator.",
            403,
        )
    return value


def _start_again(why: str) -> str:
    return f"This sign-in at {_provider()} cannot be used ({why}). Please sign in again."


def _refusal(error: str) -> str:
    if error == "access_denied":
        return f"The sign-in at {_provider()} was cancelled or refused. You are not signed in."
    shown = f" ({error})" if _OAUTH_ERROR_CODE.fullmatch(error) else ""
    return f"{_provider()} did not sign you in{shown}. Please try again."


def _oidc_token_id(db: Session, user_id: str) -> int:
    """The id of the listener's live OpenID Connect sign-in token, made if there is none.
    Its plain value is dropped at once: it serves web sessions only, never the API."""
    token_id = db.scalar(
        select(ApiToken.id)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.role == LISTENER,
            ApiToken.label == OIDC_TOKEN_LABEL,
            ApiToken.revoked_at.is_(None),
        )
        .order_by(ApiToken.id)
        .limit(1)
    )
    if token_id is None:
        row, _ = create_token(db, user_id=user_id, label=OIDC_TOKEN_LABEL)
        token_id = row.id
        log.info("made the OpenID Connect sign-in token #%d of listener %s", token_id, user_id)
    return token_id


def _init_oidc(app: Flask) -> None:
    settings = settings_of(app)
    if not settings.oidc_issuer:
        return
    assert settings.oidc_client_secret is not None  # the settings require it with an issuer
    oauth = OAuth(app)
    app.extensions["cratedigger_oidc"] = oauth.register(
        OIDC_CLIENT,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            "default_timeout": OIDC_TIMEOUT_SECONDS,
        },
    )


def init_app(app: Flask, limiter: Limiter) -> None:
    """Rate-limit failed sign-ins with the app's own ``limiter`` (:mod:`webapp.security`),
    and set up OpenID Connect sign-in when ``CRATEDIGGER_OIDC_ISSUER`` is set.

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
    _init_oidc(app)


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
