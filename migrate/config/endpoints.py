"""Endpoint URLs and credentials.

A URL names the server and user; the password never travels in it (nor in
argv, where ``ps`` would show it): it comes from an environment variable, a
file, a command, or a prompt on a TTY.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from migrate.errors import AuthError, UsageError

DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
TLS_MODES = ("implicit", "starttls", "none")
#: ``?auth=``: "password" (LOGIN / USER+PASS / PLAIN) or an OAuth2 SASL mechanism.
AUTH_MODES = ("password", "xoauth2", "oauthbearer")
#: Gives an OAuth2 access token and its lifetime in seconds (None: unknown); the
#: argument is True when the server refused the last one, so a cached token must
#: not come back. ``migrate.config.oauth`` builds these for signed-in accounts
#: and service accounts.
TokenGetter = Callable[[bool], tuple[str, float | None]]


@dataclass(frozen=True)
class Endpoint:
    """A server to talk to; ``tls`` is 'implicit', 'starttls' or 'none'."""

    scheme: str
    host: str
    port: int
    user: str
    tls: str
    cafile: str | None = None
    insecure: bool = False
    auth: str = "password"
    provider: str | None = None

    @property
    def protocol(self) -> str:
        return "pop3" if self.scheme.startswith("pop3") else "imap"

    def display(self) -> str:
        """A printable form without any secret (there is none in it anyway)."""
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    if is_loopback(host):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_endpoint(url: str, *, insecure: bool = False, cafile: str | None = None,
                   protocols: tuple[str, ...] = ("imap",), provider: str | None = None) -> Endpoint:
    """Parse and validate ``imap[s]://user@host[:port][?tls=none]`` (or pop3[s]://).

    The host may be left to a provider preset: ``imaps://me@gmx.de`` names an
    address domain that a preset claims, so the server becomes imap.gmx.net and
    the user me@gmx.de; ``provider`` (``--provider``, or ``?provider=`` in the
    URL) picks the preset for an address on the user's own domain.
    """
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError as exc:
        raise UsageError(f"bad URL {url!r}: {exc}; expected e.g. imaps://user@host:993") from None
    scheme = parts.scheme.lower()
    allowed = [s for s in DEFAULT_PORTS if any(s.startswith(p) for p in protocols)]
    if scheme not in allowed:
        raise UsageError(
            f"bad URL {url!r}: scheme must be one of {', '.join(s + '://' for s in allowed)}"
        )
    if parts.password is not None:
        raise UsageError(
            "passwords are not accepted in URLs (they would show in the process list); "
            "use --password-env, --password-file or --password-command"
        )
    host = parts.hostname or ""
    user = unquote(parts.username or "")
    if not host:
        raise UsageError(f"bad URL {url!r}: no host; expected e.g. {scheme}://user@host")
    if not user:
        raise UsageError(f"bad URL {url!r}: no user name; expected e.g. {scheme}://user@{host}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"tls", "auth", "provider"}
    if unknown:
        raise UsageError(f"bad URL {url!r}: unknown parameter {sorted(unknown)[0]!r}; "
                         "known: tls, auth, provider")
    tls = "implicit" if scheme.endswith("s") else "starttls"
    if "tls" in query:
        value = query["tls"][-1].lower()
        if value not in ("none", "starttls", "implicit"):
            raise UsageError(f"bad URL {url!r}: tls must be none, starttls or implicit")
        tls = value
    auth = query["auth"][-1].lower() if "auth" in query else "password"
    if auth not in AUTH_MODES:
        raise UsageError(f"bad URL {url!r}: auth must be one of {', '.join(AUTH_MODES)}")
    if tls == "none" and not (is_loopback(host) or insecure):
        raise UsageError(
            f"refusing plaintext (tls=none) to non-loopback host {host}: the password would "
            "cross the network unencrypted; drop ?tls=none, or add --insecure if you must"
        )
    provider = provider or (query["provider"][-1] if "provider" in query else None)
    host, user, preset_port, provider = _resolve_host(scheme, host, user, tls, provider)
    port = port_value or preset_port or DEFAULT_PORTS[scheme]
    return Endpoint(scheme=scheme, host=host, port=port, user=user, tls=tls,
                    cafile=cafile, insecure=insecure, auth=auth, provider=provider)


def _resolve_host(scheme: str, host: str, user: str, tls: str,
                  provider: str | None) -> tuple[str, str, int | None, str | None]:
    """(host, user, port or None, provider id) after applying a provider preset.

    Without ``provider`` only a host that is a preset's address domain is
    rewritten; a real server name passes through untouched, so an ordinary
    URL never changes meaning. The port comes from the preset only when the
    preset's TLS mode is the one the scheme asks for.
    """
    from migrate.config.profiles import get_profile, profile_for_domain

    profile = get_profile(provider) if provider else profile_for_domain(host)
    if profile is None:
        return host, user, None, None
    protocol = "pop3" if scheme.startswith("pop3") else "imap"
    preset = profile.server(protocol)
    if preset is None:
        raise UsageError(f"provider {profile.name} offers no {protocol.upper()}; "
                         f"use {'imaps' if protocol == 'pop3' else 'pop3s'}:// or another provider")
    port = preset.port if preset.tls == tls else None
    # An IP address or loopback name is never an address domain: it is the
    # server itself (an SSH tunnel, a test), and only the preset's defaults apply.
    if preset.host is None or host.lower() == preset.host or _is_address(host):
        return host, user, port, profile.id
    return preset.host, profile.login_name(user, host), port, profile.id


@dataclass
class PasswordSource:
    """How to obtain a password; resolved lazily, never stored in argv or state."""

    env: str | None = None
    file: Path | None = None
    command: str | None = None
    prompt_label: str = "password"
    #: ``(service, username)`` in the system keyring (the optional ``keyring`` extra).
    keyring: tuple[str, str] | None = None
    #: A command printing an OAuth2 access token (or JSON with access_token and
    #: expires_in); run again whenever the token is about to expire or was refused.
    oauth2_command: str | None = None
    #: Or a function giving tokens (a stored sign-in, a service account).
    oauth2_tokens: TokenGetter | None = field(default=None, repr=False)
    #: How the user spelled these options: "--" or "--dest-" (named in errors).
    option_prefix: str = "--"
    _cached: str | None = field(default=None, repr=False)
    _token: str | None = field(default=None, repr=False)
    _token_expires: float | None = field(default=None, repr=False)
    # Parallel connections (--max-connections) log in from several threads:
    # the prompt, the command and a token refresh must each run once.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def literal(cls, secret: str) -> PasswordSource:
        """For library callers that already hold the secret (never used by the CLI)."""
        return cls(_cached=secret)

    def get(self) -> str:
        with self._lock:
            if self._cached is None:
                self._cached = self._resolve()
            return self._cached

    @property
    def is_oauth2(self) -> bool:
        return self.oauth2_command is not None or self.oauth2_tokens is not None

    def oauth2_token(self, *, refused: str | None = None) -> str:
        """The current access token. The command runs again when the server
        refused ``refused`` and it is still the current token, or when the token
        expires within a minute, so a long run that reconnects after an hour logs
        in with a fresh one. Several connections that saw the same token refused
        (``--max-connections``) run the command once between them."""
        command, tokens = self.oauth2_command, self.oauth2_tokens
        if command is None and tokens is None:
            raise UsageError(f"no {self.option_prefix}oauth2-token-command given for an OAuth2 login")
        with self._lock:
            expiring = (self._token_expires is not None
                        and time.monotonic() > self._token_expires - 60)
            stale = refused is not None and refused == self._token
            if self._token is None or stale or expiring:
                self._token, lifetime = tokens(stale) if tokens is not None else _run_token_command(
                    command or "", f"{self.option_prefix}oauth2-token-command")
                self._token_expires = time.monotonic() + lifetime if lifetime is not None else None
            return self._token

    def _resolve(self) -> str:
        given = [x for x in (self.env, self.file, self.command, self.keyring) if x]
        if len(given) > 1:
            raise UsageError(
                "give only one of "
                + ", ".join(f"{self.option_prefix}password-{k}" for k in ("env", "file", "command"))
            )
        if self.keyring:
            from migrate.config.credentials import keyring_get

            return keyring_get(*self.keyring)
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise UsageError(
                    f"environment variable {self.env} (from {self.option_prefix}password-env) "
                    f"is not set; export it or use another {self.option_prefix}password-* option"
                )
            return value
        if self.file:
            try:
                text = Path(self.file).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(
                    f"cannot read {self.option_prefix}password-file {self.file}: {exc.strerror}"
                ) from None
            return text.rstrip("\r\n")
        if self.command:
            try:
                done = subprocess.run(
                    shlex.split(self.command), capture_output=True, timeout=120, check=False
                )
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                raise UsageError(
                    f"{self.option_prefix}password-command failed to run: {exc}") from None
            if done.returncode != 0:
                raise AuthError(
                    f"{self.option_prefix}password-command exited with status {done.returncode}; "
                    "check that it prints the password"
                )
            return done.stdout.decode("utf-8").rstrip("\r\n")
        if sys.stdin.isatty():
            return getpass.getpass(f"{self.prompt_label}: ")
        raise UsageError(
            f"no {self.prompt_label}: use {self.option_prefix}password-env VAR, "
            f"{self.option_prefix}password-file PATH "
            f"or {self.option_prefix}password-command CMD (no TTY to prompt on)"
        )


def _run_token_command(command: str, option: str) -> tuple[str, float | None]:
    """Run a token command: its output is a bare token, or JSON ``{"access_token":
    …, "expires_in": seconds}`` as OAuth2 token endpoints (and oauth2l, gcloud…) print."""
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, timeout=120, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{option} failed to run: {exc}") from None
    if done.returncode != 0:
        raise AuthError(f"{option} exited with status {done.returncode}; "
                        "check that it prints an access token")
    text = done.stdout.decode("utf-8").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
            token = str(data["access_token"])
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"{option} printed JSON without access_token") from None
        expires = data.get("expires_in")
        return token, float(expires) if isinstance(expires, int | float) else None
    if not text:
        raise AuthError(f"{option} printed nothing; it must print an access token")
    return text, None


__all__ = ["AUTH_MODES", "TLS_MODES", "Endpoint", "PasswordSource", "TokenGetter", "is_loopback",
           "parse_endpoint"]
