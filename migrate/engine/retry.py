"""Reconnect-and-continue as wrappers around a store (restic's backend wrappers).

The engine never sees a dropped connection it could survive: a
:class:`RetryingSource` / :class:`RetryingDestination` catches a *transient*
:class:`~migrate.errors.MailmigrateError` (a property of the error type, see
:mod:`migrate.errors`), waits with exponential backoff and full jitter, asks
the inner store for a fresh connection (``reconnect()``: a new socket, a new
login, nothing selected) and repeats the call. Permanent errors (auth,
usage, a refused message) pass straight through.

Why a call can simply be repeated:

- source calls are reads; the wrapper materialises their iterators, so a
  half-read answer is never handed to the engine;
- a destination batch is recorded "in doubt" before the server sees a byte
  (:mod:`migrate.stores.imap_state`); after a reconnect the wrapper lets the destination
  settle those doubts (found on the server, or never appended) and sends
  only what is still missing, so a retried APPEND never duplicates.

The first connection of a run goes through the same budget
(:func:`open_retrying`): a drop during its greeting, TLS, CAPABILITY, LOGIN or
NAMESPACE is as transient as any later one; only the server's refusal of the
credentials (AuthError) and what retrying cannot mend (SetupError) stop at once.

The budget is ``retries`` consecutive failed attempts of one call; a call
that succeeds resets it. Each attempt is bounded by the socket ``timeout``
the store was opened with, and no single wait exceeds ``max_delay``. When the
budget is spent the last error propagates (exit 4) and the checkpoints the
engine already committed are where the next run resumes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, TypeVar, runtime_checkable

from migrate.errors import ConnectError, FolderError, MailmigrateError, MessageError, ThrottledError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import NullReporter, Reporter
from migrate.stores.base import (
    DestinationStore,
    LinkingDestination,
    OrderedSource,
    SourceStore,
    statuses_of,
)

T = TypeVar("T")

DEFAULT_RETRIES = 5
DEFAULT_RETRY_DELAY = 1.0


@runtime_checkable
class Reconnectable(Protocol):
    """A store that can drop its connection and open a fresh one (same login)."""

    def reconnect(self) -> None: ...


@runtime_checkable
class SettlingDestination(Protocol):
    """A destination that can resolve writes left in doubt by a dropped connection."""

    def settle(self, folder: Folder) -> None: ...


@runtime_checkable
class FinishingDestination(Protocol):
    """A destination with work to do once every folder is done (a last check)."""

    def finish_run(self) -> None: ...


@dataclass
class RetryPolicy:
    """How often and how patiently to reconnect.

    ``delay`` is the first backoff; each further attempt doubles it, up to
    ``max_delay``; the actual wait is drawn uniformly from [delay/2, delay]
    ("equal jitter"), so many clients cut by the same outage do not come
    back in lockstep, yet the wait never collapses to zero.
    """

    retries: int = DEFAULT_RETRIES
    delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    reconnects: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based) of a retried call."""
        ceiling = min(self.max_delay, self.delay * (2 ** (attempt - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)

    def count(self) -> None:
        with self._lock:
            self.reconnects += 1


def _gave_up(last: MailmigrateError, attempts: int) -> str:
    """The final one-line error: the last cause, the budget spent, how to resume."""
    text = str(last).removesuffix("; run the same command again to resume")
    return f"{text}; gave up after {attempts} reconnect attempts; run the same command again to resume"


def _retrying(policy: RetryPolicy, reporter: Reporter, store: Reconnectable, what: str,
              call: Callable[[], T], before_retry: Callable[[], None] | None = None,
              progress: Callable[[], int] | None = None) -> T:
    """Run ``call``; on a transient error reconnect ``store`` and run it again.

    A failed reconnect uses up an attempt too, so a server that stays
    unreachable ends the run after ``retries`` waits, not never. When
    ``progress()`` grew since the last failure (a link that drops every few
    MB still moves the transfer forward), the budget starts afresh.
    """
    attempt = 0
    seen = progress() if progress is not None else 0
    while True:
        try:
            return call()
        except MailmigrateError as exc:
            if not exc.transient:
                raise
            last: MailmigrateError = exc
        if progress is not None and progress() > seen:
            seen, attempt = progress(), 0
        while True:
            if attempt >= policy.retries:
                raise ConnectError(_gave_up(last, attempt)) from None
            attempt += 1
            wait = policy.backoff(attempt)
            reporter.warn(f"{last}; reconnecting in {wait:.1f} s "
                          f"(attempt {attempt} of {policy.retries}) to continue {what}")
            policy.sleep(wait)
            try:
                store.reconnect()
                if before_retry is not None:
                    before_retry()
            except MailmigrateError as again:
                if not again.transient:
                    raise
                last = again
                continue
            policy.count()
            break


class _NotOpenYet:
    """Before the first connection there is nothing to drop: trying again is the reconnect."""

    def reconnect(self) -> None:
        pass


def open_retrying(policy: RetryPolicy, reporter: Reporter, what: str, factory: Callable[[], T]) -> T:
    """Open a store (its first connection) with the same budget and backoff as a reconnect;
    ``what`` names it for the progress line ("connecting to host")."""
    return _retrying(policy, reporter, _NotOpenYet(), what, factory)


def retry_call(policy: RetryPolicy, reporter: Reporter, store: Reconnectable, what: str,
               call: Callable[[], T]) -> T:
    """One retried operation outside the engine (e.g. POP3 deletion after a transfer)."""
    return _retrying(policy, reporter, store, what, call)


class _RetryingStore:
    """What both wrappers share: a reconnectable inner store and one retried call."""

    def __init__(self, inner: object, policy: RetryPolicy, reporter: Reporter | None = None
                 ) -> None:
        if not isinstance(inner, Reconnectable):
            raise TypeError(f"{type(inner).__name__} cannot reconnect")
        self._reconnectable: Reconnectable = inner
        self.policy = policy
        self.reporter = reporter or NullReporter()

    def _do(self, what: str, call: Callable[[], T],
            before_retry: Callable[[], None] | None = None) -> T:
        return _retrying(self.policy, self.reporter, self._reconnectable, what, call, before_retry)


class RetryingSource(_RetryingStore):
    """A :class:`SourceStore` that survives dropped connections of a reconnectable source."""

    def __init__(self, inner: SourceStore, policy: RetryPolicy,
                 reporter: Reporter | None = None) -> None:
        super().__init__(inner, policy, reporter)
        self.inner = inner
        self._failures: dict[str, list[str]] = {}

    def list_folders(self) -> list[Folder]:
        return self._do("listing folders", self.inner.list_folders)

    def status(self, folder: Folder) -> FolderStatus:
        return self._do(f"STATUS of {folder.name!r}", lambda: self.inner.status(folder))

    def statuses(self, folders: Sequence[Folder]) -> list[FolderStatus | MessageError]:
        """Every folder's STATUS (pipelined where the inner source can), retried as a
        whole; after a connection lost during it, one STATUS at a time, in case it was the
        pipelining that the server or something on the way did not take."""
        tries = 0

        def call() -> list[FolderStatus | MessageError]:
            nonlocal tries
            tries += 1
            return statuses_of(self.inner, folders, pipelined=tries == 1)

        return self._do(f"STATUS of {len(folders)} folders", call)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        return iter(self._do(f"listing {folder.name!r}",
                             lambda: list(self.inner.list_new(folder, checkpoint, since))))

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return iter(self._do(f"reading flags of {folder.name!r}",
                             lambda: list(self.inner.flag_changes(folder, checkpoint, status))))

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        """The batch, surviving drops and bad messages; what arrived is kept.

        After each failure the rest is fetched in halves, down to one message,
        so a link that never carries a whole batch still carries it piece by
        piece, and a message is never fetched twice once it has arrived. A
        single message that fails on its own (a response that cannot be
        parsed, a literal larger than listed, or the same drop three times on
        fresh connections) is skipped and reported through
        :meth:`take_failures`; the rest of the folder goes on.
        """
        got: list[Message] = []
        have: set[str] = set()
        remaining = list(refs)
        size = max(1, len(remaining))
        attempt = 0
        strikes: dict[str, int] = {}
        while remaining:
            part = remaining[:size]
            before = len(got)
            try:
                for msg in self.inner.fetch(folder, part):
                    if msg.key not in have:
                        have.add(msg.key)
                        got.append(msg)
                remaining = remaining[len(part):]
                attempt = 0
                continue
            except MailmigrateError as exc:
                if isinstance(exc, FolderError) or not (exc.transient or isinstance(exc, MessageError)):
                    raise
                error: MailmigrateError = exc
            progressed = len(got) > before
            remaining = [r for r in remaining if r.key not in have]
            # Throttling is about the server, not this message: never a strike.
            if len(part) == 1 and not progressed and not isinstance(error, ThrottledError):
                key = part[0].key
                strikes[key] = strikes.get(key, 0) + 1
                if not error.transient or strikes[key] >= 3:
                    self._failures.setdefault(folder.name, []).append(f"message {key}: {error}")
                    self.reporter.warn(f"{folder.name}: message {key} skipped: {error}")
                    remaining = [r for r in remaining if r.key != key]
                    progressed = True
            if progressed:
                attempt = 0
            elif error.transient:
                attempt += 1  # consecutive drops without a part getting through
            size = max(1, min(size, len(remaining)) // 2)
            # Whatever went wrong, the stream may be out of step: never reuse it.
            self._reconnect(error, attempt, f"fetching from {folder.name!r}")
        return iter(got)

    def _reconnect(self, last: MailmigrateError, attempt: int, what: str) -> None:
        """Reconnect with backoff; a server that stays away ends the run (exit 4)."""
        while True:
            if attempt > self.policy.retries:
                raise ConnectError(_gave_up(last, self.policy.retries)) from None
            wait = self.policy.backoff(max(attempt, 1))
            if last.transient:
                self.reporter.warn(f"{last}; reconnecting in {wait:.1f} s (attempt {max(attempt, 1)} "
                                   f"of {self.policy.retries}) to continue {what}")
                self.policy.sleep(wait)
            try:
                self._reconnectable.reconnect()
            except MailmigrateError as again:
                if not again.transient:
                    raise
                last, attempt = again, attempt + 1
                continue
            self.policy.count()
            return

    def take_failures(self, folder: Folder) -> list[str]:
        """Messages of ``folder`` skipped by :meth:`fetch` (and forgets them)."""
        return self._failures.pop(folder.name, [])

    def transfer_order(self, folders: Sequence[Folder]) -> list[list[Folder]]:
        """The inner source's order (see :class:`~migrate.stores.base.OrderedSource`)."""
        if isinstance(self.inner, OrderedSource):
            return self.inner.transfer_order(folders)
        return [list(folders)]

    def close(self) -> None:
        self.inner.close()


class RetryingDestination(_RetryingStore):
    """A :class:`DestinationStore` that reconnects and re-sends only what is still missing."""

    def __init__(self, inner: DestinationStore, policy: RetryPolicy,
                 reporter: Reporter | None = None) -> None:
        super().__init__(inner, policy, reporter)
        self.inner = inner

    def _settle(self, folder: Folder) -> None:
        if isinstance(self.inner, SettlingDestination):
            self.inner.settle(folder)

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        return self._do(f"opening {folder.name!r}", lambda: self.inner.checkpoint(folder, status))

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        return self.inner.missing(folder, refs)

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        todo = list(messages)

        def send() -> int:
            return self.inner.add_messages(folder, todo)

        def settle() -> None:
            # What the dropped connection may have appended is found (or
            # forgotten) first; then only the rest of the batch is sent again.
            self._settle(folder)
            still = {r.key for r in self.inner.missing(
                folder, [MessageRef(key=m.key, uid=m.uid, size=m.size) for m in todo])}
            todo[:] = [m for m in todo if m.key in still]

        return self._do(f"storing into {folder.name!r}", send, settle)

    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        """The inner destination's answer (it only reads its own records)."""
        if not isinstance(self.inner, LinkingDestination):
            return set()
        return self.inner.linkable(folder, refs)

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        inner = self.inner
        if not isinstance(inner, LinkingDestination):
            return 0
        # Linking twice is harmless (a label set again, a placement found), so a
        # dropped connection just links the whole run again.
        return self._do(f"linking in {folder.name!r}", lambda: inner.link(folder, refs),
                        lambda: self._settle(folder))

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        return self._do(f"updating flags in {folder.name!r}",
                        lambda: self.inner.update_flags(folder, changes))

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        self._do(f"finishing {folder.name!r}",
                 lambda: self.inner.finish_folder(folder, status, complete))

    def finish_run(self) -> None:
        """The inner destination's last check (late copies), retried like any call."""
        if isinstance(self.inner, FinishingDestination):
            self._do("the last check for late copies", self.inner.finish_run)

    def close(self) -> None:
        self.inner.close()


__all__ = ["DEFAULT_RETRIES", "DEFAULT_RETRY_DELAY", "FinishingDestination", "Reconnectable",
           "RetryPolicy", "RetryingDestination", "RetryingSource", "SettlingDestination",
           "open_retrying", "retry_call"]
