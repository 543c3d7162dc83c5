"""Access tokens for a command, and when a command uses OAuth2 by itself.

Which login a command uses, first match wins (docs/oauth2.md says the same):

1. a ``--password-*`` or ``--oauth2-token-command`` option given for that server;
2. ``MAILMIGRATE_OAUTH2_SERVICE=NAME`` (``MAILMIGRATE_DEST_OAUTH2_SERVICE`` for the
   ``--dest-`` side): that admin service's token for the URL's user;
3. ``MAILMIGRATE_OAUTH2_ACCOUNT=ADDRESS`` (``…_DEST_…``): that stored sign-in, which
   must exist;
4. a stored sign-in (``mailmigrate auth login``) for the URL's user, made with the
   preset of the server the URL names: a token never goes to another provider's server;
5. else the password prompt, or the error saying which option is missing.

``mailmigrate run`` sets the variables of 2 and 3 for a job whose credentials are
``oauth2-service`` or ``oauth2-login``: names, never secrets, and never in argv.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.config.jobs import Credential
from migrate.config.oauth.provider import providers_serving
from migrate.config.oauth.store import (
    Grant,
    GrantSecret,
    account_key,
    find_grant,
    read_secret,
    update_refresh_token,
)
from migrate.config.profiles import profile_for_domain
from migrate.errors import AuthError, MailmigrateError, UsageError

#: Job / ledger credential methods this module resolves (value: an address, a service name).
CREDENTIAL_METHODS = ("oauth2-login", "oauth2-service")
#: Refresh a cached token this long before it expires (as PasswordSource does).
MARGIN = 60.0
# Every command without a password option comes through here, so the token
# fetching (client, service) is imported only when a token is really needed.


def env_names(prefix: str) -> tuple[str, str]:
    """(service variable, account variable) for the ``--`` or ``--dest-`` side."""
    side = "DEST_" if prefix == "--dest-" else ""
    return f"MAILMIGRATE_{side}OAUTH2_SERVICE", f"MAILMIGRATE_{side}OAUTH2_ACCOUNT"


def login_command(grant: Grant) -> str:
    """How to sign this account in again, as the user would type it."""
    domain = grant.address.rpartition("@")[2]
    preset = profile_for_domain(domain) if domain else None
    extra = "" if preset is not None and preset.id == grant.provider else f" --provider {grant.provider}"
    return f"mailmigrate auth login {grant.address}{extra}"


def _revoked(grant: Grant) -> Callable[[str, str], MailmigrateError]:
    def make(code: str, description: str) -> MailmigrateError:
        detail = f"{code}: {description}" if description else code
        return AuthError(f"the OAuth2 sign-in for {grant.address} was revoked or has expired "
                         f"({detail}); sign in again: {login_command(grant)}")

    return make


@dataclass
class GrantTokens:
    """Access tokens for one signed-in account, from its refresh token: cached,
    refreshed ``MARGIN`` seconds before they expire or when a server refused one,
    and a rotated refresh token is kept. Thread-safe (parallel connections)."""

    grant: Grant
    clock: Callable[[], float] = time.monotonic
    #: How many refreshes this process made (for tests and the curious).
    refreshed: int = 0
    _token: tuple[str, float | None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, refused: bool) -> tuple[str, float | None]:
        with self._lock:
            now = self.clock()
            if self._token is not None and not refused:
                token, expires_at = self._token
                if expires_at is None or now < expires_at - MARGIN:
                    return token, None if expires_at is None else expires_at - now
            token, lifetime = self._refresh()
            self.refreshed += 1
            self._token = (token, None if lifetime is None else now + lifetime)
            return token, lifetime

    def _refresh(self) -> tuple[str, float | None]:
        from migrate.config.oauth.client import access_token_of, host_of, oauth2_session, token_request

        grant = self.grant
        secret = read_secret(grant)
        session = oauth2_session(grant.client_id, secret.client_secret, cafile=grant.cafile,
                                 scope=" ".join(grant.scopes))
        with token_request(grant.token_url, _revoked(grant)):
            response = dict(session.refresh_token(grant.token_url,
                                                  refresh_token=secret.refresh_token))
        rotated = response.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != secret.refresh_token:
            update_refresh_token(grant, GrantSecret(rotated, secret.client_secret))
        return access_token_of(response, host_of(grant.token_url))


_grant_tokens: dict[str, GrantTokens] = {}
_grant_lock = threading.Lock()


def grant_tokens(grant: Grant) -> GrantTokens:
    """One GrantTokens per account and process: every connection shares its cache."""
    with _grant_lock:
        key = account_key(grant.address)
        tokens = _grant_tokens.get(key)
        if tokens is None or tokens.grant != grant:
            tokens = _grant_tokens[key] = GrantTokens(grant)
        return tokens


def required_grant(address: str) -> Grant:
    grant = find_grant(address)
    if grant is None:
        raise AuthError(f"no OAuth2 sign-in stored for {address}; sign in once with "
                        f"`mailmigrate auth login {address}`")
    return grant


def _grant_for(endpoint: Endpoint, grant: Grant) -> Grant:
    if grant.provider not in providers_serving(endpoint.host, endpoint.provider):
        raise UsageError(f"the sign-in for {grant.address} is for provider {grant.provider}, but "
                         f"{endpoint.display()} is not its server; its token is not sent elsewhere")
    return grant


def login_source(endpoint: Endpoint, prefix: str = "--") -> PasswordSource | None:
    """Rules 2-4 of the module docstring for a server given no credential option;
    None leaves the password path as it was."""
    service_var, account_var = env_names(prefix)
    label = f"password for {endpoint.user}@{endpoint.host}"
    service = os.environ.get(service_var)
    if service:
        from migrate.config.oauth.service import service_tokens

        return PasswordSource(oauth2_tokens=service_tokens(service).getter(endpoint.user),
                              prompt_label=label, option_prefix=prefix)
    account = os.environ.get(account_var)
    if account:
        grant = _grant_for(endpoint, required_grant(account))
    else:
        found = find_grant(endpoint.user)
        if found is None or found.provider not in providers_serving(endpoint.host, endpoint.provider):
            return None
        grant = found
    return PasswordSource(oauth2_tokens=grant_tokens(grant), prompt_label=label,
                          option_prefix=prefix)


def oauth_password_source(method: str, value: str, label: str, *,
                          mailbox: str | None = None) -> PasswordSource | None:
    """A job's or a fleet ledger's ``oauth2-login`` / ``oauth2-service`` credential as a
    PasswordSource; None for any other method. A service acts for ``mailbox`` (the
    account's user name)."""
    if method == "oauth2-service":
        from migrate.config.oauth.service import service_tokens

        if not mailbox:
            raise UsageError(f"oauth2-service:{value} needs the mailbox it acts for")
        return PasswordSource(oauth2_tokens=service_tokens(value).getter(mailbox), prompt_label=label)
    if method == "oauth2-login":
        return PasswordSource(oauth2_tokens=grant_tokens(required_grant(value)), prompt_label=label)
    return None


def job_credential(endpoint: Endpoint, service: str | None) -> Credential | None:
    """The credential ``jobs add`` saves when no password option was given: the named
    admin service, or the stored sign-in for the server's user."""
    if service:
        return Credential("oauth2-service", service)
    grant = find_grant(endpoint.user)
    if grant is not None and grant.provider in providers_serving(endpoint.host, endpoint.provider):
        return Credential("oauth2-login", grant.address)
    return None


def apply_job_env(env: MutableMapping[str, str], cred: Credential | None, prefix: str) -> None:
    """``mailmigrate run``: tell the child which sign-in or service a job uses (rules 2, 3),
    and clear what an outer shell may have set for that side."""
    service_var, account_var = env_names(prefix)
    if cred is None or cred.method not in CREDENTIAL_METHODS:
        return
    env.pop(service_var, None)
    env.pop(account_var, None)
    env[service_var if cred.method == "oauth2-service" else account_var] = cred.value
