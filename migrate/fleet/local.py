"""The local pool: chunks on this machine, N at a time, under the per-host session caps.

No broker and no server: threads that each wait for one chunk's child
process (a process per chunk, so accounts stay isolated), and a count of
sessions per host that a chunk must fit in before it starts. Each account's
checkpoint state is a file next to the ledger, so a rerun of the same command,
after any kill, continues every account where its last chunk stopped.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from migrate.fleet.chunk import ChunkLimits, run_chunk
from migrate.fleet.hosts import HostSlots, Session, sessions
from migrate.fleet.ledger import AccountRow, ChunkReport, Ledger
from migrate.fleet.probe import probe


class LocalPool:
    """An :class:`migrate.fleet.passes.Executor` on this machine."""

    def __init__(self, ledger: Ledger, *, workers: int, per_host: Mapping[str, int],
                 limits: ChunkLimits, timeout: float = 60.0) -> None:
        self.ledger = ledger
        self.workers = max(1, workers)
        self.per_host = dict(per_host)
        self.limits = limits
        self.timeout = timeout
        self.slots = HostSlots()
        self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                        thread_name_prefix="mailmigrate-chunk")
        self._running: dict[Future[ChunkReport], tuple[int, list[Session]]] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def start(self, row: AccountRow, pass_: str) -> bool:
        if len(self._running) >= self.workers:
            return False
        held = sessions(row.spec, self.per_host, self.ledger.insecure)
        if not self.slots.try_take(held):
            return False
        insecure = self.ledger.insecure
        if pass_ == "verify":
            future = self._pool.submit(probe, row.spec, insecure=insecure, timeout=self.timeout)
        else:
            state = self.ledger.state_path(row.key)

            def started(proc: subprocess.Popen[bytes], account_id: int = row.id) -> None:
                with self._lock:
                    self._children[account_id] = proc

            future = self._pool.submit(run_chunk, row.spec, state_path=state, limits=self.limits,
                                       insecure=insecure, on_start=started)
        self._running[future] = (row.id, held)
        return True

    def wait(self, timeout: float) -> list[tuple[int, ChunkReport]]:
        if not self._running:
            return []
        done, _ = wait(list(self._running), timeout=timeout, return_when=FIRST_COMPLETED)
        out: list[tuple[int, ChunkReport]] = []
        for future in done:
            account_id, held = self._running.pop(future)
            self.slots.give_back(held)
            with self._lock:
                self._children.pop(account_id, None)
            exc = future.exception()
            report = future.result() if exc is None else ChunkReport(
                ok=False, error=f"the chunk could not run: {exc}")
            out.append((account_id, report))
        return out

    def in_flight(self) -> list[int]:
        return [account_id for account_id, _ in self._running.values()]

    def adopt(self, rows: Sequence[AccountRow], mode: str) -> None:
        """Nothing to take over: a killed pool's chunks died with it."""

    def stop(self) -> None:
        with self._lock:
            children = list(self._children.values())
        for proc in children:
            with contextlib.suppress(OSError):
                proc.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


__all__ = ["LocalPool"]
