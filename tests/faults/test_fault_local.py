"""Bad local input, for real: a full disk (a 3 MB tmpfs), a read-only filesystem
(remount,ro), a truncated mbox file. Each ends with one error line and its documented
exit code, nothing already archived is lost, and the next run finishes the job."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import archive_contents, backup_args, run_cli
from seeding import bulk_append, create_folder, imap_login, seed_message

FOLDERS = ["INBOX", "Work", "Lists"]
PER_FOLDER = 50
SIZE = 30_000


def seed(dovecot, user, tag: str = "loc") -> dict[str, list[bytes]]:
    client = imap_login(dovecot, user)
    out: dict[str, list[bytes]] = {}
    try:
        for n, folder in enumerate(FOLDERS):
            if folder != "INBOX" and tag == "loc":
                create_folder(client, folder)
            msgs = [seed_message(n * 1000 + i, SIZE, tag=f"{tag}-{folder}") for i in range(PER_FOLDER)]
            bulk_append(client, folder, msgs)
            out[folder] = msgs
    finally:
        client.logout()
    return out


class SmallFs:
    """A real size-limited filesystem (tmpfs) that can be grown or made read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _mount(self, *args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"mount {' '.join(args)} failed ({done.stderr.strip()}): these tests need "
                        "root and tmpfs (CI runs as root)", pytrace=False)

    def mount(self, size: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.path))

    def resize(self, size: str) -> None:
        self._mount("-o", f"remount,size={size}", str(self.path))

    def read_only(self, ro: bool = True) -> None:
        self._mount("-o", "remount," + ("ro" if ro else "rw"), str(self.path))

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    fs = SmallFs(tmp_path / "small")
    fs.mount("3m")
    try:
        yield fs
    finally:
        fs.unmount()


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("mailmigrate: error:")]
    assert len(lines) == 1, err
    return lines[0]


def assert_held_intact(archive: Path, seeded: dict[str, list[bytes]]) -> int:
    """Everything the archive holds is a seeded message, byte for byte, once; returns the count."""
    got = archive_contents(archive)
    wanted = {raw for msgs in seeded.values() for raw in msgs}
    held = 0
    for folder, box in got.items():
        raws = [raw for raw, _, _ in box.values()]
        assert len(raws) == len(set(raws)), folder
        assert all(raw in wanted for raw in raws), folder
        held += len(raws)
    return held


@pytest.mark.parametrize("name", ["a.sqlite", "tree"])
def test_full_disk_exits_5_keeps_what_was_committed_and_resumes(dovecot, account, small_fs, name):
    seeded = seed(dovecot, account)  # 4.5 MB into 3 MB
    archive = small_fs.path / name
    full = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert full.code == 5, full.err
    line = one_error_line(full.err)
    assert ("No space left on device" in line or "disk is full" in line), line
    assert "free disk space" in line, line
    if name.endswith(".sqlite"):
        conn = sqlite3.connect(archive)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    held = assert_held_intact(archive, seeded)
    # Space again: the next run fetches the rest, each message once.
    small_fs.resize("64m")
    again = run_cli(*backup_args(dovecot, account, archive, "--json"), password=account.password)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == PER_FOLDER * len(FOLDERS) - held
    assert assert_held_intact(archive, seeded) == PER_FOLDER * len(FOLDERS)


@pytest.mark.parametrize("name", ["a.sqlite", "tree"])
def test_read_only_filesystem_exits_5_and_changes_nothing(dovecot, account, small_fs, name):
    small_fs.resize("64m")
    seeded = seed(dovecot, account)
    archive = small_fs.path / name
    first = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert first.code == 0, first.err
    before = archive_contents(archive)
    more = seed(dovecot, account, tag="more")  # something new to write
    small_fs.read_only()
    ro = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert ro.code == 5, ro.err
    line = one_error_line(ro.err)
    assert "read-only" in line.lower(), line
    small_fs.read_only(False)
    assert archive_contents(archive) == before
    again = run_cli(*backup_args(dovecot, account, archive, "--json"), password=account.password)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == PER_FOLDER * len(FOLDERS)
    assert assert_held_intact(archive, {k: seeded[k] + more[k] for k in seeded}) == \
        2 * PER_FOLDER * len(FOLDERS)


def test_truncated_mbox_file_stops_with_exit_5_and_touches_nothing(dovecot, account, tmp_path):
    """A file shorter than its index is damage we must not paper over: say so, change nothing."""
    seed(dovecot, account)
    archive = tmp_path / "tree"
    first = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert first.code == 0, first.err
    mbox = archive / "Work.mbox"
    os.truncate(mbox, mbox.stat().st_size // 2 + 123)  # cut in the middle of a message
    cut = mbox.read_bytes()
    seed(dovecot, account, tag="more")
    again = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert again.code == 5, again.err
    line = one_error_line(again.err)
    assert "Work.mbox" in line and "shorter" in line, line
    assert mbox.read_bytes() == cut
    check = run_cli("verify", str(archive))
    assert check.code in (1, 5), check
    assert "Work" in check.out + check.err and "Traceback" not in check.err


def test_drain_delete_onto_a_full_disk_deletes_nothing_then_finishes(dovecot, account, small_fs):
    """POP3 --delete must never delete what the full disk could not take."""
    seeded = seed(dovecot, account)  # INBOX: 50 x 30 KB = 1.5 MB
    small_fs.resize("1m")
    archive = small_fs.path / "a.sqlite"
    url = f"pop3://{account.name}@127.0.0.1:{dovecot.pop3_port}?tls=none"
    args = ["drain", url, str(archive), "--password-env", "MM_TEST_PASSWORD", "--delete"]
    full = run_cli(*args, password=account.password)
    assert full.code == 5, full.err
    line = one_error_line(full.err)
    assert "No space left on device" in line or "disk is full" in line, line
    client = imap_login(dovecot, account)
    try:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["ALL"])) == PER_FOLDER  # nothing deleted
    finally:
        client.logout()
    small_fs.resize("64m")
    again = run_cli(*args, "--json", password=account.password)
    assert again.code == 0, again.err
    conn = sqlite3.connect(archive)
    raws = sorted(bytes(r) for (r,) in conn.execute("SELECT raw FROM messages"))
    conn.close()
    assert raws == sorted(seeded["INBOX"])
    client = imap_login(dovecot, account)
    try:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == []  # now archived, so deleted
    finally:
        client.logout()


class RefusingConnection:
    """The archive's connection, refusing every write as SQLite does on a full disk
    (``sqlite3.OperationalError: database or disk is full``); reads pass."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(self.WRITES):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __enter__(self) -> RefusingConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.rollback()

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_every_archive_write_refused_by_sqlite_is_an_archive_error(tmp_path):
    """Wherever in a run the disk fills (a batch, the folder's finish, a flag update,
    a new folder, a Gmail link), the archive says so as an ArchiveError (exit 5 with
    the fix), never with SQLite's own traceback."""
    from migrate.errors import ArchiveError
    from migrate.model import FlagChange, Folder, FolderStatus, Message, MessageRef
    from migrate.stores.sqlite_archive import SqliteArchive

    inbox, other = Folder("INBOX", "INBOX"), Folder("Other", "Other")
    status = FolderStatus(uidvalidity=1, uidnext=2, messages=1)
    archive = SqliteArchive(tmp_path / "a.sqlite", account="t@x")
    try:
        archive.checkpoint(inbox, status)
        archive.add_messages(inbox, [Message(key="1", uid=1, raw=b"Subject: a\r\n\r\nb\r\n",
                                             gid="g1")])
        real = archive.conn
        archive.conn = RefusingConnection(real)  # type: ignore[assignment]
        writes = {
            "add_messages": lambda: archive.add_messages(
                inbox, [Message(key="2", uid=2, raw=b"Subject: c\r\n\r\nd\r\n")]),
            "finish_folder": lambda: archive.finish_folder(inbox, status),
            "update_flags": lambda: archive.update_flags(
                inbox, [FlagChange(key="1", uid=1, flags=("\\Seen",))]),
            "checkpoint of a new folder": lambda: archive.checkpoint(other, status),
            "link": lambda: archive.link(inbox, [MessageRef("3", 10, 3, gid="g1")]),
        }
        for what, write in writes.items():
            with pytest.raises(ArchiveError, match="free disk space"):
                write()
            assert what
        archive.conn = real
        assert archive.conn.execute("SELECT count(*) FROM folder_messages").fetchone()[0] == 1
    finally:
        archive.close()
