"""Which authorization server, client and scopes sign an address in.

A preset's ``[oauth2]`` table names the endpoints (built in, or a preset of
one's own in ``MAILMIGRATE_PROFILES_DIR`` for a self-hosted or corporate
identity provider); the client ID comes from the preset, and ``--client-id``
wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from migrate.config.profiles import Profile, get_profile, profile_for_domain, profile_for_host
from migrate.errors import UsageError


@dataclass(frozen=True)
class OAuthProvider:
    """A preset's ``[oauth2]`` table, typed; ``id`` is the preset's id."""

    id: str
    name: str
    token_url: str
    authorization_url: str
    scopes: tuple[str, ...]
    mechanisms: tuple[str, ...]
    flow: str
    device_authorization_url: str | None = None
    revocation_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @classmethod
    def of(cls, profile: Profile) -> OAuthProvider:
        table = profile.oauth2
        if table is None:
            raise UsageError(f"provider {profile.id} ({profile.name}) has no OAuth2 sign-in in its "
                             "preset; log in with a password (an app password), or name another "
                             "provider with --provider")
        device = table.get("device_authorization_url")
        return cls(id=profile.id, name=profile.name, token_url=table["token_url"],
                   authorization_url=table["authorization_url"], scopes=tuple(table["scopes"]),
                   mechanisms=tuple(table["mechanisms"]),
                   flow=table.get("flow", "device" if device else "code"),
                   device_authorization_url=device, revocation_url=table.get("revocation_url"),
                   client_id=table.get("client_id"), client_secret=table.get("client_secret"))


    def for_tenant(self, tenant: str | None) -> OAuthProvider:
        """Microsoft's endpoints for one tenant instead of ``/common/``: an app registered
        for one organization only (the usual admin choice) must sign in there."""
        if not tenant:
            return self
        if "/common/" not in self.token_url:
            raise UsageError(f"--tenant applies to endpoints with /common/ in them (Microsoft's); "
                             f"the {self.id} preset has none")

        def at(url: str | None) -> str | None:
            return url.replace("/common/", f"/{tenant}/") if url else url

        return replace(self, token_url=str(at(self.token_url)),
                       authorization_url=str(at(self.authorization_url)),
                       device_authorization_url=at(self.device_authorization_url))


def provider_for(address: str, provider_id: str | None) -> OAuthProvider:
    """The OAuth2 provider for ``address``: ``--provider``, else the preset that
    claims the address's domain."""
    if provider_id:
        return OAuthProvider.of(get_profile(provider_id))
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise UsageError(f"{address!r} is not an e-mail address; give the address you sign in "
                         "with, and --provider ID when no preset knows its domain")
    profile = profile_for_domain(domain)
    if profile is None:
        raise UsageError(f"no provider preset knows the domain {domain}; name one with --provider ID "
                         "(see `mailmigrate providers`)")
    return OAuthProvider.of(profile)


def providers_serving(host: str, endpoint_provider: str | None) -> set[str]:
    """The preset ids an endpoint belongs to: the one its URL resolved to, and the
    one whose server it names (``imaps://me@imap.gmail.com`` is Gmail too)."""
    ids = {endpoint_provider} if endpoint_provider else set()
    by_host = profile_for_host(host)
    if by_host is not None:
        ids.add(by_host.id)
    return ids
