"""Folder boundaries on one connection: the next folder's first batch is fetched while
the last batch of the folder before is stored (``_Tail`` in migrate.engine.transfer),
into destinations whose folders are independent (the archives).

What must not change with it, each shown here on a real SQLite archive with an
in-memory source: every folder's durable steps keep their order (its last batch,
then its finish, then its report, all before the next folder writes or reports
anything); an error in the folder before stays that folder's; a failure in the next
folder still lets the one before be stored; a message the folder before holds by
Gmail ID is linked, not fetched again; an IMAP-like destination keeps the plain order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import date

import pytest

from migrate.engine.transfer import TransferOptions, transfer
from migrate.errors import ConnectError, MessageError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import RecordingReporter
from migrate.results import FolderResult
from migrate.stores.sqlite_archive import SqliteArchive

PER_FOLDER = 12
BATCH = 5  # 12 messages: batches of 5, 5 and 2


def raw(folder: str, uid: int) -> bytes:
    return f"Message-ID: <{folder}.{uid}@t>\r\nSubject: {folder} {uid}\r\n\r\nbody\r\n".encode()


class Source:
    """Folders A, B, C of PER_FOLDER messages each. ``events`` is shared with the
    destination, so that one list shows the order of both sides."""

    def __init__(self, events: list[tuple[str, ...]], folders: Sequence[str] = ("A", "B", "C"),
                 gid: bool = False) -> None:
        self.events = events
        self.names = list(folders)
        self.gid = gid
        self.first_fetch = {n: threading.Event() for n in self.names}
        self.fail_fetch: set[tuple[str, int]] = set()  # (folder, first uid of the batch)
        self.fail_listing: dict[str, Exception] = {}
        self.extra: dict[str, int] = {}  # folder: messages past PER_FOLDER (new mail)
        self.flagged: set[str] = set()  # folders whose first message got \\Flagged

    def list_folders(self) -> list[Folder]:
        return [Folder(name=n, server_name=n) for n in self.names]

    def _count(self, folder: Folder) -> int:
        return PER_FOLDER + self.extra.get(folder.name, 0)

    def status(self, folder: Folder) -> FolderStatus:
        n = self._count(folder)
        return FolderStatus(uidvalidity=1, uidnext=n + 1, messages=n,
                            highestmodseq=2 if folder.name in self.flagged else 1)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        if folder.name in self.fail_listing:
            raise self.fail_listing[folder.name]
        return iter([MessageRef(str(u), len(raw(folder.name, u)), u,
                                gid=f"g{self._shown(folder, u)}" if self.gid else None)
                     for u in range(checkpoint.last_uid + 1, self._count(folder) + 1)])

    def _shown(self, folder: Folder, uid: int) -> int:
        """Which message of the first folder a Gmail-like folder shows at ``uid``: the
        others show them newest first, so their first batch holds the first folder's
        last messages."""
        return uid if folder.name == self.names[0] else PER_FOLDER + 1 - uid

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        if folder.name in self.flagged:
            return iter([FlagChange(key="1", uid=1, flags=("\\Flagged",))])
        return iter(())

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        self.events.append(("fetch", folder.name, refs[0].key))
        self.first_fetch[folder.name].set()
        if (folder.name, int(refs[0].key)) in self.fail_fetch:
            raise MessageError(f"FETCH failed in {folder.name}")
        # A Gmail-like source shows one message in every folder (same content, same gid)
        return iter([Message(key=r.key, uid=r.uid, gid=r.gid,
                             raw=raw("all", self._shown(folder, int(r.key))) if self.gid
                             else raw(folder.name, int(r.key)))
                     for r in refs])

    def close(self) -> None:
        pass


class Archive(SqliteArchive):
    """The real archive, noting its durable steps in ``events``. The last batch of
    ``hold`` waits (up to 10 s) for the next folder's first fetch to begin: with the
    overlap it begins at once; without it, only after this store returns."""

    events: list[tuple[str, ...]]
    source: Source
    hold: str | None = None
    overlapped: bool = False

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        last = max(m.uid or 0 for m in messages) == PER_FOLDER
        if last and folder.name == self.hold:
            nxt = self.source.names[self.source.names.index(folder.name) + 1]
            self.overlapped = self.source.first_fetch[nxt].wait(10)
        self.events.append(("store", folder.name, str(min(m.uid or 0 for m in messages))))
        return super().add_messages(folder, messages)

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        self.events.append(("link", folder.name, refs[0].key))
        return super().link(folder, refs)

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        self.events.append(("flags", folder.name))
        return super().update_flags(folder, changes)

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        self.events.append(("finish", folder.name))
        super().finish_folder(folder, status, complete)


class Reporter(RecordingReporter):
    def __init__(self, events: list[tuple[str, ...]]) -> None:
        super().__init__()
        self.log = events

    def folder_start(self, folder: str, expected_messages: int) -> None:
        self.log.append(("folder_start", folder))

    def folder_done(self, result: FolderResult) -> None:
        self.log.append(("folder_done", result.name))


def setup(tmp_path, **source_args):
    events: list[tuple[str, ...]] = []
    source = Source(events, **source_args)
    dest = Archive(tmp_path / "a.sqlite", account="t@x")
    dest.events, dest.source = events, source
    return events, source, dest, Reporter(events)


def held(path) -> dict[str, list[int]]:
    archive = SqliteArchive(path, account="t@x", readonly=True)
    try:
        rows = archive.conn.execute(
            "SELECT f.name, fm.uid FROM folder_messages fm JOIN folders f ON f.id = fm.folder_id"
            " ORDER BY f.name, fm.uid").fetchall()
    finally:
        archive.close()
    out: dict[str, list[int]] = {}
    for name, uid in rows:
        out.setdefault(name, []).append(uid)
    return out


def where(events: list[tuple[str, ...]], *event: str) -> int:
    return events.index(tuple(event))


def test_the_next_folder_is_fetched_while_the_last_batch_before_it_is_stored(tmp_path):
    events, source, dest, reporter = setup(tmp_path)
    dest.hold = "A"
    try:
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    assert dest.overlapped, events
    assert where(events, "fetch", "B", "1") < where(events, "store", "A", "11")
    assert held(tmp_path / "a.sqlite") == {n: list(range(1, PER_FOLDER + 1)) for n in "ABC"}
    assert [f.new_messages for f in result.folders] == [PER_FOLDER] * 3
    assert not any(f.error for f in result.folders)


def test_every_folder_is_stored_finished_and_reported_before_the_next_writes(tmp_path):
    events, source, dest, reporter = setup(tmp_path)
    try:
        transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    steps = [e for e in events if e[0] != "fetch"]
    for name in "ABC":
        mine = [e for e in steps if e[1] == name]
        assert mine == [("folder_start", name), ("store", name, "1"), ("store", name, "6"),
                        ("store", name, "11"), ("finish", name), ("folder_done", name)], mine
    # the folders' steps do not interleave: A's all come before B's, B's before C's
    assert [e[1] for e in steps] == sorted(e[1] for e in steps), steps


def test_an_error_in_the_last_batch_before_stays_that_folders_own(tmp_path):
    events, source, dest, reporter = setup(tmp_path)
    source.fail_fetch.add(("A", 11))
    try:
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    a, b, c = result.folders
    assert "FETCH failed in A" in (a.error or "")
    assert b.error is None and c.error is None
    assert b.new_messages == c.new_messages == PER_FOLDER
    assert ("finish", "A") not in events  # not marked done: the next run lists A again
    assert held(tmp_path / "a.sqlite") == {"A": list(range(1, 11)),
                                           "B": list(range(1, PER_FOLDER + 1)),
                                           "C": list(range(1, PER_FOLDER + 1))}
    assert where(events, "folder_done", "A") < where(events, "folder_start", "B")


def test_a_folder_that_fails_to_list_still_lets_the_one_before_finish(tmp_path):
    events, source, dest, reporter = setup(tmp_path)
    source.fail_listing["B"] = MessageError("SELECT failed for folder 'B'")
    try:
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    a, b, c = result.folders
    assert a.error is None and a.new_messages == PER_FOLDER
    assert "SELECT failed" in (b.error or "")
    assert c.new_messages == PER_FOLDER
    assert where(events, "finish", "A") < where(events, "folder_done", "A") < \
        where(events, "folder_done", "B")


def test_a_lost_connection_in_the_next_folder_keeps_what_was_fetched_before(tmp_path):
    events, source, dest, reporter = setup(tmp_path)
    source.fail_listing["B"] = ConnectError("connection to memory lost")
    with pytest.raises(ConnectError):
        try:
            transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
        finally:
            dest.close()
    # A's last batch was fetched before B was opened: it is stored and A is done
    assert held(tmp_path / "a.sqlite") == {"A": list(range(1, PER_FOLDER + 1))}
    assert ("finish", "A") in events


def test_a_message_the_folder_before_holds_by_gid_is_linked_not_fetched(tmp_path):
    """Gmail's labels: B shows A's messages again, its first batch A's last ones. B's
    batches are only looked up once A's last batch is stored, so none is fetched twice."""
    events, source, dest, reporter = setup(tmp_path, folders=("A", "B"), gid=True)
    try:
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    assert [e for e in events if e[0] == "fetch"] == [("fetch", "A", "1"), ("fetch", "A", "6"),
                                                      ("fetch", "A", "11")]
    assert result.folders[1].linked == PER_FOLDER


def test_a_folder_skipped_as_unchanged_or_noselect_still_settles_the_one_before(tmp_path):
    events, source, dest, reporter = setup(tmp_path, folders=("A", "B", "C", "D"))
    noselect = Folder(name="C", server_name="C", selectable=False)
    source.list_folders = lambda: [noselect if f.name == "C" else f  # type: ignore[method-assign]
                                   for f in Source.list_folders(source)]
    try:
        transfer(source, dest, TransferOptions(include=["B"], batch_messages=BATCH))
        events.clear()
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    assert [f.unchanged for f in result.folders] == [False, True, True, False]
    assert held(tmp_path / "a.sqlite") == {n: list(range(1, PER_FOLDER + 1)) for n in "ABD"}
    assert where(events, "finish", "A") < where(events, "folder_done", "A") < \
        where(events, "folder_done", "B") < where(events, "folder_done", "C") < \
        where(events, "folder_start", "D")


def test_the_next_folders_flag_changes_wait_for_the_folder_before(tmp_path):
    events, source, dest, reporter = setup(tmp_path, folders=("A", "B"))
    try:
        transfer(source, dest, TransferOptions(batch_messages=BATCH))
        source.extra["A"] = 8  # new mail in A: batches 13-17 and 18-20
        source.flagged.add("B")  # a flag changed in B
        events.clear()
        result = transfer(source, dest, TransferOptions(batch_messages=BATCH), reporter)
    finally:
        dest.close()
    assert result.folders[1].flags_updated == 1
    assert where(events, "store", "A", "18") < where(events, "finish", "A") < \
        where(events, "folder_done", "A") < where(events, "flags", "B")


class PlainOrder(Archive):
    """The same archive, not saying that its folders are independent (as an IMAP
    destination does not)."""

    folders_independent = False


def test_a_destination_that_does_not_say_its_folders_are_independent_keeps_the_plain_order(
        tmp_path):
    events: list[tuple[str, ...]] = []
    source = Source(events)
    dest = PlainOrder(tmp_path / "a.sqlite", account="t@x")
    dest.events, dest.source = events, source
    try:
        transfer(source, dest, TransferOptions(batch_messages=BATCH), Reporter(events))
    finally:
        dest.close()
    assert where(events, "finish", "A") < where(events, "fetch", "B", "1")
    assert where(events, "finish", "B") < where(events, "fetch", "C", "1")
