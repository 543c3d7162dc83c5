"""Sessions per host: which servers an account talks to, and how many sessions each may carry.

Providers cap concurrent sessions (per account, per client address), and a
migration of hundreds of accounts from one machine meets that cap first. A
chunk holds one session per server side (the fleet runs each account on one
connection: the parallelism is across accounts), so the cap of a host is the
number of accounts that may talk to it at once. ``--per-host HOST=N`` (or
``HOST:PORT=N``) sets it; otherwise the provider preset's ``max_connections``
does; otherwise only ``--workers`` bounds it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from migrate.config.endpoints import Endpoint
from migrate.config.run_defaults import preset_of
from migrate.errors import MailmigrateError, UsageError
from migrate.fleet.accounts import SERVER_SIDES, AccountSpec


def host_key(endpoint: Endpoint) -> str:
    return f"{endpoint.host}:{endpoint.port}"


def parse_per_host(values: Sequence[str]) -> dict[str, int]:
    """``["imap.gmx.net=4", "127.0.0.1:1143=2"]`` -> {host or host:port: cap}."""
    caps: dict[str, int] = {}
    for text in values:
        host, sep, number = text.rpartition("=")
        host = host.strip().lower()
        try:
            cap = int(number)
        except ValueError:
            cap = 0
        if not sep or not host or cap < 1:
            raise UsageError(f"bad --per-host {text!r}: expected HOST=N or HOST:PORT=N with N >= 1, "
                             "e.g. imap.gmx.net=4")
        caps[host] = cap
    return caps


@dataclass(frozen=True)
class Session:
    """One session an account's chunk holds: the host and its cap (None: no cap)."""

    host: str
    cap: int | None


def sessions(account: AccountSpec, flags: Mapping[str, int], insecure: bool = False) -> list[Session]:
    """The sessions a chunk of ``account`` holds, one per server side."""
    out: list[Session] = []
    for side in SERVER_SIDES[account.kind]:
        try:
            endpoint = account.endpoint(side, insecure)
        except MailmigrateError:
            continue  # the chunk fails at once with the URL's own error
        key = host_key(endpoint)
        cap = flags.get(key.lower(), flags.get(endpoint.host.lower()))
        if cap is None:
            try:
                profile = preset_of(endpoint)
            except MailmigrateError:
                profile = None
            cap = profile.limits.get("max_connections") if profile is not None else None
        out.append(Session(key, cap))
    return out


@dataclass
class HostSlots:
    """The local pool's count of sessions in use per host (thread-safe)."""

    in_use: Counter[str] = field(default_factory=Counter)
    #: The most sessions that were ever in use at once, per host (for the run's summary).
    peak: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def try_take(self, wanted: Sequence[Session]) -> bool:
        """Take every session of ``wanted`` or none."""
        with self._lock:
            need = Counter(s.host for s in wanted)
            caps = {s.host: s.cap for s in wanted}
            for host, n in need.items():
                cap = caps[host]
                if cap is not None and self.in_use[host] + n > cap and self.in_use[host] > 0:
                    return False
            for host, n in need.items():
                self.in_use[host] += n
                self.peak[host] = max(self.peak[host], self.in_use[host])
            return True

    def give_back(self, held: Sequence[Session]) -> None:
        with self._lock:
            for s in held:
                self.in_use[s.host] -= 1


__all__ = ["HostSlots", "Session", "host_key", "parse_per_host", "sessions"]
