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

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date

from migrate.config.rates import Rate, parse_rate
from migrate.errors import MessageError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.base import SourceStore, statuses_of


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

    def statuses(self, folders: Sequence[Folder]) -> list[FolderStatus | MessageError]:
        return statuses_of(self.inner, folders)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        return self.inner.list_new(folder, checkpoint, since)

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return self.inner.flag_changes(folder, checkpoint, status)

    def take_failures(self, folder: Folder) -> list[str]:
        take = getattr(self.inner, "take_failures", None)
        return list(take(folder)) if callable(take) else []

    def transfer_order(self, folders: Sequence[Folder]) -> list[list[Folder]]:
        order = getattr(self.inner, "transfer_order", None)
        return list(order(folders)) if callable(order) else [list(folders)]

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
