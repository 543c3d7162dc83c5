"""Signing a user in: the device grant, or the authorization code grant with PKCE.

Device authorization grant (RFC 8628): we print a URL and a code, the user
approves on any device, and we poll the token endpoint at the interval the
server asks for, 5 s more after each ``slow_down`` (section 3.5), until it
answers with tokens, ``access_denied`` or ``expired_token``.

Authorization code grant with PKCE (RFC 7636) and a loopback redirect
(RFC 8252 section 7.3), for providers whose device grant does not cover mail
(Google's): we listen on 127.0.0.1 on a free port, print (and, on a desktop,
open) the authorization URL, and take the one redirect that carries our
``state`` back. The S256 code challenge keeps a code stolen on its way useless.

Both return the token response (a dict with access_token, refresh_token, ...).
The clock, the sleep and the "open a browser" are parameters, so tests drive
them without waiting.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from migrate.config.oauth.client import (
    host_of,
    oauth2_session,
    refused_plainly,
    short,
    token_request,
)
from migrate.config.oauth.provider import OAuthProvider
from migrate.errors import AuthError, ConnectError, MailmigrateError, UsageError

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 section 3.5: without an interval the client waits 5 s; slow_down adds 5 s.
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0


@dataclass(frozen=True)
class SignIn:
    """One sign-in request: who, where, with which client."""

    address: str
    provider: OAuthProvider
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    cafile: str | None = None

    def again(self) -> str:
        return f"run `mailmigrate auth login {self.address}` again"


def _login_refusal(sign_in: SignIn) -> Callable[[str, str], MailmigrateError]:
    def make(code: str, description: str) -> MailmigrateError:
        detail = f" ({description})" if description else ""
        if code == "access_denied":
            return AuthError(f"the sign-in for {sign_in.address} was denied at "
                             f"{sign_in.provider.name}{detail}; {sign_in.again()} to retry")
        if code == "expired_token":
            return AuthError(f"the sign-in code for {sign_in.address} expired before it was "
                             f"approved; {sign_in.again()}")
        if code in ("invalid_client", "unauthorized_client"):
            return AuthError(f"{sign_in.provider.name} does not accept the client ID "
                             f"{sign_in.client_id} ({code}{': ' + description if description else ''}); "
                             "check --client-id (docs/oauth2.md says how to register one)")
        return AuthError(f"{sign_in.provider.name} refused the sign-in for {sign_in.address} "
                         f"({code}{': ' + description if description else ''})")

    return make


# -- device grant ------------------------------------------------------------------
def device_login(sign_in: SignIn, show: Callable[[str], None], *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    provider = sign_in.provider
    url = provider.device_authorization_url
    if url is None:
        raise UsageError(f"provider {provider.id} names no device_authorization_url; "
                         "use --flow code")
    session = oauth2_session(sign_in.client_id, sign_in.client_secret, cafile=sign_in.cafile,
                             scope=" ".join(sign_in.scopes))
    form = {"client_id": sign_in.client_id, "scope": " ".join(sign_in.scopes)}
    with token_request(url, refused_plainly("the device authorization request")):
        resp = session.post(url, data=form, withhold_token=True)
        data = resp.json()
        if isinstance(data, dict) and "error" in data:
            raise _login_refusal(sign_in)(str(data["error"]), short(data.get("error_description")))
        resp.raise_for_status()
    try:
        device_code = str(data["device_code"])
        user_code = str(data["user_code"])
        # "verification_url": the name in Google's and older drafts' responses.
        verify_at = str(data.get("verification_uri") or data["verification_url"])
        interval = float(data.get("interval") or DEFAULT_INTERVAL)
        lifetime = float(data.get("expires_in") or 900)
    except (KeyError, TypeError, ValueError):
        raise ConnectError(f"the authorization server {host_of(url)} sent a device authorization "
                           "response without device_code, user_code or verification_uri") from None
    show(f"To sign in {sign_in.address}, open {verify_at} and enter the code {user_code}")
    if data.get("verification_uri_complete"):
        show(f"(or open {data['verification_uri_complete']} directly)")
    show("Waiting for the approval…")
    deadline = clock() + lifetime
    refusal = _login_refusal(sign_in)
    from authlib.integrations.base_client import OAuthError

    while True:
        sleep(interval)
        with token_request(provider.token_url, refusal):
            try:
                return dict(session.fetch_token(provider.token_url, grant_type=DEVICE_CODE_GRANT,
                                                device_code=device_code))
            except OAuthError as exc:
                if exc.error == "slow_down":
                    interval += SLOW_DOWN_STEP
                elif exc.error != "authorization_pending":
                    raise
        if clock() > deadline:
            raise refusal("expired_token", "")


# -- authorization code grant with PKCE and a loopback redirect ---------------------
class _Redirect:
    """The one redirect we wait for: its query, or an error."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.params: dict[str, str] | None = None
        self.done = threading.Event()


def _listener(redirect: _Redirect) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            ours = hmac.compare_digest(query.get("state", ""), redirect.state)
            if not ours or not ("code" in query or "error" in query):
                self._answer(404, "Not the sign-in you started; you can close this tab.")
                return
            ok = "code" in query
            self._answer(200, "Signed in to mailmigrate; you can close this tab." if ok else
                         "The sign-in did not complete; see the terminal.")
            if redirect.params is None:
                redirect.params = query
                redirect.done.set()

        def _answer(self, status: int, text: str) -> None:
            body = f"<!doctype html><title>mailmigrate</title><p>{text}</p>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # the query holds the code
            pass

    return HTTPServer(("127.0.0.1", 0), Handler)


def code_login(sign_in: SignIn, show: Callable[[str], None], *, open_browser: bool = True,
               timeout: float = 300.0) -> dict[str, Any]:
    provider = sign_in.provider
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
    redirect = _Redirect(state)
    server = _listener(redirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
        session = oauth2_session(sign_in.client_id, sign_in.client_secret, cafile=sign_in.cafile,
                                 scope=" ".join(sign_in.scopes), redirect_uri=redirect_uri,
                                 code_challenge_method="S256")
        url, _ = session.create_authorization_url(provider.authorization_url, state=state,
                                                  code_verifier=verifier,
                                                  login_hint=sign_in.address)
        show(f"To sign in {sign_in.address}, open this page in a browser:")
        show(url)
        if open_browser:
            webbrowser.open(url)
        show("Waiting for the browser to come back…")
        if not redirect.done.wait(timeout):
            raise AuthError(f"no answer from the browser within {timeout:.0f} s; {sign_in.again()}")
    finally:
        server.shutdown()
        server.server_close()
    params = redirect.params or {}
    if "error" in params:
        raise _login_refusal(sign_in)(params["error"], short(params.get("error_description")))
    with token_request(provider.token_url, _login_refusal(sign_in)):
        return dict(session.fetch_token(provider.token_url, grant_type="authorization_code",
                                        code=params["code"], code_verifier=verifier,
                                        redirect_uri=redirect_uri))
