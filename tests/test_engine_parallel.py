"""The engine's parallel folders (``--max-connections``), driven with in-memory sources
into a real SQLite archive, for the cases a live server cannot produce on demand:
an extra connection that goes away for good, the first connection failing, and a
destination failure while several folders are in flight.

The end-to-end behaviour against Dovecot is in tests/faults/test_fault_connections.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import date

import pytest

from migrate.engine.transfer import TransferOptions, transfer
from migrate.errors import ArchiveError, ConnectError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import RecordingReporter
from migrate.stores.sqlite_archive import SqliteArchive

FOLDERS = [f"F{i}" for i in range(6)]
PER_FOLDER = 30


def body(folder: str, uid: int) -> bytes:
    return f"Subject: {folder} {uid}\r\nMessage-ID: <{folder}.{uid}@t>\r\n\r\n{'x' * 500}\r\n".encode()


class MemorySource:
    """An account in memory; ``fail_after`` fetches, every call raises ConnectError
    (a connection that is gone and cannot be re-opened)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.fetches = 0
        self.closed = False

    def _alive(self) -> None:
        if self.fail_after is not None and self.fetches >= self.fail_after:
            raise ConnectError("connection to memory lost; gave up after 0 reconnects")

    def list_folders(self) -> list[Folder]:
        return [Folder(name=n, server_name=n) for n in FOLDERS]

    def status(self, folder: Folder) -> FolderStatus:
        self._alive()
        return FolderStatus(uidvalidity=1, uidnext=PER_FOLDER + 1, messages=PER_FOLDER,
                            highestmodseq=1)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        self._alive()
        return iter([MessageRef(str(u), len(body(folder.name, u)), u)
                     for u in range(checkpoint.last_uid + 1, PER_FOLDER + 1)])

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        self._alive()
        return iter(())

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        self._alive()
        self.fetches += 1
        return iter([Message(key=r.key, raw=body(folder.name, int(r.key)), uid=int(r.key))
                     for r in refs])

    def close(self) -> None:
        self.closed = True


def opener(sources: list[MemorySource]):
    lock = threading.Lock()
    made: list[MemorySource] = []

    def open_source() -> MemorySource:
        with lock:
            src = sources[len(made)] if len(made) < len(sources) else MemorySource()
            made.append(src)
            return src
    return open_source, made


def archived(path) -> dict[str, list[int]]:
    store = SqliteArchive(path, readonly=True)
    try:
        return {f.name: sorted(m.uid for m in store.iter_messages(f)) for f in store.list_folders()}
    finally:
        store.close()


OPTIONS = TransferOptions(connections=3, batch_messages=5)


def test_an_extra_connection_that_goes_away_hands_its_folder_back(tmp_path):
    dest = SqliteArchive(tmp_path / "a.sqlite", account="me@memory")
    open_source, made = opener([MemorySource(fail_after=2)])
    reporter = RecordingReporter()
    try:
        result = transfer(MemorySource(), dest, OPTIONS, reporter, open_source=open_source)
    finally:
        dest.close()
    assert result.new_messages == len(FOLDERS) * PER_FOLDER
    assert not result.errors
    warnings = [text for kind, text in reporter.events if kind == "warn"]
    assert any("given up" in w for w in warnings), warnings
    assert made[0].closed  # the lost connection was closed, not leaked
    got = archived(tmp_path / "a.sqlite")
    assert got == {name: list(range(1, PER_FOLDER + 1)) for name in FOLDERS}


def test_a_lost_first_connection_costs_nothing_while_others_work(tmp_path):
    dest = SqliteArchive(tmp_path / "a.sqlite", account="me@memory")
    try:
        result = transfer(MemorySource(fail_after=1), dest, OPTIONS, open_source=opener([])[0])
    finally:
        dest.close()
    assert result.new_messages == len(FOLDERS) * PER_FOLDER and not result.errors
    assert archived(tmp_path / "a.sqlite") == {n: list(range(1, PER_FOLDER + 1)) for n in FOLDERS}


def test_when_every_connection_is_lost_the_run_ends_with_the_error_and_resumes(tmp_path):
    dest = SqliteArchive(tmp_path / "a.sqlite", account="me@memory")
    dying = opener([MemorySource(fail_after=2), MemorySource(fail_after=2)])[0]
    try:
        with pytest.raises(ConnectError, match="gave up"):
            transfer(MemorySource(fail_after=1), dest, OPTIONS, open_source=dying)
    finally:
        dest.close()
    stored = archived(tmp_path / "a.sqlite")
    assert 0 < sum(len(v) for v in stored.values()) < len(FOLDERS) * PER_FOLDER
    # what was stored is whole and stays: the next run adds exactly the rest
    dest = SqliteArchive(tmp_path / "a.sqlite", account="me@memory")
    try:
        result = transfer(MemorySource(), dest, OPTIONS, open_source=opener([])[0])
    finally:
        dest.close()
    assert archived(tmp_path / "a.sqlite") == {n: list(range(1, PER_FOLDER + 1)) for n in FOLDERS}
    assert result.new_messages == len(FOLDERS) * PER_FOLDER - sum(len(v) for v in stored.values())


class FullDisk(SqliteArchive):
    """A destination that fails on its third batch, as a full disk would."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adds = 0
        self.adds_after_failure = 0
        self.failed = False

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        if self.failed:
            self.adds_after_failure += 1
        self.adds += 1
        if self.adds == 3:
            self.failed = True
            raise ArchiveError("cannot write the archive: No space left on device")
        return super().add_messages(folder, messages)


def test_a_destination_failure_is_fatal_and_nothing_is_written_after_it(tmp_path):
    dest = FullDisk(tmp_path / "a.sqlite", account="me@memory")
    open_source, _ = opener([])
    try:
        with pytest.raises(ArchiveError, match="No space"):
            transfer(MemorySource(), dest, OPTIONS, open_source=open_source)
        assert dest.adds_after_failure == 0
    finally:
        dest.close()
    got = archived(tmp_path / "a.sqlite")
    assert sum(len(v) for v in got.values()) == 2 * OPTIONS.batch_messages
