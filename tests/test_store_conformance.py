"""One conformance suite for every archive store (restic/borg style).

Each store is driven through the DestinationStore/ArchiveReader protocols
only, so a new store is proven by the same assertions as the old ones. The
folders the stores are given come from a real listing of each test server
(Dovecot: no namespace prefix, '/'; Cyrus: "INBOX." and '.'), as a backup
hands them over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from seeding import create_folder, imap_login

from migrate.errors import ArchiveLockedError
from migrate.model import FlagChange, Folder, FolderStatus, Message, MessageRef
from migrate.stores.imap import list_imap_folders
from migrate.stores.mbox_archive import MboxArchive
from migrate.stores.sqlite_archive import SqliteArchive

pytestmark = pytest.mark.servers("dovecot", "cyrus")

Opener = Callable[..., object]

STORES: dict[str, Callable[[Path, float], object]] = {
    "sqlite": lambda p, wait: SqliteArchive(p / "a.sqlite", lock_wait=wait),
    "mbox-tree": lambda p, wait: MboxArchive(p / "tree", lock_wait=wait),
}

TZ = timezone(timedelta(hours=-5))


@pytest.fixture
def listed(server) -> dict[str, Folder]:
    """{name: Folder} as this server lists a small tree (INBOX, Work/Projekt ü, specials)."""
    user = server.add_user()
    client = imap_login(server, user)
    try:
        create_folder(client, "Work/Projekt ü")  # Dovecot: "Work" a \Noselect placeholder
        return {f.name: f for f in list_imap_folders(client, server.host)}
    finally:
        client.logout()


@pytest.fixture
def INBOX(listed) -> Folder:  # reads like the constant it replaced
    return listed["INBOX"]


@pytest.fixture
def WORK(listed) -> Folder:
    return listed["Work/Projekt ü"]


def msg(uid: int, body: bytes = b"", flags: tuple[str, ...] = ()) -> Message:
    raw = body or f"Subject: {uid}\r\nMessage-ID: <{uid}@t>\r\n\r\nbody {uid}\r\n".encode()
    return Message(key=str(uid), uid=uid, raw=raw, flags=flags,
                   internaldate=datetime(2001, 2, 3, 4, 5, uid % 60, tzinfo=TZ))


@pytest.fixture(params=sorted(STORES))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., object]]:
    opened: list[object] = []

    def opener(wait: float = 5.0) -> object:
        store = STORES[request.param](tmp_path, wait)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()  # type: ignore[attr-defined]


def status(uidvalidity: int | None = 7, uidnext: int = 10, modseq: int | None = 3) -> FolderStatus:
    return FolderStatus(uidvalidity=uidvalidity, uidnext=uidnext, messages=0,
                        highestmodseq=modseq)


def test_checkpoint_tracks_last_uid_and_finish(open_store, INBOX) -> None:
    store = open_store()
    cp = store.checkpoint(INBOX, status())
    assert (cp.last_uid, cp.uidnext, cp.highestmodseq) == (0, None, None)
    assert store.add_messages(INBOX, [msg(1), msg(2), msg(5)]) == 3
    store.finish_folder(INBOX, status(uidnext=6, modseq=9))
    cp = store.checkpoint(INBOX, status(uidnext=6, modseq=9))
    assert (cp.uidvalidity, cp.last_uid, cp.uidnext, cp.highestmodseq, cp.partial) == \
        (7, 5, 6, 9, False)
    store.finish_folder(INBOX, status(), complete=False)
    assert store.checkpoint(INBOX, status()).partial is True


def test_messages_are_not_stored_twice_and_missing_filters(open_store, INBOX) -> None:
    store = open_store()
    store.checkpoint(INBOX, status())
    assert store.add_messages(INBOX, [msg(1), msg(2)]) == 2
    assert store.add_messages(INBOX, [msg(2), msg(3)]) == 1
    refs = [MessageRef(key=str(u), size=10, uid=u) for u in (1, 2, 3, 4)]
    assert [r.uid for r in store.missing(INBOX, refs)] == [4]


def test_round_trip_is_exact_with_flags_and_dates(open_store, WORK) -> None:
    store = open_store()
    bodies = [b"", b"no final newline", b"From here\n>From there\r\n.\r\n", bytes(range(256)),
              b"Subject: lf only\n\nbody\n", b"Subject: crlf\r\n\r\nbody\r\n" * 500]
    store.checkpoint(WORK, status())
    store.add_messages(WORK, [msg(i + 1, body or b"x", ("\\Seen", "$Label"))
                              for i, body in enumerate(bodies)])
    got = {m.uid: m for m in store.iter_messages(WORK)}
    for i, body in enumerate(bodies):
        m = got[i + 1]
        assert m.raw == (body or b"x")
        assert set(m.flags) == {"\\Seen", "$Label"}
        assert m.internaldate == msg(i + 1).internaldate
    [(_, count, size)] = [row for row in store.folder_summary() if row[0].name == WORK.name]
    assert count == len(bodies) and size == sum(len(b or b"x") for b in bodies)


def test_flag_updates(open_store, INBOX) -> None:
    store = open_store()
    store.checkpoint(INBOX, status())
    store.add_messages(INBOX, [msg(1, flags=("\\Seen",)), msg(2)])
    changed = store.update_flags(INBOX, [FlagChange(key="1", uid=1, flags=("\\Seen",)),
                                         FlagChange(key="2", uid=2, flags=("\\Flagged",))])
    assert changed == 1
    assert {m.uid: m.flags for m in store.iter_messages(INBOX)} == {1: ("\\Seen",),
                                                                   2: ("\\Flagged",)}


def test_uidvalidity_change_reattaches_without_duplicates(open_store, INBOX) -> None:
    store = open_store()
    store.checkpoint(INBOX, status(uidvalidity=1))
    store.add_messages(INBOX, [msg(1), msg(2)])
    cp = store.checkpoint(INBOX, status(uidvalidity=2))
    assert cp.last_uid == 0 and cp.uidvalidity == 2
    # same contents under new uids, plus one new message
    moved = [Message(key=str(u + 10), uid=u + 10, raw=msg(u).raw, internaldate=msg(u).internaldate)
             for u in (1, 2)]
    assert store.add_messages(INBOX, [*moved, msg(13)]) == 3
    uids = sorted(m.uid for m in store.iter_messages(INBOX) if m.uid is not None)
    assert uids == [11, 12, 13]
    assert [c for f, c, _ in store.folder_summary() if f.name == "INBOX"] == [3]


def test_uidless_messages_keyed_by_uidl_with_archived_at(open_store, INBOX) -> None:
    store = open_store()
    store.checkpoint(INBOX, FolderStatus(uidvalidity=None, uidnext=None, messages=2))
    pop = [Message(key=f"uidl-{i}", raw=f"Subject: {i}\r\n\r\nx\r\n".encode()) for i in range(2)]
    before = datetime.now(UTC) - timedelta(seconds=2)
    assert store.add_messages(INBOX, pop) == 2
    assert store.add_messages(INBOX, pop) == 0
    refs = [MessageRef(key=k, size=1) for k in ("uidl-0", "uidl-1", "uidl-2")]
    assert [r.key for r in store.missing(INBOX, refs)] == ["uidl-2"]
    stamps = store.archived_at(INBOX, ["uidl-0", "uidl-1", "uidl-9"])
    assert set(stamps) == {"uidl-0", "uidl-1"}
    assert all(before <= t <= datetime.now(UTC) + timedelta(seconds=2) for t in stamps.values())


def test_second_writer_is_refused(open_store) -> None:
    open_store()
    with pytest.raises(ArchiveLockedError):
        open_store(wait=0.2)


def test_folders_keep_names_special_use_and_parents(server, open_store, listed) -> None:
    """Every listed folder comes back under the same name, relative to the server's
    namespace (Cyrus's INBOX.Work is "Work"), with its special use and selectability."""
    store = open_store()
    for folder in listed.values():
        store.checkpoint(folder, FolderStatus(uidvalidity=None, uidnext=None, messages=0))
    back = {f.name: f for f in store.list_folders()}
    assert set(back) == set(listed) == {"INBOX", "Work", "Work/Projekt ü", *server.special_use}
    assert back["Gesendet"].special_use == "\\Sent"
    assert back["Work"].selectable is not server.noselect_parents
    assert listed["Work"].namespace == ("INBOX" if server.namespace_prefix else "")
    assert listed["Work/Projekt ü"].full_name == (
        "INBOX/Work/Projekt ü" if server.namespace_prefix else "Work/Projekt ü")


def _forget_marker(tmp_path: Path) -> None:
    """Make an archive look as if made before folder names were namespace-relative."""
    import sqlite3

    from migrate.folders import NAMES_KEY

    for db in (tmp_path / "a.sqlite", tmp_path / "tree" / ".mailmigrate" / "index.sqlite"):
        if db.exists():
            conn = sqlite3.connect(db)
            with conn:
                conn.execute("DELETE FROM meta WHERE key = ?", (NAMES_KEY,))
            conn.close()


@pytest.mark.servers("cyrus")
def test_a_legacy_archive_keeps_its_prefixed_names(open_store, listed, tmp_path) -> None:
    """An archive from before holds Cyrus's folders as "INBOX/Work/...": a backup goes on
    in those same folders (nothing fetched twice), readers see relative names."""
    work = listed["Work/Projekt ü"]
    old = [Folder(name=f.full_name, server_name=f.server_name, delimiter=f.delimiter,
                  special_use=f.special_use, selectable=f.selectable) for f in listed.values()]
    store = open_store()
    for folder in old:
        store.checkpoint(folder, status())
    store.add_messages(next(f for f in old if f.name == work.full_name), [msg(1), msg(2)])
    store.close()
    _forget_marker(tmp_path)
    store = open_store()
    assert store.checkpoint(work, status()).last_uid == 2  # the old row, found by full name
    assert store.add_messages(work, [msg(2), msg(3)]) == 1
    back = {f.name: f for f in store.list_folders()}
    assert set(back) == set(listed)
    assert sorted(m.uid for m in store.iter_messages(back["Work/Projekt ü"])) == [1, 2, 3]
    store.close()
    # An archive from before that holds no prefixed name is simply marked.
    for name in ("a.sqlite", "tree"):
        path = tmp_path / name
        if path.is_dir():
            import shutil
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    store = open_store()
    store.checkpoint(Folder(name="Plain", server_name="Plain"), status())
    store.close()
    _forget_marker(tmp_path)
    store = open_store()
    store.checkpoint(work, status())
    assert {f.name for f in store.list_folders()} == {"Plain", "Work/Projekt ü"}
