"""``--rate``: a ceiling on messages or bytes per second, as a wrapper around a source.

Providers throttle clients that pull too fast (Gmail's IMAP bandwidth
quota, Microsoft 365's per-mailbox limits); staying under their ceiling is
cheaper than being throttled and backing off. The wrapper paces ``fetch``:
after each batch it sleeps until the average since the start is back under
the rate. The engine fetches one batch ahead, so pacing the fetches paces
the whole transfer, and the destination sees the same rate. All connections
of one run (``--max-connections``) share one :class:`Pacer`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from migrate.errors import UsageError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.base import SourceStore

_UNITS = {"B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)"
_RATE = re.compile(rf"^\s*{_AMOUNT}\s*(?:/\s*s)?(?:\s+after\s+{_AMOUNT})?\s*$", re.IGNORECASE)
_MESSAGE_UNITS = ("", "MSG", "MSGS", "MESSAGES")


@dataclass(frozen=True)
class Rate:
    """A ceiling, optionally only after a free allowance (``20KB after 700MB``).

    The allowance lets a provider's daily quota be respected without slowing
    the everyday run: a nightly backup smaller than the allowance runs at full
    speed, a first backup of years of mail is paced once it is used up.
    """

    messages_per_second: float | None = None
    bytes_per_second: float | None = None
    free_messages: float = 0
    free_bytes: float = 0

    def __str__(self) -> str:
        if self.messages_per_second is not None:
            text = f"{self.messages_per_second:g} messages/s"
        else:
            text = f"{self.bytes_per_second:g} bytes/s"
        if self.free_bytes:
            text += f" after {self.free_bytes:g} bytes"
        elif self.free_messages:
            text += f" after {self.free_messages:g} messages"
        return text


def _amount(value: str, unit: str, text: str) -> tuple[float, bool]:
    """(amount, is_bytes) of '20', '20msg', '500KB', '1MiB'."""
    unit = unit.upper()
    if unit in _MESSAGE_UNITS:
        return float(value), False
    factor = _UNITS.get(unit)
    if factor is None:
        raise UsageError(f"bad --rate unit {unit!r} in {text!r}: use msg, KB, MB, GB "
                         "(or KiB, MiB, GiB)")
    return float(value) * factor, True


def parse_rate(text: str) -> Rate:
    """'20' or '20msg' -> 20 messages/s; '500KB', '2MB/s', '1MiB' -> bytes/s;
    '20KB after 700MB' -> the first 700 MB unpaced, then 20 KB/s."""
    m = _RATE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"bad --rate {text!r}: give messages per second (e.g. 20) or bytes "
                         "per second with a unit (e.g. 500KB, 2MB), optionally "
                         "'after' an allowance (e.g. '20KB after 700MB')")
    value, is_bytes = _amount(m.group(1), m.group(2), text)
    free, free_is_bytes = (0.0, is_bytes)
    if m.group(3) is not None:
        free, free_is_bytes = _amount(m.group(3), m.group(4), text)
        if free_is_bytes != is_bytes:
            raise UsageError(f"bad --rate {text!r}: the allowance after 'after' must be in the "
                             "rate's unit (bytes with bytes, messages with messages)")
    if is_bytes:
        return Rate(bytes_per_second=value, free_bytes=free)
    return Rate(messages_per_second=value, free_messages=free)


class Pacer:
    """The running average behind ``--rate``, shared by every connection of a run.

    With ``--max-connections`` several sources fetch at once; each paces
    through the same pacer, so the ceiling holds for the run as a whole and
    not per connection. The sleep happens outside the lock: one connection
    waiting does not stop another from counting what it already fetched.
    """

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._start: float | None = None
        self._messages = 0
        self._bytes = 0

    def begin(self) -> None:
        with self._lock:
            if self._start is None:
                self._start = self._clock()

    def pace(self, messages: Sequence[Message]) -> None:
        """Account for ``messages`` and sleep until the average is under the rate."""
        with self._lock:
            if self._start is None:
                self._start = self._clock()
            self._messages += len(messages)
            self._bytes += sum(m.size for m in messages)
            due = 0.0
            if self.rate.messages_per_second:
                due = max(0.0, self._messages - self.rate.free_messages) / self.rate.messages_per_second
            if self.rate.bytes_per_second:
                due = max(due, max(0.0, self._bytes - self.rate.free_bytes) / self.rate.bytes_per_second)
            ahead = due - (self._clock() - self._start)
        if ahead > 0:
            self._sleep(ahead)


class RateLimitedSource:
    """A :class:`SourceStore` whose ``fetch`` never runs faster than its pacer allows."""

    def __init__(self, inner: SourceStore, pacer: Pacer) -> None:
        self.inner = inner
        self.pacer = pacer

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        self.pacer.begin()
        got = list(self.inner.fetch(folder, refs))
        self.pacer.pace(got)
        return iter(got)

    def list_folders(self) -> list[Folder]:
        return self.inner.list_folders()

    def status(self, folder: Folder) -> FolderStatus:
        return self.inner.status(folder)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        return self.inner.list_new(folder, checkpoint, since)

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return self.inner.flag_changes(folder, checkpoint, status)

    def take_failures(self, folder: Folder) -> list[str]:
        take = getattr(self.inner, "take_failures", None)
        return list(take(folder)) if callable(take) else []

    def close(self) -> None:
        self.inner.close()


def limited(source: SourceStore, rate: str | Pacer | None) -> SourceStore:
    """``source`` paced by ``--rate`` when given; pass one :class:`Pacer` to every
    connection of a run so that they share the ceiling."""
    if rate is None:
        return source
    return RateLimitedSource(source, rate if isinstance(rate, Pacer) else Pacer(parse_rate(rate)))


def shared_pacer(rate: str | None) -> Pacer | None:
    """One pacer for all of a run's connections, or None without ``--rate``."""
    return Pacer(parse_rate(rate)) if rate else None


__all__ = ["Pacer", "Rate", "RateLimitedSource", "limited", "parse_rate", "shared_pacer"]
