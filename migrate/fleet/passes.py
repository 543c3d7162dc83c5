"""Passes over a batch, as migration admins run them, and the loop that drives them.

``verify`` counts both sides; ``run`` is the full pass the first time and a
delta pass after; ``final`` is the cutover's last delta, after which an
account is done; ``retry`` reruns only the failed accounts, in the pass they
failed in. Every pass is a sequence of bounded chunks per account; the
dispatcher hands chunks to an executor (a local pool, or workers behind a
broker), records each report in the ledger, and goes on until every account
has finished its pass or run out of attempts. Killed at any instant, the same
command continues: the ledger says which pass each account is in, and the
checkpoints say how far each got.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from migrate.fleet.chunk import ChunkLimits
from migrate.fleet.ledger import AccountRow, ChunkReport, Ledger

MODES = ("verify", "run", "final", "retry")
#: States a pass may take up, per mode (retry: the failed ones).
_TAKES = {"verify": ("new", "verified", "running", "synced", "done"),
          "run": ("new", "verified", "running", "synced"),
          "final": ("new", "verified", "running", "synced"),
          "retry": ("failed",)}


@dataclass(frozen=True)
class PassOptions:
    mode: str = "run"
    attempts: int = 3
    #: Wait before attempt n+1: ``retry_delay * n`` seconds.
    retry_delay: float = 5.0
    limits: ChunkLimits = field(default_factory=ChunkLimits)


class Executor(Protocol):
    """Where chunks run: :class:`migrate.fleet.local.LocalPool` or the broker's workers."""

    def start(self, row: AccountRow, pass_: str) -> bool:
        """Start a chunk of ``row``; False when it cannot start now (no free slot)."""

    def wait(self, timeout: float) -> list[tuple[int, ChunkReport]]:
        """Reports of chunks that ended, waiting up to ``timeout`` seconds for one."""

    def in_flight(self) -> list[int]: ...

    def adopt(self, rows: Sequence[AccountRow], mode: str) -> None:
        """Take over chunks a killed dispatcher handed out (the broker's), if any."""

    def stop(self) -> None:
        """Stop chunks still running (they go on from their checkpoint next time)."""


class Progress(Protocol):
    def start(self, mode: str, rows: Sequence[AccountRow]) -> None: ...

    def chunk_started(self, row: AccountRow, pass_: str) -> None: ...

    def chunk_done(self, row: AccountRow, pass_: str, report: ChunkReport, finished: bool,
                   failed: bool) -> None: ...

    def finish(self, summary: PassSummary) -> None: ...


@dataclass
class PassSummary:
    mode: str
    accounts: int = 0
    finished: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    with_errors: list[tuple[str, int, str]] = field(default_factory=list)
    messages: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    differing: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.failed and not self.with_errors


def pass_for(row: AccountRow, mode: str) -> str:
    """The pass an account is in when ``mode`` takes it up."""
    if mode == "verify":
        return "verify"
    if mode == "final":
        return "final"
    if mode == "retry" and row.pass_:
        return row.pass_
    if row.state == "running" and row.pass_ in ("full", "delta", "final"):
        return row.pass_  # a pass the last run did not finish goes on
    return "full" if row.passes == 0 else "delta"


def select(ledger: Ledger, mode: str) -> list[AccountRow]:
    rows = ledger.accounts(_TAKES[mode])
    if mode == "retry":
        ledger.reset_attempts(r.id for r in rows)
        rows = [ledger.get(r.id) for r in rows]
    return rows


def drive(ledger: Ledger, executor: Executor, options: PassOptions, progress: Progress,
          rows: Sequence[AccountRow] | None = None) -> PassSummary:
    """Run ``options.mode`` over ``rows`` (default: the accounts the mode takes up)."""
    rows = list(rows if rows is not None else select(ledger, options.mode))
    summary = PassSummary(options.mode, accounts=len(rows))
    started = time.monotonic()
    run_id = ledger.start_run(options.mode)
    passes = {r.id: pass_for(r, options.mode) for r in rows}
    current = {r.id: r for r in rows}
    ready: list[tuple[float, int]] = [(0.0, r.id) for r in rows]
    heapq.heapify(ready)
    progress.start(options.mode, rows)
    executor.adopt(rows, options.mode)
    for account_id in executor.in_flight():  # adopted from a killed dispatcher (broker)
        ready = [item for item in ready if item[1] != account_id]
    heapq.heapify(ready)
    try:
        while ready or executor.in_flight():
            now = time.monotonic()
            blocked: list[tuple[float, int]] = []
            while ready and ready[0][0] <= now:
                item = heapq.heappop(ready)
                row = current[item[1]]
                if row.id in executor.in_flight():
                    continue
                if row.pass_ != passes[row.id] or (row.state != "running" and passes[row.id] != "verify"):
                    ledger.begin(row.id, passes[row.id])  # durable before the chunk starts
                    current[row.id] = row = ledger.get(row.id)
                if executor.start(row, passes[row.id]):
                    progress.chunk_started(row, passes[row.id])
                else:
                    blocked.append(item)
            for item in blocked:
                heapq.heappush(ready, item)
            wait = 1.0
            if ready and not blocked:
                wait = max(0.0, min(wait, ready[0][0] - time.monotonic()))
            for account_id, report in executor.wait(wait if executor.in_flight() else
                                                    min(wait, 0.2)):
                row = current[account_id]
                pass_ = passes[account_id]
                if report.ok:
                    finished = pass_ == "verify" or not report.more
                    ledger.record(account_id, pass_, report, attempts=0, finished=finished,
                                  failed=False)
                    failed = False
                else:
                    attempts = row.attempts + 1
                    failed = attempts >= options.attempts
                    finished = False
                    ledger.record(account_id, pass_, report, attempts=attempts, finished=False,
                                  failed=failed)
                    if not failed:
                        heapq.heappush(ready, (time.monotonic() + options.retry_delay * attempts,
                                               account_id))
                summary.messages += report.messages
                summary.bytes += report.bytes
                current[account_id] = row = ledger.get(account_id)
                if report.ok and not finished:
                    heapq.heappush(ready, (0.0, account_id))
                progress.chunk_done(row, pass_, report, finished, failed)
                _tally(summary, row, report, finished, failed)
    except BaseException:
        executor.stop()
        raise
    finally:
        summary.wall_s = time.monotonic() - started
        ledger.finish_run(run_id, summary.wall_s, summary.messages, summary.bytes)
    progress.finish(summary)
    return summary


def _tally(summary: PassSummary, row: AccountRow, report: ChunkReport, finished: bool,
           failed: bool) -> None:
    if failed:
        summary.failed.append((row.label, report.error or "failed"))
    elif finished:
        summary.finished += 1
        if row.errors:
            summary.with_errors.append((row.label, row.errors, row.last_error or ""))
        if report.verify is not None and not report.verify.get("equal", True):
            summary.differing.append(row.label)


__all__ = ["MODES", "Executor", "PassOptions", "PassSummary", "Progress", "drive", "pass_for",
           "select"]
