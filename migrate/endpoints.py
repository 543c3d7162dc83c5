"""Endpoint URLs and credentials.

A URL names the server and user; the password never travels in it (nor in
argv, where ``ps`` would show it): it comes from an environment variable, a
file, a command, or a prompt on a TTY.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from migrate.errors import AuthError, UsageError

DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
TLS_MODES = ("implicit", "starttls", "none")


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


def parse_endpoint(url: str, *, insecure: bool = False, cafile: str | None = None,
                   protocols: tuple[str, ...] = ("imap",)) -> Endpoint:
    """Parse and validate ``imap[s]://user@host[:port][?tls=none]`` (or pop3[s]://)."""
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
    unknown = set(query) - {"tls"}
    if unknown:
        raise UsageError(f"bad URL {url!r}: unknown parameter {sorted(unknown)[0]!r}; only ?tls=none")
    tls = "implicit" if scheme.endswith("s") else "starttls"
    if "tls" in query:
        value = query["tls"][-1].lower()
        if value not in ("none", "starttls", "implicit"):
            raise UsageError(f"bad URL {url!r}: tls must be none, starttls or implicit")
        tls = value
    if tls == "none" and not (is_loopback(host) or insecure):
        raise UsageError(
            f"refusing plaintext (tls=none) to non-loopback host {host}: the password would "
            "cross the network unencrypted; drop ?tls=none, or add --insecure if you must"
        )
    port = port_value or DEFAULT_PORTS[scheme]
    return Endpoint(scheme=scheme, host=host, port=port, user=user, tls=tls,
                    cafile=cafile, insecure=insecure)


@dataclass
class PasswordSource:
    """How to obtain a password; resolved lazily, never stored in argv or state."""

    env: str | None = None
    file: Path | None = None
    command: str | None = None
    prompt_label: str = "password"
    _cached: str | None = field(default=None, repr=False)

    @classmethod
    def literal(cls, secret: str) -> PasswordSource:
        """For library callers that already hold the secret (never used by the CLI)."""
        return cls(_cached=secret)

    def get(self) -> str:
        if self._cached is None:
            self._cached = self._resolve()
        return self._cached

    def _resolve(self) -> str:
        given = [x for x in (self.env, self.file, self.command) if x]
        if len(given) > 1:
            raise UsageError(
                "give only one of --password-env, --password-file, --password-command"
            )
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise UsageError(
                    f"environment variable {self.env} (from --password-env) is not set; "
                    "export it or use another --password-* option"
                )
            return value
        if self.file:
            try:
                text = Path(self.file).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(
                    f"cannot read --password-file {self.file}: {exc.strerror}"
                ) from None
            return text.rstrip("\r\n")
        if self.command:
            try:
                done = subprocess.run(
                    shlex.split(self.command), capture_output=True, timeout=120, check=False
                )
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                raise UsageError(f"--password-command failed to run: {exc}") from None
            if done.returncode != 0:
                raise AuthError(
                    f"--password-command exited with status {done.returncode}; "
                    "check that it prints the password"
                )
            return done.stdout.decode("utf-8").rstrip("\r\n")
        if sys.stdin.isatty():
            return getpass.getpass(f"{self.prompt_label}: ")
        raise UsageError(
            f"no password for {self.prompt_label}: use --password-env VAR, --password-file PATH "
            "or --password-command CMD (no TTY to prompt on)"
        )


__all__ = ["TLS_MODES", "Endpoint", "PasswordSource", "is_loopback", "parse_endpoint"]
