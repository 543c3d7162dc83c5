"""The archive's WAL copied back into the file on a thread of its own.

In WAL mode every page is written twice: into the WAL at commit, into the
database at the checkpoint. SQLite runs the checkpoint inside the commit that
crosses ``wal_autocheckpoint``, so during a backup the writer stops for it
every few batches. A checkpoint does not need the write lock: here a second
connection runs a PASSIVE one after each commit, while the writer goes on
(sqlite3 releases the GIL). The writer's own automatic checkpoint stays, at a
higher mark, for the case where this one falls behind.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class BackgroundCheckpoint:
    """``committed()`` after each write transaction; ``stop()`` before the writer closes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._due = threading.Event()
        self._stopping = False
        #: checkpoints run so far (for tests: the work left the writer's commits)
        self.runs = 0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="mailmigrate-checkpoint")
        self._thread.start()

    def committed(self) -> None:
        self._due.set()

    def stop(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self._path}?mode=rw", uri=True, isolation_level=None,
                                   timeout=10.0)
        except sqlite3.Error:
            return  # the writer's automatic checkpoints still run
        try:
            conn.execute("PRAGMA synchronous=FULL")
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.runs += 1
        except sqlite3.Error:
            return
        finally:
            conn.close()
