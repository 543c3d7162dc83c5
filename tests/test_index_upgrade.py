"""An archive written by schema version 1 is upgraded in place, once, and a kill -9 resumes.

The version 1 archive is built here with version 1's own schema (copied
below as it shipped) and its index as version 1 wrote it: raw 8-bit headers
read as U+FFFD, a contentless FTS5 table. The kill instants are deterministic:
the child process is stopped inside the summary of its k-th message (so inside
a batch's transaction), and the parent, told so by a file, sends SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from migrate.stores import sqlite_schema

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE folders (
    id INTEGER PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL, delimiter TEXT,
    special_use TEXT, uidvalidity INTEGER, uidnext INTEGER, highestmodseq INTEGER,
    selectable INTEGER NOT NULL DEFAULT 1, partial INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account, name)
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    raw BLOB NOT NULL, msgid TEXT, subject TEXT, from_addr TEXT, to_addrs TEXT, date TEXT
);
CREATE INDEX messages_msgid ON messages (msgid);
CREATE TABLE folder_messages (
    id INTEGER PRIMARY KEY, folder_id INTEGER NOT NULL REFERENCES folders (id),
    message_id INTEGER NOT NULL REFERENCES messages (id), uid INTEGER, uidl TEXT,
    flags TEXT NOT NULL DEFAULT '[]', internaldate TEXT, archived_at TEXT NOT NULL
);
CREATE UNIQUE INDEX folder_messages_uid ON folder_messages (folder_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX folder_messages_uidl ON folder_messages (folder_id, uidl) WHERE uidl IS NOT NULL;
CREATE INDEX folder_messages_message ON folder_messages (message_id);
CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, from_addr, to_addrs, body, content='');
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
"""


def german(i: int) -> bytes:
    """A message whose headers are raw Latin-1, as many German mailers sent them."""
    return (f"Message-ID: <g{i}@example.de>\r\nFrom: Jürgen Müller <j{i % 7}@example.de>\r\n"
            f"To: Empfänger <e@example.de>\r\nSubject: Grüße aus Köln {i}\r\n"
            "Date: Mon, 15 Jan 2024 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=iso-8859-1\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\nToken token{i} für die Suche.\r\n"
            ).encode("latin-1")


def make_v1_archive(path: Path, count: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_SCHEMA)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO folders (id, account, name, delimiter) VALUES (1, 'me@host', 'INBOX', '/')")
    for i in range(1, count + 1):
        raw = german(i)
        garbled = raw.decode("utf-8", "replace")  # what version 1 indexed
        subject = garbled.split("Subject: ")[1].split("\r\n")[0]
        conn.execute("INSERT INTO messages (id, sha256, size, raw, msgid, subject, from_addr,"
                     " to_addrs, date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (i, hashlib.sha256(raw).hexdigest(), len(raw), raw, f"<g{i}@example.de>",
                      subject, "J\ufffdrgen", "Empf\ufffdnger", "2024-01-15T10:00:00+01:00"))
        conn.execute("INSERT INTO messages_fts (rowid, subject, from_addr, to_addrs, body)"
                     " VALUES (?, ?, '', '', '')", (i, subject))
        conn.execute("INSERT INTO folder_messages (folder_id, message_id, uid, flags, internaldate,"
                     " archived_at) VALUES (1, ?, ?, '[\"\\\\Seen\"]', '2024-01-15T10:00:00+01:00',"
                     " '2024-02-01T00:00:00')", (i, i))
    conn.execute("COMMIT")
    conn.close()


CHILD = """
import sys, time
from pathlib import Path
from migrate.formats import summary
from migrate.stores.sqlite_archive import SqliteArchive

real, calls = summary.summarize, 0
stop_at, marker, mode = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def summarize(raw):
    global calls
    calls += 1
    if calls == stop_at:
        marker.write_text("inside")
        time.sleep(600)  # killed here, inside the batch's transaction
    return real(raw)

summary.summarize = summarize  # the upgrade looks it up when it runs
SqliteArchive(Path(sys.argv[1]), readonly=mode == "reader").close()
"""


def kill_inside(archive: Path, stop_at: int, mode: str, tmp: Path) -> str:
    """Run the upgrade in a child and SIGKILL it inside summary number ``stop_at``."""
    marker = tmp / f"marker-{stop_at}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(archive), str(stop_at), str(marker),
                             mode], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the upgrade ended before message {stop_at}: {proc.stderr.read()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc.stderr.read() if proc.stderr else ""


def meta(archive: Path) -> dict[str, str]:
    conn = sqlite3.connect(archive)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def test_upgrade_resumes_after_kill9_and_indexes_every_message_once(tmp_path):
    count = 3 * sqlite_schema.REINDEX_BATCH + 57
    archive = tmp_path / "old.sqlite"
    make_v1_archive(archive, count)
    batch = sqlite_schema.REINDEX_BATCH
    # Inside the first batch (the schema change is committed), mid-batch, and on the first
    # message of a batch (the one before it committed), by readers and by a writer. Each
    # run resumes where the last stopped; ``stop_at`` counts the summaries of that run.
    done = 0
    for stop_at, mode in ((1, "reader"), (batch + 17, "writer"), (1, "reader"),
                          (batch + 1, "reader"), (50, "reader")):
        err = kill_inside(archive, stop_at, mode, tmp_path)
        state = meta(archive)
        assert state["schema_version"] == str(sqlite_schema.SCHEMA_VERSION), err
        # What the killed batch held is rolled back; every earlier batch is kept.
        done += (stop_at - 1) // batch * batch
        assert int(state[sqlite_schema.REINDEX_KEY]) == done, err
    assert done == 2 * batch
    # The next command finishes the upgrade, saying so on stderr, and answers.
    found = run_cli("search", str(archive), "Köln Empfänger", "--limit", "0", "--json")
    assert found.code == 0, found.err
    assert "reindexed 400 of 657 messages" in found.err and "(100 %)" in found.err
    assert found.json()["count"] == count
    assert sqlite_schema.REINDEX_KEY not in meta(archive)
    conn = sqlite3.connect(archive)
    try:
        # Each message is in the index exactly once, with its own words.
        assert conn.execute("SELECT COUNT(*) FROM messages_fts_docsize").fetchone()[0] == count
        for i in (1, batch, batch + 17, 2 * batch + 1, count):
            hits = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?",
                                (f"token{i}",)).fetchall()
            assert hits == [(i,)]
        row = conn.execute("SELECT subject, from_addr, to_addrs, attachments FROM messages"
                           " WHERE id = 5").fetchone()
        assert row == ("Grüße aus Köln 5", "Jürgen Müller <j5@example.de>",
                       "Empfänger <e@example.de>", 0)
        assert conn.execute("SELECT folder, flags FROM mail WHERE id = 5").fetchone() == \
            ("INBOX", "\\Seen")
    finally:
        conn.close()
    # Opened again: nothing more to do, and verify finds the index whole.
    again = run_cli("search", str(archive), "token7", "--json")
    assert again.code == 0 and "reindexed" not in again.err
    assert [h["id"] for h in again.json()["results"]] == [7]
    checked = run_cli("verify", str(archive))
    assert checked.code == 0, checked.out + checked.err


def test_upgrade_without_write_access_says_what_to_do(tmp_path, monkeypatch):
    """(File modes cannot show it here: the tests run as root, whom they do not stop.)"""
    from migrate.errors import ArchiveError
    from migrate.stores import sqlite_archive

    archive = tmp_path / "old.sqlite"
    make_v1_archive(archive, 3)
    monkeypatch.setattr(sqlite_archive.os, "access", lambda path, mode: False)
    with pytest.raises(ArchiveError, match=r"older mailmigrate.*needs write access"):
        sqlite_archive.SqliteArchive(archive, readonly=True)
    assert meta(archive)["schema_version"] == "1"


def test_a_newer_schema_is_refused(tmp_path):
    archive = tmp_path / "new.sqlite"
    make_v1_archive(archive, 1)
    conn = sqlite3.connect(archive)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    result = run_cli("search", str(archive), "x")
    assert result.code == 5 and "unknown schema version" in result.err
