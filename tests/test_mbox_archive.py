"""The mbox-tree archive: exactness, checkpoints, crash recovery, hostile names, errors."""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.errors import ArchiveError, ArchiveLockedError
from migrate.model import FlagChange, Folder, FolderStatus, Message, MessageRef
from migrate.stores.base import ArchiveReader, DestinationStore
from migrate.stores.mbox_archive import MboxArchive

CORPUS_DIRS = [
    Path(__file__).parent / "data" / "corpus",
    Path(__file__).parent.parent.parent / "shared" / "corpus",
]
TZ = timezone(timedelta(hours=-5))
INBOX = Folder("INBOX", "INBOX", "/")


def status(uidvalidity: int | None = 1, uidnext: int | None = None, messages: int = 0) -> FolderStatus:
    return FolderStatus(uidvalidity=uidvalidity, uidnext=uidnext, messages=messages)


def msg(uid: int | None, raw: bytes, key: str | None = None, flags: tuple[str, ...] = ()) -> Message:
    return Message(
        key=key if key is not None else str(uid),
        raw=raw,
        flags=flags,
        internaldate=datetime(2024, 1, 2, 3, 4, 5, tzinfo=TZ),
        uid=uid,
    )


def synthetic(i: int) -> bytes:
    """Messages with the shapes that matter: CRLF, LF, From-lines, no final newline."""
    body = [
        b"From: a@example.org\r\nSubject: %d\r\n\r\nFrom here\r\n>From there\r\n" % i,
        b"Subject: %d\n\nplain lf\n.\n" % i,
        b"Subject: %d\r\n\r\nno final newline" % i,
        b"Subject: %d\r\nX: mixed\n\r\nbare\rcr\x00nul\r\n" % i,
        b"",
    ]
    return body[i % len(body)]


def corpus() -> list[bytes]:
    for d in CORPUS_DIRS:
        if d.is_dir():
            return [p.read_bytes() for p in sorted(d.rglob("*.eml"))]
    return [synthetic(i) for i in range(50)]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[MboxArchive]:
    arc = MboxArchive(tmp_path / "arc", account="user@example.org", lock_wait=0.2)
    yield arc
    arc.close()


def index(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / ".mailmigrate" / "index.sqlite")


def test_implements_protocols(archive: MboxArchive) -> None:
    assert isinstance(archive, DestinationStore)
    reader: ArchiveReader = archive
    assert reader.list_folders() == []


def test_round_trip_is_byte_exact(archive: MboxArchive) -> None:
    raws = corpus()
    archive.checkpoint(INBOX, status())
    batch = [msg(i + 1, raw, flags=("\\Seen", "$Forwarded")) for i, raw in enumerate(raws)]
    assert archive.add_messages(INBOX, batch[: len(batch) // 2]) == len(batch) // 2
    assert archive.add_messages(INBOX, batch[len(batch) // 2 :]) == len(batch) - len(batch) // 2
    out = list(archive.iter_messages(INBOX))
    assert [m.raw for m in out] == raws
    assert [m.uid for m in out] == [m.uid for m in batch]
    assert all(m.flags == ("$Forwarded", "\\Seen") for m in out)
    assert all(m.internaldate == batch[0].internaldate for m in out)
    assert out[0].internaldate is not None and out[0].internaldate.utcoffset() == timedelta(hours=-5)
    # Other tools see the same number of messages in the file.
    box = mailbox.mbox(archive.root / "INBOX.mbox", create=False)
    try:
        assert len(box) == len(raws)
    finally:
        box.close()


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_arbitrary_bytes(tmp_path: Path, raws: list[bytes]) -> None:
    root = tmp_path / f"h{time.monotonic_ns()}"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status())
        arc.add_messages(INBOX, [msg(i + 1, r) for i, r in enumerate(raws)])
    with MboxArchive(root, readonly=True) as arc:
        assert [m.raw for m in arc.iter_messages(INBOX)] == raws


def test_checkpoint_and_last_uid(archive: MboxArchive) -> None:
    cp = archive.checkpoint(INBOX, status(7))
    assert (cp.uidvalidity, cp.last_uid, cp.messages) == (7, 0, 0)
    archive.add_messages(INBOX, [msg(3, b"a\r\n"), msg(10, b"b\r\n"), msg(5, b"c\r\n")])
    cp = archive.checkpoint(INBOX, status(7))
    assert (cp.uidvalidity, cp.last_uid, cp.messages) == (7, 10, 3)
    archive.finish_folder(INBOX, FolderStatus(uidvalidity=7, uidnext=11, messages=3, highestmodseq=99))
    cp = archive.checkpoint(INBOX, status(7))
    assert (cp.uidnext, cp.highestmodseq, cp.partial) == (11, 99, False)
    archive.finish_folder(INBOX, status(7, 12), complete=False)
    cp = archive.checkpoint(INBOX, status(7))
    assert (cp.uidnext, cp.partial) == (None, True)


def test_checkpoint_survives_reopen(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status(7))
        arc.add_messages(INBOX, [msg(4, b"x\r\n")])
        arc.finish_folder(INBOX, status(7, 5))
    with MboxArchive(root) as arc:
        cp = arc.checkpoint(INBOX, status(7))
        assert (cp.last_uid, cp.uidnext, cp.messages) == (4, 5, 1)


def test_duplicates_not_stored_twice(archive: MboxArchive) -> None:
    archive.checkpoint(INBOX, status())
    assert archive.add_messages(INBOX, [msg(1, b"one\r\n"), msg(2, b"two\r\n")]) == 2
    size = (archive.root / "INBOX.mbox").stat().st_size
    assert archive.add_messages(INBOX, [msg(1, b"one\r\n"), msg(2, b"two\r\n")]) == 0
    assert archive.add_messages(INBOX, [msg(3, b"3\r\n"), msg(3, b"3\r\n"), msg(2, b"two\r\n")]) == 1
    assert (archive.root / "INBOX.mbox").stat().st_size > size
    assert len(list(archive.iter_messages(INBOX))) == 3
    refs = [MessageRef(str(u), 1, uid=u) for u in (1, 2, 3, 4)]
    assert [r.uid for r in archive.missing(INBOX, refs)] == [4]
    assert archive.missing(Folder("Unknown"), refs) == refs


def test_uidless_source_keys(archive: MboxArchive) -> None:
    archive.checkpoint(INBOX, status(None))
    batch = [msg(None, b"p1\r\n", key="UIDL-a"), msg(None, b"p2\r\n", key="UIDL-b")]
    assert archive.add_messages(INBOX, batch) == 2
    assert archive.add_messages(INBOX, batch) == 0
    refs = [MessageRef("UIDL-a", 4), MessageRef("UIDL-c", 4)]
    assert [r.key for r in archive.missing(INBOX, refs)] == ["UIDL-c"]
    assert archive.update_flags(INBOX, [FlagChange("UIDL-b", ("\\Seen",))]) == 1
    out = {m.key: m for m in archive.iter_messages(INBOX)}
    assert out["UIDL-b"].flags == ("\\Seen",) and out["UIDL-a"].flags == ()


def test_update_flags(archive: MboxArchive) -> None:
    archive.checkpoint(INBOX, status())
    archive.add_messages(INBOX, [msg(1, b"a\r\n"), msg(2, b"b\r\n")])
    before = (archive.root / "INBOX.mbox").read_bytes()
    changes = [FlagChange("1", ("\\Seen", "\\Flagged"), uid=1), FlagChange("2", (), uid=2)]
    assert archive.update_flags(INBOX, changes) == 1
    assert archive.update_flags(INBOX, changes) == 0
    assert {m.uid: m.flags for m in archive.iter_messages(INBOX)} == {1: ("\\Flagged", "\\Seen"), 2: ()}
    assert (archive.root / "INBOX.mbox").read_bytes() == before  # flags never touch the mbox


def test_uidvalidity_change_reattaches_without_new_bytes(archive: MboxArchive) -> None:
    archive.checkpoint(INBOX, status(1))
    archive.add_messages(INBOX, [msg(1, b"same\r\n"), msg(2, b"gone\r\n"), msg(3, b"dup\r\n")])
    mbox = archive.root / "INBOX.mbox"
    size = mbox.stat().st_size
    cp = archive.checkpoint(INBOX, status(2))
    assert (cp.uidvalidity, cp.last_uid, cp.messages) == (2, 0, 0)
    assert archive.missing(INBOX, [MessageRef("1", 1, uid=1)])  # old UIDs mean nothing now
    added = archive.add_messages(
        INBOX, [msg(100, b"same\r\n", flags=("\\Seen",)), msg(101, b"dup\r\n"), msg(102, b"new\r\n")]
    )
    assert added == 3
    out = list(archive.iter_messages(INBOX))
    assert sorted((m.uid or 0, m.raw) for m in out) == [
        (0, b"gone\r\n"),
        (100, b"same\r\n"),
        (101, b"dup\r\n"),
        (102, b"new\r\n"),
    ]
    assert [m.flags for m in out if m.uid == 100] == [("\\Seen",)]
    # Only the genuinely new message added bytes.
    assert mbox.stat().st_size == size + len(b"From MAILER-DAEMON Tue Jan  2 08:04:05 2024\nnew\n\n")
    cp = archive.checkpoint(INBOX, status(2))
    assert (cp.last_uid, cp.messages) == (102, 3)


def test_crash_tail_is_truncated(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status())
        arc.add_messages(INBOX, [msg(1, b"kept\r\n")])
    mbox = root / "INBOX.mbox"
    good = mbox.read_bytes()
    # A batch written and fsync'ed whose index commit never happened.
    with mbox.open("ab") as fp:
        fp.write(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nhalf a mess")
    with MboxArchive(root) as arc:
        cp = arc.checkpoint(INBOX, status())
        assert cp.last_uid == 1
        assert mbox.read_bytes() == good
        assert arc.add_messages(INBOX, [msg(2, b"next\r\n")]) == 1
        assert [m.raw for m in arc.iter_messages(INBOX)] == [b"kept\r\n", b"next\r\n"]
    # Opening for write without a checkpoint call also cuts the tail.
    with mbox.open("ab") as fp:
        fp.write(b"garbage")
    with MboxArchive(root) as arc:
        arc.add_messages(INBOX, [msg(3, b"third\r\n")])
        assert [m.uid for m in arc.iter_messages(INBOX)] == [1, 2, 3]


def test_failed_commit_leaves_no_tail(archive: MboxArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive.checkpoint(INBOX, status())
    archive.add_messages(INBOX, [msg(1, b"a\r\n")])
    mbox = archive.root / "INBOX.mbox"
    size = mbox.stat().st_size
    written: list[int] = []

    @contextlib.contextmanager
    def failing_tx() -> Iterator[None]:
        written.append(mbox.stat().st_size)  # the frames are on disk by now
        raise ArchiveError("disk full")
        yield

    monkeypatch.setattr(archive, "_tx", failing_tx)
    with pytest.raises(ArchiveError, match="disk full"):
        archive.add_messages(INBOX, [msg(2, b"b\r\n")])
    monkeypatch.undo()
    assert written and written[0] > size
    assert mbox.stat().st_size == size
    assert archive.checkpoint(INBOX, status()).last_uid == 1
    assert archive.add_messages(INBOX, [msg(2, b"b\r\n")]) == 1
    assert [m.raw for m in archive.iter_messages(INBOX)] == [b"a\r\n", b"b\r\n"]


def test_missing_or_short_mbox_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status())
        arc.add_messages(INBOX, [msg(1, b"abc\r\n")])
    mbox = root / "INBOX.mbox"
    data = mbox.read_bytes()
    mbox.write_bytes(data[:-3])
    with MboxArchive(root) as arc, pytest.raises(ArchiveError, match="shorter"):
        arc.checkpoint(INBOX, status())
    mbox.unlink()
    with MboxArchive(root) as arc, pytest.raises(ArchiveError, match="missing"):
        list(arc.iter_messages(INBOX))


def test_corrupt_frame_names_folder_and_offset(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status())
        arc.add_messages(INBOX, [msg(1, b"first\r\n"), msg(2, b"second\r\n")])
    mbox = root / "INBOX.mbox"
    data = bytearray(mbox.read_bytes())
    pos = data.rindex(b"second")
    data[pos] = ord("S")
    mbox.write_bytes(bytes(data))
    with MboxArchive(root, readonly=True) as arc:
        it = iter(arc.iter_messages(INBOX))
        assert next(it).raw == b"first\r\n"
        with pytest.raises(ArchiveError, match=r"offset \d+ of folder 'INBOX'.*sha256"):
            next(it)


def test_hostile_folder_names_stay_inside(archive: MboxArchive, tmp_path: Path) -> None:
    names = [
        "../escape",
        "../../etc/passwd",
        "/abs/path",
        ".mailmigrate",
        ".mailmigrate/index",
        "a\\..\\..\\b",
        "nul\x00byte",
        "CON",
        "x" * 600,
        "Spam",
        "spam",
        "SPAM",
        "a:b",
        "a?b",
        "Entwürfe",
        "日本語/子",
    ]
    for i, name in enumerate(names):
        folder = Folder(name)
        archive.checkpoint(folder, status())
        archive.add_messages(folder, [msg(1, b"folder %d\r\n" % i)])
    root = os.path.realpath(archive.root)
    files = [p for p in Path(root).rglob("*.mbox") if p.is_file()]
    assert len(files) == len(names)
    assert all(os.path.realpath(p).startswith(root + os.sep) for p in files)
    assert not list(tmp_path.glob("escape*")) and not (tmp_path / "etc").exists()
    assert (Path(root) / "Entwürfe.mbox").is_file() and (Path(root) / "日本語" / "子.mbox").is_file()
    assert {p.name.casefold() for p in files if p.parent == Path(root)} >= {"spam.mbox"}
    assert len({str(p).casefold() for p in files}) == len(files)
    for i, name in enumerate(names):
        assert [m.raw for m in archive.iter_messages(Folder(name))] == [b"folder %d\r\n" % i]
    assert sorted(f.name for f, _, _ in archive.folder_summary()) == sorted(names)
    # The index's .mailmigrate dir holds only our files.
    assert sorted(p.name for p in (Path(root) / ".mailmigrate").iterdir() if "sqlite" not in p.name) == [
        "lock"
    ]


def test_mapping_is_stable_across_runs(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(Folder("spam"), status())
        arc.checkpoint(Folder("Spam"), status())
    with index(root) as db:
        first = dict(db.execute("SELECT name, path FROM folders"))
    with MboxArchive(root) as arc:
        arc.add_messages(Folder("Spam"), [msg(1, b"x\r\n")])
        arc.add_messages(Folder("spam"), [msg(1, b"y\r\n")])
    with index(root) as db:
        assert dict(db.execute("SELECT name, path FROM folders")) == first
    assert (root / first["spam"]).read_bytes().endswith(b"y\n\n")


def test_folder_summary_and_metadata(archive: MboxArchive) -> None:
    sent = Folder("Sent Items", "Sent Items", "/", special_use="\\Sent")
    parent = Folder("[Gmail]", "[Gmail]", "/", selectable=False)
    archive.checkpoint(parent, status(None))
    archive.checkpoint(sent, status())
    archive.checkpoint(INBOX, status())
    archive.add_messages(INBOX, [msg(1, b"12345"), msg(2, b"678")])
    summary = archive.folder_summary()
    assert [(f.name, n, size) for f, n, size in summary] == [
        ("INBOX", 2, 8),
        ("Sent Items", 0, 0),
        ("[Gmail]", 0, 0),
    ]
    assert summary[1][0].special_use == "\\Sent"
    assert summary[2][0].selectable is False
    assert archive.list_folders() == [f for f, _, _ in summary]
    assert list(archive.iter_messages(parent)) == []


def test_index_schema_and_permissions(archive: MboxArchive) -> None:
    archive.checkpoint(Folder("A/B"), status())
    archive.add_messages(Folder("A/B"), [msg(9, b"x\r\n", flags=("\\Seen",))])
    root = archive.root
    assert stat.S_IMODE((root / "A").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "A" / "B.mbox").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".mailmigrate" / "index.sqlite").stat().st_mode) == 0o600
    with index(root) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = db.execute("SELECT uid, key, size, offset, eol, flags, internaldate FROM messages").fetchone()
    assert row[:5] == (9, None, 3, 0, "crlf")
    assert json.loads(row[5]) == ["\\Seen"]
    assert datetime.fromisoformat(row[6]) == datetime(2024, 1, 2, 8, 4, 5, tzinfo=UTC)


def test_locked_archive_raises_quickly(archive: MboxArchive) -> None:
    with pytest.raises(ArchiveLockedError):  # after lock_wait, not never
        MboxArchive(archive.root, lock_wait=0.2)
    # A reader does not need the lock.
    with MboxArchive(archive.root, readonly=True) as reader:
        assert reader.list_folders() == []


def test_corrupt_index_is_an_archive_error(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    with MboxArchive(root) as arc:
        arc.checkpoint(INBOX, status())
    idx = root / ".mailmigrate" / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(idx) + suffix).unlink(missing_ok=True)
    idx.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ArchiveError, match=r"index\.sqlite") as err:
        MboxArchive(root)
    assert "\n" not in str(err.value)
    with pytest.raises(ArchiveError):
        MboxArchive(root, readonly=True)


def test_foreign_sqlite_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "arc"
    (root / ".mailmigrate").mkdir(parents=True)
    with sqlite3.connect(root / ".mailmigrate" / "index.sqlite") as db:
        db.execute("CREATE TABLE meta(key TEXT, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    with pytest.raises(ArchiveError, match="schema version"):
        MboxArchive(root)


def test_other_account_is_refused(archive: MboxArchive) -> None:
    root = archive.root
    archive.close()
    with pytest.raises(ArchiveError, match="separate archive"):
        MboxArchive(root, account="someone@else.example")


def test_archive_under_a_file_is_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError, match="writable") as err:
        MboxArchive(tmp_path / "file" / "arc")
    assert "\n" not in str(err.value)


def test_archive_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError, match="not a directory"):
        MboxArchive(tmp_path / "file")


def test_readonly_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a mailmigrate"):
        MboxArchive(tmp_path / "nothing", readonly=True)


def test_readonly_refuses_writes(archive: MboxArchive) -> None:
    archive.checkpoint(INBOX, status())
    with MboxArchive(archive.root, readonly=True) as reader, pytest.raises(ArchiveError, match="read-only"):
        reader.add_messages(INBOX, [msg(1, b"x")])


def test_throughput(tmp_path: Path) -> None:
    """Thousands of messages per second: batching, not per-message work."""
    raw = b"From: a@example.org\r\nSubject: s\r\n\r\n" + b"body line\r\n" * 400
    with MboxArchive(tmp_path / "arc") as arc:
        arc.checkpoint(INBOX, status())
        start = time.perf_counter()
        for b in range(20):
            arc.add_messages(INBOX, [msg(b * 250 + i + 1, raw) for i in range(250)])
        elapsed = time.perf_counter() - start
        assert sum(1 for _ in arc.iter_messages(INBOX)) == 5000
    assert 5000 / elapsed > 1000, f"{5000 / elapsed:.0f} msgs/s"
