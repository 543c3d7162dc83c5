"""The SQLite archive's schema, its versions, and the upgrade of an older archive.

The schema is a public interface (README, "SQLite schema"): people query it
with ``sqlite3``, ``sqlite-utils`` and Datasette. Version 2 made it one for
people as well as for the program:

- ``messages_fts`` is an FTS5 index with *external content*
  (``content="messages"``), so ``sqlite-utils search`` and Datasette find it
  and join it to ``messages`` by rowid; version 1's index was contentless,
  invisible to both. It stores no text of its own (the index alone, as the
  contentless one did): the body text it indexes lives only in the raw
  message, so reading the ``body`` column back, FTS5's ``rebuild`` or
  ``snippet()`` on it fail; ``verify --repair`` rebuilds the index instead.
- the ``mail`` view has a row per message per folder with human columns,
  and its ``id`` is the ID ``search`` prints and ``show``, ``export --id``
  and the viewer take (``folder_messages.id``);
- ``messages.attachments`` counts a message's files.

Version 3 keeps Gmail's labels: ``gmail_messages`` has a row per Gmail message
(X-GM-MSGID) with its thread (X-GM-THRID), its labels (X-GM-LABELS, system labels
such as ``\\Inbox``, ``\\Important`` included) and the content it is
(``messages.id``); ``folder_messages.gm_msgid`` says which Gmail message each
placement is, so a label folder's placements are memberships of one stored message;
the ``mail`` view shows ``labels`` and ``thread``. Going from 2 to 3 adds these in one
transaction and indexes nothing again.

An older archive is upgraded in place on its first open by this version:
one transaction changes the schema and (coming from version 1) records
``reindex_after = 0`` in ``meta``; then every message is summarised again (headers decoded as a mail
client does; version 1 read raw 8-bit headers as U+FFFD) in batches, each
committing its rows, their index entries and the new ``reindex_after``
together. A kill -9 at any instant loses at most the batch in flight, and the
next open carries on after the last committed one; when no message is left,
the marker goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the summary (email.policy, the HTML sanitiser) loads when first needed
    from migrate.formats.summary import Summary

SCHEMA_VERSION = 3
REINDEX_KEY = "reindex_after"
REINDEX_BATCH = 200

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    delimiter TEXT,
    special_use TEXT,
    uidvalidity INTEGER,
    uidnext INTEGER,
    highestmodseq INTEGER,
    selectable INTEGER NOT NULL DEFAULT 1,
    partial INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    raw BLOB NOT NULL,
    msgid TEXT,
    subject TEXT,
    from_addr TEXT,
    to_addrs TEXT,
    date TEXT,
    attachments INTEGER
);
CREATE INDEX IF NOT EXISTS messages_msgid ON messages (msgid);
CREATE TABLE IF NOT EXISTS folder_messages (
    id INTEGER PRIMARY KEY,
    folder_id INTEGER NOT NULL REFERENCES folders (id),
    message_id INTEGER NOT NULL REFERENCES messages (id),
    uid INTEGER,
    uidl TEXT,
    flags TEXT NOT NULL DEFAULT '[]',
    internaldate TEXT,
    archived_at TEXT NOT NULL,
    gm_msgid TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS folder_messages_uid
    ON folder_messages (folder_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS folder_messages_uidl
    ON folder_messages (folder_id, uidl) WHERE uidl IS NOT NULL;
CREATE INDEX IF NOT EXISTS folder_messages_message ON folder_messages (message_id);
"""

# Version 3: Gmail's messages, their labels and threads (and folder_messages.gm_msgid).
GMAIL = """
CREATE TABLE IF NOT EXISTS gmail_messages (
    account TEXT NOT NULL,
    msgid TEXT NOT NULL,
    thrid TEXT,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    labels TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (account, msgid)
);
CREATE INDEX IF NOT EXISTS folder_messages_gm ON folder_messages (gm_msgid) WHERE gm_msgid IS NOT NULL;
CREATE INDEX IF NOT EXISTS gmail_messages_thread ON gmail_messages (account, thrid)
"""

FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (
    subject, from_addr, to_addrs, body,
    content="messages", content_rowid="id", tokenize="unicode61 remove_diacritics 2"
)
"""

# One row per message per folder, for people (Datasette opens on it). "from" and "to"
# are SQL keywords: quote them in queries.
MAIL_VIEW = """
CREATE VIEW IF NOT EXISTS mail AS
SELECT fm.id AS id, f.name AS folder, m.date AS date, m.from_addr AS "from",
       m.to_addrs AS "to", m.subject AS subject, m.size AS size,
       (SELECT group_concat(value, ' ') FROM json_each(fm.flags)) AS flags,
       m.attachments AS attachments, fm.internaldate AS received, m.msgid AS msgid,
       f.account AS account, fm.message_id AS message_id, g.labels AS labels,
       g.thrid AS thread
FROM folder_messages fm
JOIN folders f ON f.id = fm.folder_id
JOIN messages m ON m.id = fm.message_id
LEFT JOIN gmail_messages g ON g.account = f.account AND g.msgid = fm.gm_msgid
"""

INSERT_FTS = ("INSERT INTO messages_fts (rowid, subject, from_addr, to_addrs, body)"
              " VALUES (?, ?, ?, ?, ?)")

Progress = Callable[[int, int], None]


def fts_row(mid: int, info: Summary) -> tuple[object, ...]:
    """The index entry of message ``mid``: the same header text as its ``messages`` row."""
    return (mid, info.subject, info.from_addr, info.to_addrs, info.body)


def create(conn: sqlite3.Connection) -> None:
    """A new archive's schema at the current version (inside the caller's transaction)."""
    for script in (TABLES, GMAIL, FTS, MAIL_VIEW):
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))


def version(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    """(schema version, message id the reindex got to) of an open archive."""
    rows = dict(conn.execute(
        "SELECT key, value FROM meta WHERE key IN ('schema_version', ?)", (REINDEX_KEY,)))
    ver = rows.get("schema_version")
    after = rows.get(REINDEX_KEY)
    return (int(ver) if ver is not None else None, int(after) if after is not None else None)


def needs_upgrade(conn: sqlite3.Connection) -> bool:
    ver, after = version(conn)
    return ver is not None and (ver < SCHEMA_VERSION or after is not None)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def _begin_upgrade(conn: sqlite3.Connection, from_version: int) -> None:
    """Version ``from_version`` -> the current one in one transaction: from 1, the search
    index anew and a reindex from the start; from 2 (or 1), the Gmail tables."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if from_version < 2:
            if "attachments" not in _columns(conn, "messages"):
                conn.execute("ALTER TABLE messages ADD COLUMN attachments INTEGER")
            conn.execute("DROP TABLE IF EXISTS messages_fts")  # contentless: cannot be converted
            conn.execute(FTS)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '0')",
                         (REINDEX_KEY,))
        if "gm_msgid" not in _columns(conn, "folder_messages"):
            conn.execute("ALTER TABLE folder_messages ADD COLUMN gm_msgid TEXT")
        for statement in GMAIL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("DROP VIEW IF EXISTS mail")
        conn.execute(MAIL_VIEW)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def reindex_batch(conn: sqlite3.Connection, after: int, batch: int = REINDEX_BATCH) -> int | None:
    """Summarise the next ``batch`` messages after id ``after`` in one transaction.

    Returns the last id done, or None when there was nothing left (and the
    marker is gone).
    """
    from migrate.formats.summary import summarize

    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute("SELECT id, raw FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                            (after, batch)).fetchall()
        if not rows:
            conn.execute("DELETE FROM meta WHERE key = ?", (REINDEX_KEY,))
            conn.execute("COMMIT")
            return None
        for mid, raw in rows:
            info = summarize(bytes(raw))
            conn.execute(
                "UPDATE messages SET msgid = ?, subject = ?, from_addr = ?, to_addrs = ?,"
                " date = ?, attachments = ? WHERE id = ?",
                (info.msgid, info.subject, info.from_addr, info.to_addrs, info.date,
                 info.attachments, mid))
            conn.execute(INSERT_FTS, fts_row(mid, info))
        last = int(rows[-1][0])
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(last), REINDEX_KEY))
        conn.execute("COMMIT")
        return last
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def upgrade(conn: sqlite3.Connection, progress: Progress | None = None) -> None:
    """Bring an archive at an older version (or mid-reindex) to the current one."""
    ver, after = version(conn)
    if ver is not None and ver < SCHEMA_VERSION:
        _begin_upgrade(conn, ver)
        after = version(conn)[1]
    if after is None:
        return
    total = int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    done = int(conn.execute("SELECT COUNT(*) FROM messages WHERE id <= ?",
                            (after,)).fetchone()[0])
    if progress is not None:
        progress(done, total)
    position: int | None = after
    while position is not None:
        position = reindex_batch(conn, position)
        if position is not None:
            done = min(total, done + REINDEX_BATCH)
        if progress is not None:
            progress(done if position is not None else total, total)


__all__ = ["FTS", "GMAIL", "INSERT_FTS", "MAIL_VIEW", "REINDEX_KEY", "SCHEMA_VERSION", "TABLES",
           "create", "fts_row", "needs_upgrade", "reindex_batch", "upgrade", "version"]
