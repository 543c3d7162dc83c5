"""OAuth2 servers on loopback for the tests: a tiny introspection endpoint, and a real
authorization server (``AuthorizationServer``, below, built on authlib's server side).

``IntrospectionServer``: a tiny OAuth2 token-introspection endpoint (RFC 7662) for
Dovecot's oauth2 passdb, whose tokens the tests hand out themselves.

Dovecot POSTs ``token=…`` (``introspection_mode = post``); we answer
``{"active": true, "username": …}`` for a known, unexpired token and
``{"active": false}`` otherwise. Tests add tokens, expire them, and read
``requests`` to see which tokens Dovecot asked about.
"""

from __future__ import annotations

import hmac
import json
import secrets as _secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class IntrospectionServer:
    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}  # token -> user name
        self.requests: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                with owner._lock:
                    owner.requests.append(token)
                    user = owner.tokens.get(token)
                body = json.dumps({"active": True, "username": user} if user else {"active": False})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/introspect"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def grant(self, token: str, user: str) -> None:
        with self._lock:
            self.tokens[token] = user

    def expire(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def __enter__(self) -> IntrospectionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- a real authorization server ---------------------------------------------------
# ``AuthorizationServer`` is an OAuth2 authorization server on loopback built on
# authlib's server side (its Flask integration), serving every grant mailmigrate
# uses, and the RFC 7662 introspection endpoint that Dovecot's oauth2 passdb asks
# (``dovecot_url``), so Dovecot validates exactly the tokens this server issued:
#
# * device authorization grant (RFC 8628): pending until the test approves on the
#   verification page (``/device``, a form as a user's phone would post), denied,
#   expired (``expire_device``), slow_down (``slow_down(n)``: the next n polls);
# * authorization code grant with PKCE (RFC 7636, S256 required): ``/authorize``
#   shows a consent form; the test's HTTP client plays the browser; redirect URIs
#   are loopback ones on any port (RFC 8252 section 7.3);
# * refresh (RFC 6749 section 6), with ``revoke_user``/``revoke`` for a revoked
#   refresh token (answered ``invalid_grant``) and optional rotation;
# * JWT bearer (RFC 7523) as Google's service accounts use it: an RS256 assertion
#   signed with the key ``add_service_account`` returns, ``sub`` the mailbox, the
#   scopes in a ``scope`` claim, domain-wide delegation modelled as a domain;
# * client credentials (RFC 6749 section 4.4) for Microsoft 365 app-only access;
#   Exchange then checks the app's mailbox permission. Dovecot's oauth2 passdb
#   binds a token to one user name, so an app here has one mailbox permission and
#   its tokens introspect as that mailbox.
# * revocation (RFC 7009) for ``auth logout``.
#
# Where it models a provider rather than an RFC, it follows the provider's page:
# source: https://developers.google.com/identity/protocols/oauth2/service-account
#         (the JWT claim set: iss, scope, aud = token URI, exp, iat, sub = the mailbox)
# source: https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
#         (client credentials for IMAP/POP; Add-MailboxPermission grants the mailboxes)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DOVECOT_CLIENT = "dovecot"


@dataclass
class _User:
    name: str

    def get_user_id(self) -> str:
        return self.name


@dataclass
class _Client:
    client_id: str
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    secret: str | None = None
    public_key: Any = None  # JWT bearer: the service account's public key
    delegated_domain: str | None = None
    mailbox: str | None = None  # client credentials: the one mailbox permission

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        wanted = (scope or " ".join(self.scopes)).split()
        return " ".join(s for s in wanted if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 8252 section 7.3: a loopback IP literal, any port.
        parts = urlsplit(redirect_uri)
        return parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port is not None

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and hmac.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret is None:
            return method == "none"
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class _Token:
    access_token: str
    client_id: str
    scope: str
    expires_in: int
    user: str | None = None
    refresh_token: str | None = None
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False
    refresh_revoked: bool = False
    #: Logins this access token has left (None: any); below 0 it is expired.
    uses_left: int | None = None

    def check_client(self, client: _Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        spent = self.uses_left is not None and self.uses_left < 0
        return time.time() > self.issued_at + self.expires_in or spent

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> _User | None:
        return _User(self.user) if self.user else None

    def get_client(self) -> Any:
        return None


@dataclass
class _AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class _DeviceCredential:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user_code(self) -> str:
        return self.user_code

    def is_expired(self) -> bool:
        return time.time() > self.expires_at


def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    return Quiet


class AuthorizationServer:
    """A real OAuth2 authorization server on 127.0.0.1 (authlib + Flask); see above."""

    def __init__(self, *, access_lifetime: int = 3600, rotate_refresh_tokens: bool = False,
                 tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate, key) files to serve https:// (a corporate identity
        provider with a private CA); plain http:// on loopback otherwise."""
        from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskServer
        from authlib.oauth2.rfc6750 import BearerTokenGenerator
        from flask import Flask
        from werkzeug.serving import make_server

        self.access_lifetime = access_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.users: dict[str, _User] = {}
        self.clients: dict[str, _Client] = {}
        self.tokens: dict[str, _Token] = {}  # by access token
        self.by_refresh: dict[str, _Token] = {}
        self.codes: dict[str, _AuthCode] = {}
        self.devices: dict[str, _DeviceCredential] = {}  # by device code
        self.decisions: dict[str, tuple[str, bool]] = {}  # user code -> (user, approved)
        self.slow_downs = 0
        #: When set, every access token issued passes this many Dovecot logins, then
        #: is expired (``limit_uses`` for one token).
        self.logins_per_token: int | None = None
        #: grant_type of every /token request, in order.
        self.token_requests: list[str] = []
        #: (sub, scope) of every JWT bearer assertion accepted.
        self.assertions: list[tuple[str, str]] = []
        #: Every token Dovecot asked about.
        self.introspected: list[str] = []
        self._lock = threading.RLock()
        self.dovecot_secret = _secrets.token_urlsafe(12)
        self.clients[DOVECOT_CLIENT] = _Client(DOVECOT_CLIENT, (), (), secret=self.dovecot_secret)

        app = Flask("mailmigrate-test-authorization-server")
        server = FlaskServer(app, query_client=self.clients.get, save_token=self._save_token)
        server.register_token_generator("default", BearerTokenGenerator(
            access_token_generator=lambda **_: _secrets.token_urlsafe(24),
            refresh_token_generator=lambda **_: _secrets.token_urlsafe(32),
            expires_generator=lambda client, grant_type: self.access_lifetime))
        self._register_grants(server)
        self._routes(app, server)
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_quiet_handler(),
                                 ssl_context=tls)
        self.port = self.httpd.server_port
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.token_url = f"{self.base}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- what Dovecot points at ------------------------------------------------------
    @property
    def dovecot_url(self) -> str:
        """The introspection URL for Dovecot, with its client credentials (basic auth)."""
        return f"http://{DOVECOT_CLIENT}:{self.dovecot_secret}@127.0.0.1:{self.port}/introspect"

    # -- test set-up -----------------------------------------------------------------
    def add_user(self, name: str) -> None:
        with self._lock:
            self.users[name] = _User(name)

    def add_public_client(self, client_id: str, scopes: tuple[str, ...],
                          secret: str | None = None) -> None:
        """An installed app: device grant, authorization code with PKCE, refresh."""
        with self._lock:
            self.clients[client_id] = _Client(
                client_id, (DEVICE_GRANT, "authorization_code", "refresh_token"), scopes,
                secret=secret)

    def add_service_account(self, email: str, domain: str, scopes: tuple[str, ...]) -> dict[str, str]:
        """A Google-style service account with domain-wide delegation for ``domain``;
        returns its JSON key (as Google's console hands it out)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        with self._lock:
            self.clients[email] = _Client(email, (JWT_GRANT,), scopes, public_key=public,
                                          delegated_domain=domain)
        return {"type": "service_account", "project_id": "mailmigrate-test",
                "private_key_id": _secrets.token_hex(8), "private_key": pem,
                "client_email": email, "client_id": str(_secrets.randbelow(10**20)),
                "token_uri": self.token_url}

    def add_app(self, client_id: str, secret: str, mailbox: str, scopes: tuple[str, ...]) -> None:
        """A Microsoft-365-style app registration with one mailbox permission."""
        with self._lock:
            self.clients[client_id] = _Client(client_id, ("client_credentials",), scopes,
                                              secret=secret, mailbox=mailbox)

    # -- test controls ---------------------------------------------------------------
    def approve(self, user_code: str, user: str) -> None:
        with self._lock:
            self.decisions[user_code] = (user, True)

    def deny(self, user_code: str) -> None:
        with self._lock:
            self.decisions[user_code] = ("", False)

    def expire_device(self, user_code: str) -> None:
        with self._lock:
            for cred in self.devices.values():
                if cred.user_code == user_code:
                    cred.expires_at = 0.0

    def slow_down(self, polls: int) -> None:
        """The next ``polls`` device polls answer slow_down (RFC 8628 section 3.5)."""
        with self._lock:
            self.slow_downs = polls

    def revoke_user(self, user: str) -> None:
        """The user revoked the app's access: every refresh and access token of theirs."""
        with self._lock:
            for tok in self.tokens.values():
                if tok.user == user:
                    tok.revoked = tok.refresh_revoked = True

    def limit_uses(self, access_token: str, logins: int) -> None:
        """Let ``access_token`` pass Dovecot ``logins`` more times, then expire: the hour
        running out in the middle of a run, at a point the test chooses."""
        with self._lock:
            self.tokens[access_token].uses_left = logins

    def access_tokens_of(self, user: str) -> list[str]:
        with self._lock:
            return [t.access_token for t in self.tokens.values() if t.user == user]

    # -- authlib wiring --------------------------------------------------------------
    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        user = request.user.name if getattr(request, "user", None) else None
        client = request.client
        if user is None and client.mailbox:  # app-only: the mailbox permission
            user = client.mailbox
        tok = _Token(access_token=token["access_token"], client_id=client.client_id,
                     scope=token.get("scope", ""), expires_in=int(token["expires_in"]), user=user,
                     refresh_token=token.get("refresh_token"), uses_left=self.logins_per_token)
        with self._lock:
            self.tokens[tok.access_token] = tok
            if tok.refresh_token:
                self.by_refresh[tok.refresh_token] = tok

    def _register_grants(self, server: Any) -> None:
        from authlib.oauth2.rfc6749 import grants
        from authlib.oauth2.rfc6749.errors import InvalidScopeError
        from authlib.oauth2.rfc7009 import RevocationEndpoint
        from authlib.oauth2.rfc7523 import JWTBearerGrant
        from authlib.oauth2.rfc7636 import CodeChallenge
        from authlib.oauth2.rfc7662 import IntrospectionEndpoint
        from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant

        owner = self
        public_or_secret = ["none", "client_secret_post", "client_secret_basic"]

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = public_or_secret

            def save_authorization_code(self, code: str, request: Any) -> None:
                with owner._lock:
                    owner.codes[code] = _AuthCode(
                        code, request.client.client_id, request.payload.redirect_uri,
                        request.payload.scope or "", request.user.name,
                        request.payload.data.get("code_challenge"),
                        request.payload.data.get("code_challenge_method"))

            def query_authorization_code(self, code: str, client: _Client) -> _AuthCode | None:
                found = owner.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: _AuthCode) -> None:
                owner.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _AuthCode) -> _User:
                return owner.users[authorization_code.user]

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = public_or_secret
            INCLUDE_NEW_REFRESH_TOKEN = owner.rotate_refresh_tokens

            def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
                tok = owner.by_refresh.get(refresh_token)
                return None if tok is None or tok.refresh_revoked else tok

            def authenticate_user(self, refresh_token: _Token) -> _User | None:
                return owner.users.get(refresh_token.user or "")

            def revoke_old_credential(self, refresh_token: _Token) -> None:
                if owner.rotate_refresh_tokens:
                    refresh_token.refresh_revoked = True

        class ClientCredentials(grants.ClientCredentialsGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

        class GoogleJWTBearer(JWTBearerGrant):
            def resolve_issuer_client(self, issuer: str) -> _Client | None:
                client = owner.clients.get(issuer)
                return client if client is not None and client.public_key is not None else None

            def resolve_client_public_key(self, client: _Client) -> Any:
                from joserfc.jwk import RSAKey

                return RSAKey.import_key(client.public_key)

            def authenticate_user(self, subject: str) -> _User | None:
                return owner.users.get(subject)

            def has_granted_permission(self, client: _Client, user: _User) -> bool:
                return user.name.endswith("@" + str(client.delegated_domain))

            def get_audiences(self) -> list[str]:
                return [owner.token_url]

            def validate_token_request(self) -> None:
                super().validate_token_request()
                # Google reads the scopes from the assertion's "scope" claim.
                _, claims = self.extract_assertion(self.request.form["assertion"])
                scope = str(claims.get("scope", ""))
                if not scope or any(s not in self.request.client.scopes for s in scope.split()):
                    raise InvalidScopeError()
                self.claimed_scope = scope
                with owner._lock:
                    owner.assertions.append((str(claims.get("sub")), scope))

            def create_token_response(self) -> Any:
                token = self.generate_token(scope=self.claimed_scope,
                                            user=self.request.user, include_refresh_token=False)
                self.save_token(token)
                return 200, token, self.TOKEN_RESPONSE_HEADER

        class DeviceGrant(DeviceCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = public_or_secret

            def query_device_credential(self, device_code: str) -> _DeviceCredential | None:
                return owner.devices.get(device_code)

            def query_user_grant(self, user_code: str) -> tuple[_User, bool] | None:
                decision = owner.decisions.get(user_code)
                if decision is None:
                    return None
                name, approved = decision
                return (owner.users.get(name) or _User(name)), approved

            def should_slow_down(self, credential: _DeviceCredential) -> bool:
                with owner._lock:
                    if owner.slow_downs > 0:
                        owner.slow_downs -= 1
                        return True
                return False

        class DeviceEndpoint(DeviceAuthorizationEndpoint):
            CLIENT_AUTH_METHODS = public_or_secret
            EXPIRES_IN = 600
            INTERVAL = 0.01  # the client honours it; the tests need not wait 5 s a poll

            def get_verification_uri(self) -> str:
                return f"{owner.base}/device"

            def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
                with owner._lock:
                    owner.devices[data["device_code"]] = _DeviceCredential(
                        data["device_code"], data["user_code"], client_id, scope or "",
                        time.time() + data["expires_in"])

        class Introspection(IntrospectionEndpoint):
            CLIENT_AUTH_METHODS = ("client_secret_basic",)

            def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
                with owner._lock:
                    owner.introspected.append(token_string)
                    tok = owner.tokens.get(token_string)
                    if tok is not None and tok.uses_left is not None:
                        tok.uses_left -= 1  # one login more; below 0 it is expired
                    return tok

            def check_permission(self, token: _Token, client: _Client, request: Any) -> bool:
                return client.client_id == DOVECOT_CLIENT

            def introspect_token(self, token: _Token) -> dict[str, Any]:
                return {"active": True, "username": token.user, "client_id": token.client_id,
                        "scope": token.scope, "token_type": "Bearer",
                        "exp": int(token.issued_at + token.expires_in)}

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = public_or_secret

            def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
                return owner.by_refresh.get(token_string) or owner.tokens.get(token_string)

            def revoke_token(self, token: _Token, request: Any) -> None:
                token.revoked = token.refresh_revoked = True

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(ClientCredentials)
        server.register_grant(GoogleJWTBearer)
        server.register_grant(DeviceGrant)
        server.register_endpoint(DeviceEndpoint)
        server.register_endpoint(Introspection)
        server.register_endpoint(Revocation)

    def _routes(self, app: Any, server: Any) -> None:
        from authlib.oauth2 import OAuth2Error
        from flask import request

        owner = self

        @app.post("/token")
        def token() -> Any:
            with owner._lock:
                owner.token_requests.append(request.form.get("grant_type", ""))
            return server.create_token_response()

        @app.post("/device_authorization")
        def device_authorization() -> Any:
            return server.create_endpoint_response("device_authorization")

        @app.post("/introspect")
        def introspect() -> Any:
            return server.create_endpoint_response("introspection")

        @app.post("/revoke")
        def revoke() -> Any:
            return server.create_endpoint_response("revocation")

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            if request.method == "GET":
                try:
                    server.get_consent_grant(end_user=None)
                except OAuth2Error as error:
                    return server.handle_error_response(request, error)
                return ('<form method="post"><input name="username">'
                        '<button name="decision" value="allow">Allow</button>'
                        '<button name="decision" value="deny">Deny</button></form>')
            user = owner.users.get(request.form.get("username", ""))
            allowed = request.form.get("decision") == "allow" and user is not None
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return server.handle_error_response(request, error)
            return server.create_authorization_response(grant_user=user if allowed else None,
                                                        grant=grant)

        @app.route("/device", methods=["GET", "POST"])
        def device() -> Any:
            if request.method == "GET":
                return '<form method="post"><input name="user_code"><input name="username"></form>'
            code = request.form.get("user_code", "")
            if request.form.get("decision") == "deny":
                owner.deny(code)
            else:
                owner.approve(code, request.form.get("username", ""))
            return "done"

    def __enter__(self) -> AuthorizationServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

