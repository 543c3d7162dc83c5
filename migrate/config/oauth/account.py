"""Sign in, sign out, and an access token on demand: what ``mailmigrate auth`` does,
as a library (the CLI only parses and prints)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from migrate.config.oauth.client import oauth2_session, refused_plainly, token_request
from migrate.config.oauth.flows import SignIn, code_login, device_login
from migrate.config.oauth.provider import provider_for
from migrate.config.oauth.service import service_tokens
from migrate.config.oauth.store import (
    Grant,
    GrantSecret,
    delete_grant,
    read_private,
    save_grant,
)
from migrate.config.oauth.tokens import grant_tokens, required_grant
from migrate.config.profiles import OAUTH2_FLOWS
from migrate.errors import AuthError, MailmigrateError, UsageError


def sign_in(address: str, *, provider_id: str | None = None, client_id: str | None = None,
            client_secret_file: Path | None = None, scopes: tuple[str, ...] = (),
            flow: str | None = None, cafile: str | None = None, tenant: str | None = None,
            show: Callable[[str], None], warn: Callable[[str], None],
            open_browser: bool = False) -> Grant:
    """Run the provider's sign-in for ``address`` and store the grant it gives."""
    provider = provider_for(address, provider_id).for_tenant(tenant)
    client = client_id or provider.client_id
    if not client:
        raise UsageError(f"the {provider.id} preset names no OAuth2 client ID yet; give "
                         "--client-id ID of an app you registered (docs/oauth2.md says how)")
    if client_secret_file is not None:
        secret: str | None = read_private(client_secret_file.expanduser(),
                                          "the client secret file").strip()
    else:  # a preset's secret belongs to the preset's client only (Google's desktop apps)
        secret = provider.client_secret if client == provider.client_id else None
    chosen = flow or provider.flow
    if chosen not in OAUTH2_FLOWS:
        raise UsageError(f"--flow must be one of {', '.join(OAUTH2_FLOWS)}")
    request = SignIn(address=address, provider=provider, client_id=client, client_secret=secret,
                     scopes=scopes or provider.scopes, cafile=cafile)
    if chosen == "device":
        token = device_login(request, show)
    else:
        token = code_login(request, show, open_browser=open_browser)
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise AuthError(f"{provider.name} signed {address} in but gave no refresh token, so "
                        "mailmigrate could not sign in again by itself; check the scopes "
                        "(Microsoft needs offline_access)")
    grant = Grant(address=address, provider=provider.id, token_url=provider.token_url,
                  client_id=client, scopes=list(request.scopes), store="keyring",
                  revocation_url=provider.revocation_url, cafile=cafile)
    return save_grant(grant, GrantSecret(refresh, secret), warn)


def sign_out(address: str, *, revoke: bool, warn: Callable[[str], None]) -> Grant:
    """Forget the sign-in; with ``revoke``, also ask the provider to revoke the refresh
    token (RFC 7009) where its preset names a revocation endpoint."""
    grant, secret = delete_grant(address)
    if revoke and secret is not None and grant.revocation_url:
        try:
            session = oauth2_session(grant.client_id, secret.client_secret, cafile=grant.cafile)
            with token_request(grant.revocation_url, refused_plainly("the revocation")):
                session.revoke_token(grant.revocation_url, token=secret.refresh_token,
                                     token_type_hint="refresh_token").raise_for_status()
        except MailmigrateError as exc:  # the local part is done either way
            warn(f"forgot the sign-in here, but the provider did not revoke it ({exc}); "
                 "revoke it in the account's security settings")
    return grant


def access_token(address: str, *, service: str | None = None) -> tuple[str, float | None]:
    """A fresh access token for ``address``: from its stored sign-in, or from the admin
    ``service`` acting for that mailbox."""
    if service:
        return service_tokens(service).token(address)
    return grant_tokens(required_grant(address))(False)
