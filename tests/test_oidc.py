"""OpenID Connect sign-in against a real provider: node-oidc-provider (tests/oidc/provider.mjs)
with its development login form, started on a free port of 127.0.0.1 for this module.

The app under test runs on a live server whose port is chosen before the provider starts,
since the provider's one client must name the exact redirect URI. Each test puts its own app
(its own database) behind that server. The run saves screenshots of the sign-in page and of
the provider's login page in ``build/screenshots/``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from sqlalchemy import select

from recsys.db.engine import make_session_factory
from recsys.db.models import ApiToken
from recsys.db.tokens import revoke_token
from recsys.settings import ConfigError, Settings, load_settings
from tests.conftest import unavailable
from tests.test_webapp import sign_in
from webapp import create_app
from webapp.auth import OIDC_TOKEN_LABEL

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PROVIDER_DIR = ROOT / "tests" / "oidc"
SCREENSHOTS = ROOT / "build" / "screenshots"
CLIENT_ID = "cratedigger-tests"
CLIENT_SECRET = "a-client-secret-for-tests-only"
PROVIDER_NAME = "Test ID"
#: Logins of the provider and their claims besides sub: "ada" is listener u1 by her
#: preferred_username (and "ada" by sub, no listener); "weird" names no valid listener id.
ACCOUNTS = {"ada": {"preferred_username": "u1"}, "weird": {"preferred_username": "not an id!"}}
#: seconds the provider may take to answer after node starts
PROVIDER_START_TIMEOUT = 30


class _Dispatcher:
    """The live server's WSGI app: each test's own Flask app, set by the ``app`` fixture."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "no app behind the live server"
        return self.app(environ, start_response)


@dataclass
class OidcWorld:
    url: str  # the app's live server
    issuer: str
    dispatcher: _Dispatcher
    timings: dict[str, float] = field(default_factory=dict)


def _installed_provider() -> dict[str, float]:
    """node-oidc-provider under tests/oidc/node_modules (``npm ci`` when it is missing)."""
    timings: dict[str, float] = {}
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("Node.js and npm are not installed (the OpenID provider is node-oidc-provider)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        started = time.monotonic()
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            unavailable(f"npm ci in tests/oidc failed: {result.stderr.strip()[-2000:]}")
        timings["npm ci"] = time.monotonic() - started
    return timings


@pytest.fixture(scope="module")
def oidc_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    from werkzeug.serving import make_server

    timings = _installed_provider()
    dispatcher = _Dispatcher()
    server = make_server("127.0.0.1", 0, dispatcher, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log_path = tmp_path_factory.mktemp("oidc") / "provider.log"
    started = time.monotonic()
    with log_path.open("w") as provider_log:
        provider = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.mjs")],
            cwd=PROVIDER_DIR,
            stdin=subprocess.PIPE,  # the provider exits when this closes
            stdout=subprocess.PIPE,
            stderr=provider_log,
            text=True,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PROVIDER_CLIENT_ID": CLIENT_ID,
                "PROVIDER_CLIENT_SECRET": CLIENT_SECRET,
                "PROVIDER_REDIRECT_URI": f"{url}/signin/oidc/callback",
                "PROVIDER_ACCOUNTS": json.dumps(ACCOUNTS),
            },
        )
    try:
        issuer = _issuer_of(provider, log_path)
        timings["provider start"] = time.monotonic() - started
        world = OidcWorld(url=url, issuer=issuer, dispatcher=dispatcher, timings=timings)
        yield world
        log.info("OpenID provider timings (s): %s", json.dumps(world.timings))
    finally:
        assert provider.stdin is not None
        provider.stdin.close()
        provider.terminate()
        provider.wait(timeout=10)
        server.shutdown()
        thread.join(timeout=10)


def _issuer_of(provider: subprocess.Popen[str], log_path: Path) -> str:
    """The issuer the provider prints, once its discovery document answers."""
    assert provider.stdout is not None
    line = provider.stdout.readline()
    if not line:
        pytest.fail(f"the OpenID provider did not start: {log_path.read_text()[-2000:]}")
    issuer = str(json.loads(line)["issuer"])
    deadline = time.monotonic() + PROVIDER_START_TIMEOUT
    while True:
        try:
            requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2)
            return issuer
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _oidc_settings(base: Settings, issuer: str, **overrides: Any) -> Settings:
    values = {
        **base.model_dump(),
        "oidc_issuer": issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "oidc_user_claim": "preferred_username",
        "oidc_provider_name": PROVIDER_NAME,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def app(web_settings: Settings, oidc_world: OidcWorld):
    """The app of conftest's ``app`` fixture, signing in at the provider, behind the live
    server (so conftest's ``client`` and ``page`` use it)."""
    app = create_app({"TESTING": True}, settings=_oidc_settings(web_settings, oidc_world.issuer))
    oidc_world.dispatcher.app = app
    yield app
    oidc_world.dispatcher.app = None
    app.extensions["cratedigger"]["cache"].close()
    app.extensions["cratedigger"]["engine"].dispose()


@pytest.fixture
def live_url(app, oidc_world: OidcWorld) -> str:
    return oidc_world.url


def _behind_the_live_server(oidc_world: OidcWorld, settings: Settings) -> Any:
    app = create_app({"TESTING": True}, settings=settings)
    oidc_world.dispatcher.app = app
    return app


def _form(html: str) -> tuple[str, str]:
    """The action and the ``prompt`` of the provider page's form."""
    action = re.search(r'<form[^>]*action="([^"]+)"', html)
    prompt = re.search(r'name="prompt" value="(\w+)"', html)
    assert action and prompt, html[:2000]
    return action.group(1), prompt.group(1)


def provider_sign_in(
    http: requests.Session, start: str, login: str, *, cancel: bool = False
) -> requests.Response:
    """Start at the app's ``start`` URL, sign in at the provider as ``login`` and consent (or
    cancel at its login page), with plain form posts; the app's last answer."""
    app_origin = "{0.scheme}://{0.netloc}".format(urlsplit(start))
    response = http.get(start, timeout=10)
    for _ in range(4):
        if response.url.startswith(app_origin):
            return response
        if cancel:
            abort = re.search(r'<a href="([^"]+)">\[ Cancel \]</a>', response.text)
            assert abort, response.text[:2000]
            response = http.get(urljoin(response.url, abort.group(1)), timeout=10)
            continue
        action, prompt = _form(response.text)
        data = {"prompt": prompt}
        if prompt == "login":
            data |= {"login": login, "password": "any password"}
        response = http.post(urljoin(response.url, action), data=data, timeout=10)
    raise AssertionError(f"the provider did not send the browser back: {response.url}")


def _oidc_tokens(app, user_id: str) -> list[ApiToken]:
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        return list(
            session.scalars(
                select(ApiToken).where(
                    ApiToken.user_id == user_id, ApiToken.label == OIDC_TOKEN_LABEL
                )
            )
        )


# --- In Chromium: the whole flow a listener sees ------------------------------------------


@pytest.mark.browser
def test_a_listener_signs_in_at_the_provider_in_chromium(page, live_url, oidc_world) -> None:
    # The provider's development pages @import Google Fonts: nothing leaves this machine.
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if urlsplit(route.request.url).hostname == "127.0.0.1"
            else route.abort()
        ),
    )
    page.goto(f"{live_url}/users/u1")
    assert page.url.startswith(f"{live_url}/signin")
    button = page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}")
    assert page.get_by_label("Access token").is_visible()  # the token form stays
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "signin-oidc.png"))
    started = time.monotonic()
    button.click()
    page.wait_for_url(f"{oidc_world.issuer}/interaction/**")
    page.locator("input[name=login]").fill("ada")
    page.locator("input[name=password]").fill("any password")
    page.screenshot(path=str(SCREENSHOTS / "signin-oidc-provider.png"))
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # consent
    page.wait_for_url(f"{live_url}/users/u1")
    oidc_world.timings["browser flow"] = time.monotonic() - started
    assert "Ada" in page.get_by_role("heading", level=1).inner_text()  # u1's display name
    assert page.csp_violations == []
    # Signed in as the listener u1: their pages only, never an operator's.
    assert page.goto(f"{live_url}/users/u2").status == 404
    assert page.goto(f"{live_url}/operator/runs").status == 404
    assert page.goto(f"{live_url}/users/u1/history").status == 200
    assert (SCREENSHOTS / "signin-oidc.png").stat().st_size > 5_000
    assert (SCREENSHOTS / "signin-oidc-provider.png").stat().st_size > 5_000


# --- With plain HTTP requests through the provider's forms ---------------------------------


def test_the_sign_in_page_offers_the_provider_and_the_token_form(client) -> None:
    html = client.get("/signin?next=/users/u1/history").get_data(as_text=True)
    assert f"Sign in with {PROVIDER_NAME}</a>" in html
    assert 'href="/signin/oidc?next=/users/u1/history"' in html
    assert 'name="token"' in html


def test_without_an_issuer_there_is_no_provider_sign_in(web_settings) -> None:
    app = create_app({"TESTING": True}, settings=web_settings)
    client = app.test_client()
    assert "Sign in with" not in client.get("/signin").get_data(as_text=True)
    assert client.get("/signin/oidc").status_code == 404
    assert client.get("/signin/oidc/callback?code=x&state=y").status_code == 404
    app.extensions["cratedigger"]["engine"].dispose()


def test_the_request_to_the_provider_carries_pkce_state_and_nonce(client, oidc_world) -> None:
    response = client.get("/signin/oidc")
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}" == oidc_world.issuer
    query = {key: values[0] for key, values in parse_qs(target.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20
    assert query["scope"] == "openid profile"
    assert query["redirect_uri"] == "http://localhost/signin/oidc/callback"


def test_a_claim_from_userinfo_signs_the_listener_in_with_a_listener_principal(
    app, live_url
) -> None:
    http = requests.Session()
    landed = provider_sign_in(http, f"{live_url}/signin/oidc?next=/users/u1/history", "ada")
    assert landed.status_code == 200 and landed.url == f"{live_url}/users/u1/history"
    assert http.get(f"{live_url}/users/u2", timeout=10).status_code == 404
    assert http.get(f"{live_url}/operator/runs", timeout=10).status_code == 404
    # Signed in, the provider's sign-in link goes nowhere near the provider.
    assert http.get(f"{live_url}/signin/oidc", timeout=10).url.startswith(live_url)
    # One token per listener carries their provider sign-ins: a second sign-in reuses it.
    tokens = _oidc_tokens(app, "u1")
    assert len(tokens) == 1 and tokens[0].role == "listener"
    again = provider_sign_in(requests.Session(), f"{live_url}/signin/oidc", "ada")
    assert again.url == f"{live_url}/users/u1" and len(_oidc_tokens(app, "u1")) == 1
    # Revoking that token ends the sessions it carries.
    with make_session_factory(app.extensions["cratedigger"]["engine"]).begin() as session:
        revoke_token(session, tokens[0].id)
    after = http.get(f"{live_url}/users/u1", timeout=10)
    assert urlsplit(after.url).path == "/signin"


def test_the_sub_claim_maps_to_the_listener_when_configured(
    web_settings, web_world, oidc_world
) -> None:
    settings = _oidc_settings(web_settings, oidc_world.issuer, oidc_user_claim="sub")
    app = _behind_the_live_server(oidc_world, settings)
    landed = provider_sign_in(requests.Session(), f"{oidc_world.url}/signin/oidc", "u2")
    assert landed.status_code == 200 and landed.url == f"{oidc_world.url}/users/u2"
    app.extensions["cratedigger"]["engine"].dispose()


@pytest.mark.parametrize(
    ("login", "status", "says"),
    [
        ("stranger", 403, "there is no listener 'stranger' here, and signing in does not create"),
        ("weird", 403, "as 'not an id!', which is not a listener name here"),
    ],
)
def test_a_login_that_is_no_listener_gets_a_clear_page_and_no_account(
    app, live_url, login: str, status: int, says: str
) -> None:
    http = requests.Session()
    page = provider_sign_in(http, f"{live_url}/signin/oidc", login)
    assert page.status_code == status and urlsplit(page.url).path == "/signin/oidc/callback"
    assert says in page.text.replace("&#39;", "'")
    assert f"Sign in with {PROVIDER_NAME}" in page.text  # try again from there
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert session.scalar(select(ApiToken).where(ApiToken.label == OIDC_TOKEN_LABEL)) is None
    assert urlsplit(http.get(f"{live_url}/users/u1", timeout=10).url).path == "/signin"


def test_cancelling_at_the_provider_is_access_denied_with_a_clear_page(app, live_url) -> None:
    page = provider_sign_in(requests.Session(), f"{live_url}/signin/oidc", "ada", cancel=True)
    assert page.status_code == 400
    assert f"The sign-in at {PROVIDER_NAME} was cancelled or refused" in page.text
    assert "Traceback" not in page.text


def test_a_callback_with_a_tampered_state_is_refused(client) -> None:
    start = client.get("/signin/oidc")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    response = client.get(f"/signin/oidc/callback?code=abc&state={state}x")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "it was not started in this browser, or it expired or was used" in html
    # Without a state at all, and with a stranger's error text, which is not shown.
    assert client.get("/signin/oidc/callback?code=abc").status_code == 400
    refused = client.get("/signin/oidc/callback?error=access_denied&error_description=Call+555")
    assert refused.status_code == 400
    assert "cancelled or refused" in refused.get_data(as_text=True)
    assert "555" not in refused.get_data(as_text=True)
    other = client.get("/signin/oidc/callback?error=%3Cb%3Ebad&state=x")
    assert other.status_code == 400 and "<b>" not in other.get_data(as_text=True)
    # RFC 9207: an answer that says it comes from another issuer.
    mixed_up = client.get(f"/signin/oidc/callback?code=abc&state={state}&iss=https://evil.example")
    assert mixed_up.status_code == 400
    assert "the answer came from another provider" in mixed_up.get_data(as_text=True)


def test_a_replayed_callback_is_refused(app, live_url) -> None:
    http = requests.Session()
    callbacks: list[str] = []
    http.hooks["response"].append(
        lambda r, *a, **k: callbacks.append(r.url) if "/signin/oidc/callback" in r.url else None
    )
    provider_sign_in(http, f"{live_url}/signin/oidc", "ada")
    assert len(callbacks) == 1
    replay = http.get(callbacks[0], timeout=10)  # the state was used up
    assert replay.status_code == 400 and "Please sign in again" in replay.text


def test_an_unreachable_provider_gives_a_clear_page(web_settings, web_world) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    app = create_app({"TESTING": True}, settings=_oidc_settings(web_settings, closed))
    response = app.test_client().get("/signin/oidc")
    assert response.status_code == 502
    assert f"{PROVIDER_NAME} cannot be reached" in response.get_data(as_text=True)
    app.extensions["cratedigger"]["engine"].dispose()


def test_a_discovery_document_of_another_issuer_is_refused(
    web_settings, web_world, oidc_world
) -> None:
    # The provider answers at localhost too, but its documents name 127.0.0.1.
    elsewhere = oidc_world.issuer.replace("127.0.0.1", "localhost")
    app = create_app({"TESTING": True}, settings=_oidc_settings(web_settings, elsewhere))
    response = app.test_client().get("/signin/oidc")
    assert response.status_code == 502
    assert "names another issuer" in response.get_data(as_text=True)
    app.extensions["cratedigger"]["engine"].dispose()


# --- Tokens stay, and other people's typos do not lock a valid token out ------------------


def test_ten_bad_tokens_from_an_address_do_not_lock_out_a_valid_token(client, web_world) -> None:
    codes = [sign_in(client, f"cd_typo{number}").status_code for number in range(10)]
    assert codes == [401] * 10
    assert sign_in(client, "cd_typo-eleven").status_code == 429  # that address is limited
    assert sign_in(client, web_world.u1).status_code == 303
    assert client.get("/users/u1").status_code == 200


# --- Configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "mentions"),
    [
        ({"CRATEDIGGER_OIDC_ISSUER": "http://id.example.com"}, "CRATEDIGGER_OIDC_ISSUER"),
        ({"CRATEDIGGER_OIDC_ISSUER": "ftp://id.example.com"}, "must be an https:// URL"),
        ({"CRATEDIGGER_OIDC_ISSUER": "https://id.example.com?x=1"}, "CRATEDIGGER_OIDC_ISSUER"),
        ({"CRATEDIGGER_OIDC_ISSUER": "https://"}, "CRATEDIGGER_OIDC_ISSUER"),
        ({"CRATEDIGGER_OIDC_ISSUER": "http://127.0.0.1:99999"}, "has an invalid port"),
        (
            {"CRATEDIGGER_OIDC_ISSUER": "https://id.example.com"},
            "CRATEDIGGER_OIDC_CLIENT_ID must be set",
        ),
        (
            {
                "CRATEDIGGER_OIDC_ISSUER": "https://id.example.com",
                "CRATEDIGGER_OIDC_CLIENT_ID": "c",
            },
            "CRATEDIGGER_OIDC_CLIENT_SECRET must be set",
        ),
        ({"CRATEDIGGER_OIDC_SCOPES": "profile email"}, "CRATEDIGGER_OIDC_SCOPES"),
        ({"CRATEDIGGER_OIDC_USER_CLAIM": "a claim"}, "CRATEDIGGER_OIDC_USER_CLAIM"),
    ],
)
def test_bad_oidc_configuration_is_a_clear_error(
    monkeypatch, variables: dict[str, str], mentions: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(mentions)):
        load_settings()


@pytest.mark.parametrize(
    "issuer",
    ["https://id.example.com/realms/music", "http://127.0.0.1:8080", "http://localhost:9000/"],
)
def test_https_or_loopback_issuers_are_accepted(monkeypatch, issuer: str) -> None:
    monkeypatch.setenv("CRATEDIGGER_OIDC_ISSUER", issuer)
    monkeypatch.setenv("CRATEDIGGER_OIDC_CLIENT_ID", "cratedigger")
    monkeypatch.setenv("CRATEDIGGER_OIDC_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("CRATEDIGGER_OIDC_SCOPES", "openid  profile openid")
    settings = load_settings()
    assert settings.oidc_issuer == issuer
    assert settings.oidc_scopes == "openid profile"
    assert settings.oidc_user_claim == "sub"  # stable and unique, unlike a user name
    assert "s3cret" not in repr(settings)


def test_oidc_is_off_by_default() -> None:
    settings = Settings()
    assert settings.oidc_issuer == "" and settings.oidc_client_secret is None
