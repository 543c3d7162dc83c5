"""Admin grants: tokens for every mailbox of a domain from one configuration.

Google Workspace: a service account with domain-wide delegation. Its JSON key
signs one JWT per mailbox (the JWT bearer grant, RFC 7523, ``sub`` = the
mailbox, the scopes in the ``scope`` claim) and Google's token endpoint trades
it for an access token for that mailbox.

Microsoft 365: an app registration with ``IMAP.AccessAsApp`` / ``POP.AccessAsApp``
and a client secret. The client credentials grant gives one app token that
serves every mailbox the app was given (``Add-MailboxPermission``); the
mailbox is named in the SASL XOAUTH2 login only.

A service is configured once (``mailmigrate auth service add NAME``) as
``<config dir>/oauth2/services/NAME.toml`` and named ``oauth2-service:NAME`` by
a saved job or a fleet ledger. That file holds ids and paths, no secret; the
key file and the secret file are read with permission checks at each use.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrate.config.endpoints import TokenGetter
from migrate.config.jobs import atomic_write, check_name, read_named_toml
from migrate.config.oauth.client import (
    access_token_of,
    assertion_session,
    host_of,
    oauth2_session,
    token_request,
)
from migrate.config.oauth.store import oauth_dir, read_private, usable_keyring
from migrate.errors import AuthError, MailmigrateError, UsageError

SERVICE_KINDS = ("google", "microsoft")
# source: https://developers.google.com/identity/protocols/oauth2/service-account
#         (JWT claim set: iss, scope, aud, exp, iat, sub; aud = the token_uri)
# source: https://developers.google.com/gmail/imap/xoauth2-protocol (scope https://mail.google.com/)
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPES = ("https://mail.google.com/",)
# source: https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
#         ("Use client credentials grant flow to authenticate IMAP and POP connections")
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
MICROSOFT_SCOPES = ("https://outlook.office365.com/.default",)
SECRET_KEYRING_SERVICE = "mailmigrate-oauth2-service"
#: Refresh a cached token this long before it expires (as PasswordSource does).
MARGIN = 60.0  # (the same as tokens.MARGIN; not imported from there: tokens imports this lazily)


def services_dir() -> Path:
    return oauth_dir() / "services"


@dataclass
class Service:
    """One admin grant, as its TOML file says."""

    name: str
    kind: str
    token_url: str
    scopes: list[str]
    key_file: str | None = None
    client_id: str | None = None
    secret_file: str | None = None
    secret_in_keyring: bool = False
    cafile: str | None = None

    @property
    def path(self) -> Path:
        return services_dir() / f"{self.name}.toml"

    def validate(self) -> None:
        where = f"OAuth2 service {self.name!r}"
        check_name(self.name)
        if self.kind not in SERVICE_KINDS:
            raise UsageError(f"{where}: kind must be one of {', '.join(SERVICE_KINDS)}")
        if not self.scopes:
            raise UsageError(f"{where}: needs at least one scope")
        if self.kind == "google" and not self.key_file:
            raise UsageError(f"{where}: a Google service account needs its key file (--google-key)")
        if self.kind == "microsoft":
            if not self.client_id:
                raise UsageError(f"{where}: a Microsoft app needs its --client-id")
            if bool(self.secret_file) == self.secret_in_keyring:
                raise UsageError(f"{where}: give the client secret one way: --client-secret-file "
                                 "PATH or --client-secret-stdin (kept in the keyring)")

    def to_toml(self) -> str:
        lines = [f"# mailmigrate OAuth2 service {self.name!r}: ids and paths, no secret", ""]
        for key, value in asdict(self).items():
            if key == "name" or value is None or value is False:
                continue
            lines.append(f"{key} = {json.dumps(value)}")  # JSON strings/lists are TOML too
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, name: str, data: dict[str, Any]) -> Service:
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"OAuth2 service {name!r}: unknown key {sorted(unknown)[0]!r}; "
                             f"allowed: {', '.join(sorted(known))}")
        for key, value in data.items():
            ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)
                  if key == "scopes" else isinstance(value, bool) if key == "secret_in_keyring"
                  else isinstance(value, str))
            if not ok:
                raise UsageError(f"OAuth2 service {name!r}: {key} has the wrong type ({value!r})")
        try:
            svc = cls(name=name, **data)
        except TypeError as exc:  # a required key missing
            raise UsageError(f"OAuth2 service {name!r}: {exc}") from None
        svc.validate()
        return svc


def google_service(name: str, key_file: Path, *, scopes: tuple[str, ...] = (),
                   token_url: str | None = None, cafile: str | None = None) -> Service:
    """A Google service from its JSON key, checked now: a readable, private key file."""
    path = key_file.expanduser().resolve()
    key = read_google_key(path)
    return Service(name=name, kind="google", key_file=str(path),
                   token_url=token_url or str(key.get("token_uri") or GOOGLE_TOKEN_URL),
                   scopes=list(scopes or GOOGLE_SCOPES), cafile=cafile)


def microsoft_service(name: str, client_id: str, *, tenant: str | None, token_url: str | None,
                      secret_file: Path | None, secret_in_keyring: bool,
                      scopes: tuple[str, ...] = (), cafile: str | None = None) -> Service:
    if not token_url:
        if not tenant:
            raise UsageError("a Microsoft 365 app needs --tenant (your tenant id or "
                             "contoso.onmicrosoft.com), or --token-url")
        token_url = MICROSOFT_TOKEN_URL.format(tenant=tenant)
    path = str(secret_file.expanduser().resolve()) if secret_file else None
    svc = Service(name=name, kind="microsoft", client_id=client_id, token_url=token_url,
                  scopes=list(scopes or MICROSOFT_SCOPES), secret_file=path,
                  secret_in_keyring=secret_in_keyring, cafile=cafile)
    if path:
        read_private(Path(path), "the client secret file")
    return svc


def read_google_key(path: Path) -> dict[str, Any]:
    text = read_private(path, "the service account key file")
    try:
        key = json.loads(text)
    except ValueError:
        key = None
    if not isinstance(key, dict) or key.get("type") != "service_account" \
            or not key.get("client_email") or not key.get("private_key"):
        raise UsageError(f"{path} is not a Google service account key (JSON with type "
                         "service_account, client_email and private_key); download a JSON key "
                         "in the Cloud console under IAM > Service accounts > Keys")
    return key


# -- storage -----------------------------------------------------------------------
def save_service(svc: Service, *, overwrite: bool = False, secret: str | None = None) -> Path:
    svc.validate()
    if svc.path.exists() and not overwrite:
        raise UsageError(f"OAuth2 service {svc.name!r} exists already ({svc.path}); "
                         "remove it first or pass --force")
    if secret is not None:
        kr = usable_keyring()
        if kr is None:
            raise UsageError("no system keyring here to keep the client secret in; "
                             "use --client-secret-file PATH (mode 0600) instead")
        try:
            kr.set_password(SECRET_KEYRING_SERVICE, svc.name, secret)
        except Exception as exc:
            raise UsageError(f"the system keyring refused the client secret ({type(exc).__name__}); "
                             "use --client-secret-file PATH instead") from None
    services_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(svc.path, svc.to_toml())
    return svc.path


def load_service(name: str) -> Service:
    path = services_dir() / f"{check_name(name)}.toml"
    data = read_named_toml(path, "OAuth2 service", lambda: [s.name for s in list_services()],
                           "add it with `mailmigrate auth service add`")
    return Service.from_toml(name, data)


def list_services() -> list[Service]:
    if not services_dir().is_dir():
        return []
    return [load_service(p.stem) for p in sorted(services_dir().glob("*.toml"))]


def remove_service(name: str) -> Service:
    svc = load_service(name)
    svc.path.unlink()
    if svc.secret_in_keyring:
        kr = usable_keyring()
        if kr is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to undo
                kr.delete_password(SECRET_KEYRING_SERVICE, svc.name)
    return svc


def _client_secret(svc: Service) -> str:
    if svc.secret_file:
        return read_private(Path(svc.secret_file), "the client secret file").strip()
    kr = usable_keyring()
    secret = None
    if kr is not None:
        try:
            secret = kr.get_password(SECRET_KEYRING_SERVICE, svc.name)
        except Exception:  # unreadable: said below
            secret = None
    if not secret:
        raise AuthError(f"the client secret of OAuth2 service {svc.name!r} is not in the keyring "
                        "here; add the service again with --client-secret-stdin or "
                        "--client-secret-file")
    return str(secret)


# -- tokens ------------------------------------------------------------------------
def _refusal(svc: Service, mailbox: str) -> Callable[[str, str], MailmigrateError]:
    def make(code: str, description: str) -> MailmigrateError:
        detail = f"{code}: {description}" if description else code
        if svc.kind == "google":
            return AuthError(f"the token endpoint refused service account {svc.name!r} for {mailbox} "
                             f"({detail}); check its domain-wide delegation and scopes in the "
                             "Google Admin console (docs/oauth2.md, Google Workspace)")
        return AuthError(f"the token endpoint refused the app of OAuth2 service {svc.name!r} "
                         f"({detail}); check the client id and secret (secrets expire) "
                         "(docs/oauth2.md, Microsoft 365)")

    return make


@dataclass
class ServiceTokens:
    """Access tokens of one service: per mailbox for Google, one app token for
    Microsoft; cached, fetched again ``MARGIN`` seconds before they expire or when
    a server refused one. Thread-safe: parallel connections share it."""

    service: Service
    clock: Callable[[], float] = time.monotonic
    #: How many tokens were fetched (for tests and the curious).
    fetched: int = 0
    _cache: dict[str, tuple[str, float | None]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def token(self, mailbox: str, *, force: bool = False) -> tuple[str, float | None]:
        key = mailbox.lower() if self.service.kind == "google" else ""
        with self._lock:
            cached = self._cache.get(key)
            now = self.clock()
            if cached is not None and not force and (cached[1] is None or now < cached[1] - MARGIN):
                token, expires_at = cached
                return token, None if expires_at is None else expires_at - now
            token, lifetime = self._fetch(mailbox)
            self.fetched += 1
            self._cache[key] = (token, None if lifetime is None else now + lifetime)
            return token, lifetime

    def getter(self, mailbox: str) -> TokenGetter:
        return lambda refused: self.token(mailbox, force=refused)

    def _fetch(self, mailbox: str) -> tuple[str, float | None]:
        svc = self.service
        with token_request(svc.token_url, _refusal(svc, mailbox)):
            if svc.kind == "google":
                key = read_google_key(Path(str(svc.key_file)))
                session = assertion_session(svc.token_url, issuer=str(key["client_email"]),
                                            subject=mailbox, scopes=tuple(svc.scopes),
                                            key=str(key["private_key"]),
                                            key_id=key.get("private_key_id"), cafile=svc.cafile)
                token = session.refresh_token()
            else:
                session = oauth2_session(str(svc.client_id), _client_secret(svc), cafile=svc.cafile,
                                         scope=" ".join(svc.scopes))
                token = session.fetch_token(svc.token_url, grant_type="client_credentials")
        return access_token_of(dict(token), host_of(svc.token_url))


_shared: dict[str, ServiceTokens] = {}
_shared_lock = threading.Lock()


def service_tokens(name: str) -> ServiceTokens:
    """One ServiceTokens per service and process, so every mailbox a process opens
    (a fleet worker's many accounts) shares the cache."""
    with _shared_lock:
        tokens = _shared.get(name)
        if tokens is None:
            tokens = _shared[name] = ServiceTokens(load_service(name))
        return tokens
