"""The SQLite index of an mbox-tree archive: everything mbox cannot hold.

It exists apart from the mbox files because it has its own failure modes and
its own rules: it must refuse a database of another schema version or
account, turn every SQLite failure into one actionable line, and stay the
single source of truth for what is committed. Keeping its SQL in one place
lets a reader check the schema and the statements against each other.

Version 2 keeps Gmail's labels: ``messages.gm_msgid`` says which Gmail message
(X-GM-MSGID) a row is, and ``gmail_messages`` has per Gmail message its labels, its
thread and one row whose frame holds its bytes, so that a label folder's copy is made
from the archive's own file instead of a second download. A version-1 index gets both
when opened for writing; read as it is, it simply has no labels.

Transactions are opened by the caller (:meth:`MboxIndex.tx`) and the write
statements below take its connection, so the store decides when a commit
happens relative to its fsyncs and none of that order is hidden in here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from migrate.errors import ArchiveError
from migrate.folders import NAMES_KEY, NAMES_RELATIVE
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, normalise_flags
from migrate.safepath import META_DIR

SCHEMA_VERSION: Final = 2
INDEX_NAME: Final = "index.sqlite"
# SQLite's default limit on bound parameters is 999 on old builds; stay below.
CHUNK: Final = 500
PAGE: Final = 1000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,      -- Unicode path, '/' between levels
    path           TEXT NOT NULL UNIQUE,      -- mbox file relative to the archive
    path_key       TEXT NOT NULL UNIQUE,      -- path case-folded: one file on macOS/Windows
    server_name    TEXT NOT NULL DEFAULT '',
    delimiter      TEXT,
    special_use    TEXT,
    selectable     INTEGER NOT NULL DEFAULT 1,
    uidvalidity    INTEGER,
    uidnext        INTEGER,
    highestmodseq  INTEGER,
    partial        INTEGER NOT NULL DEFAULT 0, -- last pass was filtered (--since)
    committed_size INTEGER NOT NULL DEFAULT 0 -- mbox bytes known good
);
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY,
    folder_id    INTEGER NOT NULL REFERENCES folders(id),
    uid          INTEGER,                  -- NULL: uid-less source, or detached
    key          TEXT,                     -- POP3 UIDL etc. when the source has no uid
    sha256       TEXT NOT NULL,            -- of the raw message
    size         INTEGER NOT NULL,         -- raw message bytes
    offset       INTEGER NOT NULL,         -- frame start in the mbox file
    length       INTEGER NOT NULL,         -- frame bytes in the mbox file
    eol          TEXT NOT NULL CHECK (eol IN ('crlf', 'lf', 'raw')),
    flags        TEXT NOT NULL DEFAULT '[]',
    internaldate TEXT,                     -- ISO-8601 with offset
    archived_at  TEXT NOT NULL,
    gm_msgid     TEXT                      -- Gmail's X-GM-MSGID (version 2)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_uid
    ON messages(folder_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_key
    ON messages(folder_id, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_offset ON messages(folder_id, offset);
CREATE INDEX IF NOT EXISTS messages_detached
    ON messages(folder_id, sha256) WHERE uid IS NULL AND key IS NULL;
"""

# Version 2 (also run on a version-1 index, after its gm_msgid column is added).
_GMAIL: Final = """
CREATE TABLE IF NOT EXISTS gmail_messages (
    msgid   TEXT PRIMARY KEY,                      -- X-GM-MSGID
    message INTEGER NOT NULL REFERENCES messages(id), -- a row whose frame holds its bytes
    thrid   TEXT,                                  -- X-GM-THRID
    labels  TEXT NOT NULL DEFAULT '[]'             -- X-GM-LABELS, JSON array
);
CREATE INDEX IF NOT EXISTS messages_gm ON messages(gm_msgid) WHERE gm_msgid IS NOT NULL;
"""

_T = TypeVar("_T")

# A message row as read back to find and check its frame (see read_rows, frame_page).
StoredRow = tuple[Any, ...]


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    # A naive time has lost its offset already; UTC is the least wrong reading.
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).isoformat()


def _flags_json(flags: object) -> str:
    return json.dumps(normalise_flags(flags))


def _split_sql(script: str) -> list[str]:
    """Statements of a script, for running inside our own transaction.

    ``executescript`` would COMMIT first; splitting on ';' is safe here
    because the schema has no ';' inside literals (comments are stripped).
    """
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class FolderRow:
    """What the store needs of a ``folders`` row to find, check and append to its mbox file."""

    __slots__ = (
        "committed_size",
        "delimiter",
        "id",
        "name",
        "path",
        "selectable",
        "special_use",
        "uidvalidity",
    )

    def __init__(
        self,
        id: int,
        name: str,
        path: str,
        uidvalidity: int | None,
        committed_size: int,
        delimiter: str | None,
        special_use: str | None,
        selectable: int,
    ) -> None:
        self.id = id
        self.name = name
        self.path = path
        self.uidvalidity = uidvalidity
        self.committed_size = committed_size
        self.delimiter = delimiter
        self.special_use = special_use
        self.selectable = bool(selectable)


class MboxIndex:
    """The index database of the archive at ``root``.

    Open it with :meth:`open_writable` or :meth:`open_readonly`, then
    :meth:`check_schema`; :meth:`close` is safe at any point in between.
    """

    def __init__(self, root: Path, account: str, readonly: bool) -> None:
        self.root = root
        self.account = account
        self.readonly = readonly
        self.path = root / META_DIR / INDEX_NAME
        self._conn: sqlite3.Connection | None = None
        self.has_gmail = False

    # ------------------------------------------------------------ opening

    def _connect(self, target: str, uri: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise ArchiveError(
                f"cannot open archive index {self.path}: {exc}; "
                "check that the file is readable and the directory writable"
            ) from exc
        return conn

    def open_writable(self) -> sqlite3.Connection:
        if not self.path.exists():
            try:
                # Created here so that it (and SQLite's -wal/-shm, which copy
                # its mode) are private from the start.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise ArchiveError(
                    f"cannot create archive index {self.path}: {exc.strerror}; "
                    "choose a writable location or fix its permissions"
                ) from exc
        conn = self._connect(str(self.path), uri=False)
        self._conn = conn  # closed by close() if anything below fails
        with self.db():
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.DatabaseError("cannot switch the index to WAL mode")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    for stmt in _split_sql(_SCHEMA + _GMAIL):
                        conn.execute(stmt)
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                elif "meta" not in tables:
                    # Someone else's database: adding our tables to it would be rude.
                    raise sqlite3.DatabaseError("not a mailmigrate index")
                elif conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                  ).fetchone() == ("1",):
                    # 1 -> 2: the Gmail column and table, nothing else changes.
                    conn.execute("ALTER TABLE messages ADD COLUMN gm_msgid TEXT")
                    for stmt in _split_sql(_GMAIL):
                        conn.execute(stmt)
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                 (str(SCHEMA_VERSION),))
                if self.account:
                    conn.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES ('account', ?)",
                        (self.account,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return conn

    def open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise ArchiveError(
                f"{self.root} is not a mailmigrate mbox archive (no {META_DIR}/{INDEX_NAME}); check the path"
            )
        conn = self._connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        self._conn = conn
        with self.db():
            conn.execute("PRAGMA query_only=ON")
        return conn

    def check_schema(self) -> None:
        conn = self.conn()
        with self.db():
            try:
                rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.OperationalError as exc:
                raise sqlite3.DatabaseError(f"not a mailmigrate index ({exc})") from exc
        version = rows.get("schema_version")
        # A version-1 index opened read-only is read as it is: it has no labels.
        self.has_gmail = version == str(SCHEMA_VERSION)
        if version != str(SCHEMA_VERSION) and not (self.readonly and version == "1"):
            raise ArchiveError(
                f"archive index {self.path} has schema version {version}, "
                f"this mailmigrate reads version {SCHEMA_VERSION}; use a matching mailmigrate"
            )
        stored = rows.get("account", "")
        if self.account and stored and stored != self.account:
            raise ArchiveError(
                f"archive {self.root} holds account {stored!r}, not {self.account!r}; "
                "use a separate archive directory per account"
            )

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ errors and transactions

    @contextlib.contextmanager
    def db(self) -> Iterator[None]:
        """Turn SQLite failures into one-line ArchiveErrors naming the index."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise ArchiveError(
                    f"archive index {self.path} is busy ({text}); "
                    "wait for the other process using it to finish, then run again"
                ) from exc
            if "readonly" in text or "read-only" in text or "disk" in text:
                raise ArchiveError(
                    f"cannot write archive index {self.path} ({text}); "
                    "free disk space or fix the permissions, then run again"
                ) from exc
            raise self._corrupt(exc) from exc
        except sqlite3.Error as exc:
            raise self._corrupt(exc) from exc

    def _corrupt(self, exc: BaseException) -> ArchiveError:
        return ArchiveError(
            f"archive index {self.path} is unusable ({exc}); restore it from a "
            f"backup or salvage it with `sqlite3 {self.path} .recover`"
        )

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ArchiveError(f"archive {self.root} is closed; open it again")
        return self._conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of a batch's rows or none of them."""
        conn = self.conn()
        if self.readonly:
            raise ArchiveError(f"archive {self.root} was opened read-only; cannot write to it")
        with self.db():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ reads

    def names_relative(self) -> bool:
        """Whether folder names are namespace-relative (see migrate.folders); an index
        without the mark and without a prefixed ("INBOX/...") name gets it."""
        conn = self.conn()
        with self.db():
            if conn.execute("SELECT 1 FROM meta WHERE key = ?", (NAMES_KEY,)).fetchone():
                return True
            if conn.execute("SELECT 1 FROM folders WHERE upper(substr(name, 1, 6)) = 'INBOX/'"
                            " LIMIT 1").fetchone():
                return False
        if not self.readonly:
            with self.tx() as tx:
                tx.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                           (NAMES_KEY, NAMES_RELATIVE))
        return True

    def folder_row(self, name: str) -> FolderRow | None:
        conn = self.conn()
        with self.db():
            row = conn.execute(
                "SELECT id, name, path, uidvalidity, committed_size, delimiter, special_use,"
                " selectable FROM folders WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else FolderRow(*row)

    def path_keys(self) -> set[str]:
        """The collision keys of every folder's mbox path."""
        with self.db():
            return {r[0] for r in self.conn().execute("SELECT path_key FROM folders")}

    def read_checkpoint(self, folder_id: int) -> FolderCheckpoint:
        conn = self.conn()
        with self.db():
            uidvalidity, uidnext, modseq, partial = conn.execute(
                "SELECT uidvalidity, uidnext, highestmodseq, partial FROM folders WHERE id = ?",
                (folder_id,),
            ).fetchone()
            (last_uid,) = conn.execute(
                "SELECT COALESCE(MAX(uid), 0) FROM messages WHERE folder_id = ? AND uid IS NOT NULL",
                (folder_id,),
            ).fetchone()
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE folder_id = ? AND (uid IS NOT NULL OR key IS NOT NULL)",
                (folder_id,),
            ).fetchone()
        return FolderCheckpoint(
            uidvalidity=uidvalidity,
            last_uid=int(last_uid),
            uidnext=uidnext,
            highestmodseq=modseq,
            messages=int(count),
            partial=bool(partial),
        )

    def held(self, folder_id: int, uids: Sequence[int], keys: Sequence[str]) -> tuple[set[int], set[str]]:
        """Which of ``uids`` and of ``keys`` the folder holds already."""
        conn = self.conn()
        with self.db():
            return _present(conn, folder_id, "uid", uids), _present(conn, folder_id, "key", keys)

    def detached(self, folder_id: int, shas: Sequence[str]) -> dict[str, list[int]]:
        if not shas:
            return {}
        conn = self.conn()
        out: dict[str, list[int]] = {}
        with self.db():
            for part in chunks(sorted(set(shas))):
                marks = ",".join("?" * len(part))
                for rid, sha in conn.execute(
                    "SELECT id, sha256 FROM messages WHERE folder_id = ? AND uid IS NULL"
                    f" AND key IS NULL AND sha256 IN ({marks}) ORDER BY id DESC",
                    (folder_id, *part),
                ):
                    out.setdefault(sha, []).append(rid)
        return out

    def archived_at(self, folder_id: int, keys: Sequence[str]) -> dict[str, datetime]:
        conn = self.conn()
        out: dict[str, datetime] = {}
        with self.db():
            for part in chunks(list(keys)):
                marks = ",".join("?" * len(part))
                for key, when in conn.execute(
                    f"SELECT key, archived_at FROM messages WHERE folder_id = ? AND key IN ({marks})",
                    (folder_id, *part),
                ):
                    stamp = datetime.fromisoformat(when)
                    out[str(key)] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        return out

    def stored_account(self) -> str | None:
        """The account recorded when the archive was created, if any."""
        conn = self.conn()
        with self.db():
            row = conn.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
        value: str | None = row[0] if row and row[0] else None
        return value

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        conn = self.conn()
        with self.db():
            rows = conn.execute(
                "SELECT f.name, f.server_name, f.delimiter, f.special_use, f.selectable,"
                " COUNT(m.id), COALESCE(SUM(m.size), 0)"
                " FROM folders f LEFT JOIN messages m ON m.folder_id = f.id"
                " GROUP BY f.id ORDER BY f.name"
            ).fetchall()
        return [
            (
                Folder(
                    name=name,
                    server_name=server or name,
                    delimiter=delim,
                    special_use=su,
                    selectable=bool(sel),
                ),
                int(count),
                int(total),
            )
            for name, server, delim, su, sel, count, total in rows
        ]

    def ref_page(self, folder_id: int, after: int) -> list[StoredRow]:
        """Up to :data:`PAGE` (id, size, flags, internaldate) rows with ids above ``after``."""
        with self.db():
            return self.conn().execute(
                "SELECT id, size, flags, internaldate FROM messages WHERE folder_id = ?"
                " AND id > ? ORDER BY id LIMIT ?", (folder_id, after, PAGE)).fetchall()

    def folder_of_message(self, message_id: int) -> Folder | None:
        with self.db():
            row = self.conn().execute(
                "SELECT f.name, f.server_name, f.delimiter, f.special_use, f.selectable"
                " FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = ?",
                (message_id,)).fetchone()
        if row is None:
            return None
        name, server, delim, su, sel = row
        return Folder(name=name, server_name=server or name, delimiter=delim, special_use=su,
                      selectable=bool(sel))

    def read_rows(self, folder_id: int, keys: Sequence[str]) -> list[StoredRow]:
        """(id, uid, sha256, size, offset, length, eol, flags, internaldate) of row ids ``keys``,
        in file order."""
        marks = ",".join("?" * len(keys))
        with self.db():
            return self.conn().execute(
                "SELECT id, uid, sha256, size, offset, length, eol, flags, internaldate"
                f" FROM messages WHERE folder_id = ? AND id IN ({marks}) ORDER BY offset",
                (folder_id, *[int(k) for k in keys])).fetchall()

    def gmail_of(self, folder_id: int, ids: Sequence[int]
                 ) -> dict[int, tuple[str, tuple[str, ...] | None, str | None]]:
        """{row id: (X-GM-MSGID, labels, thread)} of those of ``ids`` that are Gmail messages."""
        if not self.has_gmail or not ids:
            return {}
        out: dict[int, tuple[str, tuple[str, ...] | None, str | None]] = {}
        with self.db():
            for part in chunks(list(ids)):
                marks = ",".join("?" * len(part))
                for rid, gid, labels, thread in self.conn().execute(
                        "SELECT m.id, m.gm_msgid, g.labels, g.thrid FROM messages m"
                        " LEFT JOIN gmail_messages g ON g.msgid = m.gm_msgid"
                        f" WHERE m.folder_id = ? AND m.gm_msgid IS NOT NULL AND m.id IN ({marks})",
                        (folder_id, *part)):
                    out[int(rid)] = (str(gid), tuple(json.loads(labels)) if labels else None,
                                     thread)
        return out

    def carriers(self, gids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """{X-GM-MSGID: (folder id, row id)} of a row whose frame holds that message."""
        if not self.has_gmail:
            return {}
        out: dict[str, tuple[int, int]] = {}
        with self.db():
            for part in chunks(sorted(set(gids))):
                marks = ",".join("?" * len(part))
                for gid, fid, rid in self.conn().execute(
                        "SELECT g.msgid, m.folder_id, m.id FROM gmail_messages g JOIN messages m"
                        f" ON m.id = g.message WHERE g.msgid IN ({marks})", tuple(part)):
                    out[str(gid)] = (int(fid), int(rid))
        return out

    def folder_row_by_id(self, folder_id: int) -> FolderRow | None:
        with self.db():
            row = self.conn().execute(
                "SELECT id, name, path, uidvalidity, committed_size, delimiter, special_use,"
                " selectable FROM folders WHERE id = ?", (folder_id,)).fetchone()
        return None if row is None else FolderRow(*row)

    def has_labels(self) -> bool:
        if not self.has_gmail:
            return False
        with self.db():
            return self.conn().execute("SELECT 1 FROM gmail_messages LIMIT 1").fetchone() is not None

    def frame_page(self, folder_id: int, after: int) -> list[StoredRow]:
        """Up to :data:`PAGE` rows whose frames start beyond ``after``, in file order."""
        with self.db():
            return (
                self.conn()
                .execute(
                    "SELECT id, uid, key, sha256, size, offset, length, eol, flags,"
                    " internaldate FROM messages WHERE folder_id = ? AND offset > ?"
                    " ORDER BY offset LIMIT ?",
                    (folder_id, after, PAGE),
                )
                .fetchall()
            )


def _present(
    conn: sqlite3.Connection, folder_id: int, column: Literal["uid", "key"], values: Sequence[_T]
) -> set[_T]:
    found: set[_T] = set()
    for part in chunks(values):
        marks = ",".join("?" * len(part))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT {column} FROM messages WHERE folder_id = ? AND {column} IN ({marks})",
                (folder_id, *part),
            )
        )
    return found


# ------------------------------------------------------------ writes, inside the caller's tx()


def update_folder_attrs(conn: sqlite3.Connection, folder_id: int, folder: Folder) -> None:
    conn.execute(
        "UPDATE folders SET delimiter = ?, special_use = ?, selectable = ? WHERE id = ?",
        (folder.delimiter, folder.special_use, int(folder.selectable), folder_id),
    )


def insert_folder(conn: sqlite3.Connection, folder: Folder, path: str, key: str) -> None:
    conn.execute(
        "INSERT INTO folders(name, path, path_key, server_name, delimiter, special_use,"
        " selectable) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            folder.name,
            path,
            key,
            folder.server_name,
            folder.delimiter,
            folder.special_use,
            int(folder.selectable),
        ),
    )


def detach_uids(conn: sqlite3.Connection, folder_id: int, uidvalidity: int) -> None:
    """Forget the folder's UIDs (keeping rows and bytes) under a new UIDVALIDITY."""
    conn.execute(
        "UPDATE messages SET uid = NULL WHERE folder_id = ? AND uid IS NOT NULL",
        (folder_id,),
    )
    conn.execute(
        "UPDATE folders SET uidvalidity = ?, uidnext = NULL, highestmodseq = NULL,"
        " partial = 0 WHERE id = ?",
        (uidvalidity, folder_id),
    )


def set_uidvalidity(conn: sqlite3.Connection, folder_id: int, uidvalidity: int) -> None:
    conn.execute("UPDATE folders SET uidvalidity = ? WHERE id = ?", (uidvalidity, folder_id))


def reattach_row(m: Message, row_id: int) -> tuple[int, str, str | None, str | None, int]:
    """The parameters that give detached row ``row_id`` the uid and metadata of ``m``."""
    assert m.uid is not None
    return (m.uid, _flags_json(m.flags), _iso(m.internaldate), m.gid, row_id)


def message_row(
    folder_id: int, m: Message, offset: int, length: int, eol: str, now: str
) -> tuple[object, ...]:
    """The parameters of the row that records ``m`` framed at ``offset`` in the folder's mbox."""
    return (
        folder_id,
        m.uid,
        m.key if m.uid is None else None,
        m.sha256,
        len(m.raw),
        offset,
        length,
        eol,
        _flags_json(m.flags),
        _iso(m.internaldate),
        now,
        m.gid,
    )


def record_batch(
    conn: sqlite3.Connection,
    folder_id: int,
    inserts: Sequence[tuple[object, ...]],
    reattach: Sequence[tuple[int, str, str | None, str | None, int]],
    end: int,
) -> None:
    """A batch's rows and the folder's new ``committed_size``: the commit mark of its bytes."""
    conn.executemany(
        "INSERT INTO messages(folder_id, uid, key, sha256, size, offset, length,"
        " eol, flags, internaldate, archived_at, gm_msgid)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        inserts,
    )
    conn.executemany(
        "UPDATE messages SET uid = ?, flags = ?, internaldate = ?,"
        " gm_msgid = COALESCE(?, gm_msgid) WHERE id = ?",
        reattach,
    )
    conn.execute("UPDATE folders SET committed_size = ? WHERE id = ?", (end, folder_id))


def record_gmail(conn: sqlite3.Connection, folder_id: int, messages: Sequence[Message]) -> None:
    """The Gmail messages among a just-recorded batch: their labels and thread, and
    (for a message new to the archive) which row holds its bytes."""
    for m in messages:
        if m.gid is None or m.uid is None:
            continue
        row = conn.execute("SELECT id FROM messages WHERE folder_id = ? AND uid = ?",
                           (folder_id, m.uid)).fetchone()
        if row is None:
            continue
        conn.execute(
            "INSERT INTO gmail_messages(msgid, message, thrid, labels) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(msgid) DO UPDATE SET thrid = COALESCE(excluded.thrid, thrid),"
            " labels = CASE WHEN ? IS NULL THEN labels ELSE excluded.labels END",
            (m.gid, row[0], m.thread, json.dumps(list(m.labels or ()), ensure_ascii=False),
             None if m.labels is None else 1))


def set_labels(conn: sqlite3.Connection, folder_id: int, change: FlagChange) -> int:
    """Record a message's new labels (Gmail); 1 when they changed."""
    if change.labels is None or change.uid is None:
        return 0
    labels = json.dumps(list(change.labels), ensure_ascii=False)
    return conn.execute(
        "UPDATE gmail_messages SET labels = ? WHERE labels != ? AND msgid = (SELECT gm_msgid"
        " FROM messages WHERE folder_id = ? AND uid = ?)",
        (labels, labels, folder_id, change.uid)).rowcount


def set_flags(conn: sqlite3.Connection, folder_id: int, change: FlagChange) -> int:
    """Record one message's new flags; how many rows changed (0 when they were the same)."""
    flags = _flags_json(change.flags)
    if change.uid is not None:
        cur = conn.execute(
            "UPDATE messages SET flags = ? WHERE folder_id = ? AND uid = ? AND flags != ?",
            (flags, folder_id, change.uid, flags),
        )
    else:
        cur = conn.execute(
            "UPDATE messages SET flags = ? WHERE folder_id = ? AND key = ? AND flags != ?",
            (flags, folder_id, change.key, flags),
        )
    return cur.rowcount


def finish_folder(conn: sqlite3.Connection, folder_id: int, status: FolderStatus, complete: bool) -> None:
    if complete:
        conn.execute(
            "UPDATE folders SET uidnext = ?, highestmodseq = ?, partial = 0,"
            " uidvalidity = COALESCE(?, uidvalidity) WHERE id = ?",
            (status.uidnext, status.highestmodseq, status.uidvalidity, folder_id),
        )
    else:
        conn.execute(
            "UPDATE folders SET uidnext = NULL, highestmodseq = NULL, partial = 1 WHERE id = ?",
            (folder_id,),
        )
