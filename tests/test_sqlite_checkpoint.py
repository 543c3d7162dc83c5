"""The SQLite archive's WAL goes back into the file on a thread beside the writer
(migrate/stores/sqlite_checkpoint.py): what a writer commits is readable at once by
other connections, the WAL is emptied behind the writer while it goes on, and closing
the archive stops the thread and leaves no WAL behind."""

from __future__ import annotations

import sqlite3
import threading
import time

from migrate.model import Folder, FolderStatus, Message
from migrate.stores.sqlite_archive import SqliteArchive

FOLDER = Folder(name="INBOX", server_name="INBOX")


def batch(start: int, n: int = 20, size: int = 50_000) -> list[Message]:
    return [Message(key=str(u), uid=u, raw=(f"Message-ID: <{u}@t>\r\nSubject: {u}\r\n\r\n"
                                            + "x" * size + "\r\n").encode())
            for u in range(start, start + n)]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_the_wal_is_copied_back_beside_the_writer_and_nothing_is_left_on_close(tmp_path):
    path = tmp_path / "a.sqlite"
    archive = SqliteArchive(path, account="t@x")
    try:
        archive.checkpoint(FOLDER, FolderStatus(uidvalidity=1, uidnext=1, messages=0))
        for start in range(1, 201, 20):
            archive.add_messages(FOLDER, batch(start))
        assert archive._checkpoint is not None and "mailmigrate-checkpoint" in threads()
        assert wait_for(lambda: archive._checkpoint.runs > 0)
        # another connection sees every committed message while the writer is open
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert reader.execute("SELECT count(*) FROM folder_messages").fetchone()[0] == 200
        reader.close()
        # it answers every commit, not only the first
        before = archive._checkpoint.runs
        archive.add_messages(FOLDER, batch(201))
        assert wait_for(lambda: archive._checkpoint.runs > before)
    finally:
        archive.close()
    assert "mailmigrate-checkpoint" not in threads()
    assert not path.with_name("a.sqlite-wal").exists()
    again = SqliteArchive(path, account="t@x", readonly=True)
    try:
        assert again.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 220
    finally:
        again.close()

