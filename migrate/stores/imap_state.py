"""Checkpoint state for writing to an IMAP server, where no transaction spans both sides.

An archive can commit a message and its checkpoint together; an IMAP server
cannot: APPEND is one network round trip, our record of it another, and a
kill -9 can fall between them. So each placement goes through two commits:

1. ``doubt``: committed BEFORE the APPEND, with what identifies the message on
   the destination (content sha256 and size in the IMAP wire form, Message-ID
   or a header signature, destination folder);
2. ``done``: committed after, with the APPENDUID (destination UIDVALIDITY/UID).

A run that finds ``doubt`` rows resolves them by looking the message up on
the destination (see :mod:`migrate.stores.imap_writer`): found means done,
not found means not appended. It never appends blindly again. Batches share
one commit each way, so a MULTIAPPEND of 200 messages costs two commits.

``synchronous=NORMAL`` (WAL): a power cut may lose the last commits, which is
safe because a lost ``doubt`` or ``done`` row just makes the next run look
the message up on the destination before appending it.

A doubt that is *not* found may still land later: the bytes of the old
APPEND can be on the wire after the process that sent them is gone. So a
``doubt`` row carries the folder's UIDNEXT before the APPEND (a late copy
gets a UID at or above it) and when it was sent; a doubt found missing
becomes a ``reappends`` row, which takes the APPENDUID of the second APPEND
when it is made, and is checked again later (docs/DESIGN.md, "In-doubt
APPENDs", and :mod:`migrate.stores.imap_writer`).

Schema 2 added those columns and the ``reappends`` table; schema 3 the source's
``gid`` of a message (Gmail's X-GM-MSGID) and its ``labels``, so that a Gmail
destination holds a message once however many label folders show it (a placement
in a second folder points at the first one's copy) and a doubt settled later gets
its labels set again. Older files are upgraded in place when opened for writing
(and read as they are for a dry run).

One state file per job (source + destination). It lives in the platform's
user state directory (``platformdirs.user_state_dir("mailmigrate")/jobs``) or
where ``--state`` says; the directory is created 0700 and the file 0600, as
it names accounts and folders (it never holds a password or message text).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrate import clock
from migrate.errors import ArchiveError
from migrate.model import FolderCheckpoint, FolderStatus
from migrate.stores.lock import ArchiveLock

SCHEMA_VERSION = 3
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    src_folder    TEXT PRIMARY KEY,   -- source folder path ('/' between levels)
    dest_folder   TEXT,               -- destination server name it maps to
    uidvalidity   INTEGER,            -- of the source folder: keys below belong to it
    uidnext       INTEGER,            -- STATUS of the last complete pass (no-op skip)
    highestmodseq INTEGER,
    partial       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS placements (
    src_folder       TEXT NOT NULL,
    src_key          TEXT NOT NULL,   -- UID (IMAP), row id (archive), offset (mbox)
    src_uid          INTEGER,
    state            TEXT NOT NULL CHECK (state IN ('doubt', 'done', 'failed')),
    dest_folder      TEXT NOT NULL,
    dest_uidvalidity INTEGER,
    dest_uid         INTEGER,
    sha256           TEXT NOT NULL,   -- of the message in CRLF wire form
    size             INTEGER NOT NULL,
    raw_size         INTEGER NOT NULL, -- as the source had it (a server may keep bare LFs)
    ident            TEXT NOT NULL,   -- 'id:<Message-ID>' or 'sig:<header signature>'
    flags            TEXT NOT NULL DEFAULT '[]',
    error            TEXT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (src_folder, src_key)
);
CREATE INDEX IF NOT EXISTS placements_dest ON placements (dest_folder, dest_uidvalidity, dest_uid);
CREATE INDEX IF NOT EXISTS placements_state ON placements (src_folder, state);
CREATE TABLE IF NOT EXISTS reappends (
    src_folder       TEXT NOT NULL,
    src_key          TEXT NOT NULL,
    dest_folder      TEXT NOT NULL,
    dest_uidvalidity INTEGER,
    uidnext_before   INTEGER,         -- a late copy of the doubted APPEND has a UID >= this
    doubted_at       REAL NOT NULL,   -- when the doubted APPEND was sent (unix time)
    settle_by        REAL NOT NULL,   -- a run that re-appended waits for a late copy until then
    expires_at       REAL NOT NULL,   -- checked until then, then forgotten
    reappend_uid     INTEGER,         -- APPENDUID of our second APPEND (NULL: not made yet)
    seen_uidnext     INTEGER,         -- no UID at or above this was there at the last check
    sha256           TEXT NOT NULL,
    size             INTEGER NOT NULL,
    raw_size         INTEGER NOT NULL,
    ident            TEXT NOT NULL,
    loose_ident      TEXT,
    loose_sha        TEXT,
    size_slack       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (src_folder, src_key)
);
CREATE INDEX IF NOT EXISTS reappends_dest ON reappends (dest_folder);
"""

# Columns schema 2 added to placements (schema-1 files get them on their first write).
_V2_COLUMNS = (
    ("dest_uidnext", "INTEGER"),  # the destination folder's UIDNEXT (a lower bound) before APPEND
    ("sent_at", "REAL"),          # when the APPEND was sent (unix time)
    ("eta", "REAL"),              # seconds the batch should take at the measured upload rate
    ("loose_ident", "TEXT"),      # identity that survives a server's header rewrites
    ("loose_sha", "TEXT"),        # sha256 of the rewrite-tolerant form (formats.rewrites)
    ("size_slack", "INTEGER NOT NULL DEFAULT 0"),  # bytes a rewrite may drop from the header
    ("gid", "TEXT"),              # schema 3: the source's id of the message across folders
    ("labels", "TEXT"),           # schema 3: its Gmail labels (JSON array), to set with STORE
)
_PLACEMENT_COLUMNS = ("src_key, dest_folder, sha256, size, ident, flags, src_uid, dest_uidvalidity,"
                      " dest_uid, state, error, raw_size, dest_uidnext, sent_at, eta, loose_ident,"
                      " loose_sha, size_slack, gid, labels")


def default_state_dir() -> Path:
    """Where job state files go: the user state dir, or ``$MAILMIGRATE_STATE_DIR``
    (the one setting that moves saved jobs' history too)."""
    from migrate.config.jobs import state_dir

    return state_dir() / "jobs"


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` 0700, and so every missing parent up to our own app directory.

    ``mkdir(parents=True, mode=...)`` gives the parents the umask's mode
    (0755): the state directory would list every job to every local user.
    Directories that already exist (the user's XDG_STATE_HOME) are left alone.
    """
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def job_path(source_id: str, dest_id: str, override: Path | None = None) -> Path:
    """The state file for a job: ``--state`` if given, else one per (source, destination)."""
    if override is not None:
        return Path(override).expanduser()
    digest = hashlib.sha256(f"{source_id}\0{dest_id}".encode()).hexdigest()[:20]
    return default_state_dir() / f"{digest}.sqlite"


@dataclass(frozen=True)
class Placement:
    """One source message's row: where it goes and how far it got."""

    src_key: str
    dest_folder: str
    sha256: str
    size: int
    ident: str
    raw_size: int = 0
    flags: tuple[str, ...] = ()
    src_uid: int | None = None
    dest_uidvalidity: int | None = None
    dest_uid: int | None = None
    state: str = "doubt"
    error: str | None = None
    dest_uidnext: int | None = None
    sent_at: float | None = None
    eta: float | None = None
    loose_ident: str | None = None
    loose_sha: str | None = None
    size_slack: int = 0
    gid: str | None = None
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Reappend:
    """A message whose doubted APPEND was not found and is (to be) appended again."""

    src_folder: str
    src_key: str
    dest_folder: str
    dest_uidvalidity: int | None
    uidnext_before: int | None
    doubted_at: float
    settle_by: float
    expires_at: float
    sha256: str
    size: int
    raw_size: int
    ident: str
    loose_ident: str | None = None
    loose_sha: str | None = None
    size_slack: int = 0
    reappend_uid: int | None = None
    seen_uidnext: int | None = None


_REAPPEND_COLUMNS = ("src_folder, src_key, dest_folder, dest_uidvalidity, uidnext_before,"
                     " doubted_at, settle_by, expires_at, sha256, size, raw_size, ident,"
                     " loose_ident, loose_sha, size_slack, reappend_uid, seen_uidnext")


class JobState:
    """The state DB of one restore/copy job (see the module docstring)."""

    def __init__(self, path: Path | None, source_id: str, dest_id: str,
                 lock_wait: float = 5.0, readonly: bool = False) -> None:
        self.path = path
        self._lock: ArchiveLock | None = None
        self._columns = _PLACEMENT_COLUMNS
        if path is None or (readonly and not path.exists()):
            # A dry run with no state yet: nothing is done, and nothing is written.
            self.conn = sqlite3.connect(":memory:", isolation_level=None)
            self.conn.executescript(_SCHEMA)
            return
        try:
            _private_dirs(path.parent)
            if not readonly and not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ArchiveError(f"cannot create state file {path}: {exc.strerror}; "
                               "choose a writable --state path") from None
        if not readonly:
            self._lock = ArchiveLock(path.with_name(path.name + ".lock"), lock_wait)
            self._lock.acquire()
        try:
            mode = "ro" if readonly else "rw"
            self.conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True,
                                        isolation_level=None, timeout=30.0)
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(_SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (str(SCHEMA_VERSION),))
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('source', ?)", (source_id,))
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('destination', ?)",
                                  (dest_id,))
                self._upgrade()
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            self._columns = self._readable_columns()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ArchiveError(f"state file {path} is unusable ({exc}); move it away to start "
                               "the job afresh (messages already copied are found and skipped)"
                               ) from None
        if row is None or int(row[0]) > SCHEMA_VERSION:
            self.close()
            raise ArchiveError(f"state file {path} has an unknown schema; use a newer mailmigrate")

    def _upgrade(self) -> None:
        """Schema 1 -> 2 -> 3: the columns and table of the in-doubt re-checks, then the
        gid and labels of a message (nothing is lost)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(placements)")}
        missing = [(n, t) for n, t in _V2_COLUMNS if n not in have]
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if not missing and row is not None and int(row[0]) >= SCHEMA_VERSION:
            return
        with self._tx() as conn:
            for name, kind in missing:
                conn.execute(f"ALTER TABLE placements ADD COLUMN {name} {kind}")
            conn.execute("CREATE INDEX IF NOT EXISTS placements_gid ON placements (gid)"
                         " WHERE gid IS NOT NULL")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value < ?",
                         (str(SCHEMA_VERSION), str(SCHEMA_VERSION)))

    def _readable_columns(self) -> str:
        """The placement columns to select; NULLs for those a schema-1 file (dry run) lacks."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(placements)")}
        return ", ".join(c if c in have or c in ("src_key",) else f"NULL AS {c}"
                         for c in (x.strip() for x in _PLACEMENT_COLUMNS.split(",")))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise ArchiveError(f"cannot write state file {self.path} ({exc}); free disk space "
                               "or fix permissions, then run again") from None

    # -- folders -------------------------------------------------------------------
    def checkpoint(self, src_folder: str, dest_folder: str, status: FolderStatus) -> FolderCheckpoint:
        """The folder's checkpoint; a new source UIDVALIDITY forgets its old keys.

        Forgetting is safe: the messages those keys placed are still on the
        destination, unclaimed, and will be found there by content.
        """
        row = self.conn.execute(
            "SELECT uidvalidity, uidnext, highestmodseq, partial FROM folders WHERE src_folder = ?",
            (src_folder,)).fetchone()
        if row is None or (status.uidvalidity is not None and row[0] != status.uidvalidity):
            with self._tx() as conn:
                conn.execute("DELETE FROM placements WHERE src_folder = ?", (src_folder,))
                conn.execute(
                    "INSERT OR REPLACE INTO folders (src_folder, dest_folder, uidvalidity)"
                    " VALUES (?, ?, ?)", (src_folder, dest_folder, status.uidvalidity))
            return FolderCheckpoint(uidvalidity=status.uidvalidity)
        uidvalidity, uidnext, modseq, partial = row
        (max_done, done) = self.conn.execute(
            "SELECT COALESCE(MAX(src_uid), 0), COUNT(*) FROM placements"
            " WHERE src_folder = ? AND state = 'done'", (src_folder,)).fetchone()
        (min_open,) = self.conn.execute(
            "SELECT MIN(src_uid) FROM placements WHERE src_folder = ? AND state != 'done'",
            (src_folder,)).fetchone()
        last_uid = int(max_done)
        if min_open is not None:
            last_uid = min(last_uid, int(min_open) - 1)
        return FolderCheckpoint(uidvalidity=uidvalidity, last_uid=max(last_uid, 0),
                                uidnext=uidnext, highestmodseq=modseq, messages=int(done),
                                partial=bool(partial) or min_open is not None)

    def finish(self, src_folder: str, status: FolderStatus, complete: bool) -> None:
        (failed,) = self.conn.execute(
            "SELECT COUNT(*) FROM placements WHERE src_folder = ? AND state != 'done'",
            (src_folder,)).fetchone()
        with self._tx() as conn:
            if complete and not failed:
                conn.execute("UPDATE folders SET uidnext = ?, highestmodseq = ?, partial = 0,"
                             " uidvalidity = COALESCE(?, uidvalidity) WHERE src_folder = ?",
                             (status.uidnext, status.highestmodseq, status.uidvalidity, src_folder))
            else:
                # Failed messages are retried: the folder must not look unchanged.
                conn.execute("UPDATE folders SET uidnext = NULL, highestmodseq = NULL, partial = 1"
                             " WHERE src_folder = ?", (src_folder,))

    # -- placements ----------------------------------------------------------------
    def done_keys(self, src_folder: str, keys: Sequence[str]) -> set[str]:
        return self._keys("placements", "state = 'done'", src_folder, keys)

    def _keys(self, table: str, condition: str, src_folder: str, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` with a row in ``table`` meeting ``condition`` (in chunks)."""
        out: set[str] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start:start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in self.conn.execute(
                f"SELECT src_key FROM {table} WHERE src_folder = ? AND {condition}"
                f" AND src_key IN ({marks})", (src_folder, *chunk)))
        return out

    def doubts(self, src_folder: str) -> list[Placement]:
        return [self._placement(r) for r in self.conn.execute(
            f"SELECT {self._columns} FROM placements WHERE src_folder = ? AND state = 'doubt'",
            (src_folder,))]

    def lookup(self, src_folder: str, keys: Sequence[str]) -> dict[str, Placement]:
        out: dict[str, Placement] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start:start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    f"SELECT {self._columns} FROM placements"
                    f" WHERE src_folder = ? AND src_key IN ({marks})", (src_folder, *chunk)):
                p = self._placement(r)
                out[p.src_key] = p
        return out

    @staticmethod
    def _placement(r: tuple[object, ...]) -> Placement:
        return Placement(src_key=str(r[0]), dest_folder=str(r[1]), sha256=str(r[2]),
                         size=int(r[3]), ident=str(r[4]),  # type: ignore[call-overload]
                         flags=tuple(json.loads(str(r[5]))),
                         src_uid=r[6] if isinstance(r[6], int) else None,
                         dest_uidvalidity=r[7] if isinstance(r[7], int) else None,
                         dest_uid=r[8] if isinstance(r[8], int) else None,
                         state=str(r[9]), error=str(r[10]) if r[10] is not None else None,
                         raw_size=int(r[11]),  # type: ignore[call-overload]
                         dest_uidnext=r[12] if isinstance(r[12], int) else None,
                         sent_at=float(r[13]) if isinstance(r[13], int | float) else None,
                         eta=float(r[14]) if isinstance(r[14], int | float) else None,
                         loose_ident=str(r[15]) if r[15] is not None else None,
                         loose_sha=str(r[16]) if r[16] is not None else None,
                         size_slack=int(r[17] or 0),  # type: ignore[call-overload]
                         gid=str(r[18]) if r[18] is not None else None,
                         labels=tuple(json.loads(str(r[19]))) if r[19] is not None else None)

    def claimed_uids(self, dest_folder: str, dest_uidvalidity: int | None) -> set[int]:
        """Destination UIDs this job has placed there (they satisfy no other message)."""
        return {int(r[0]) for r in self.conn.execute(
            "SELECT dest_uid FROM placements WHERE dest_folder = ? AND dest_uid IS NOT NULL"
            " AND dest_uidvalidity IS ? AND state = 'done'", (dest_folder, dest_uidvalidity))}

    def held(self, gids: Sequence[str]) -> dict[str, Placement]:
        """{gid: the placement that put it on the destination} for messages known by the
        source's gid and placed (done, with a destination UID) by this job."""
        out: dict[str, Placement] = {}
        if "NULL AS gid" in self._columns:
            return out  # a schema-1/2 file read for a dry run: nothing known by gid
        for start in range(0, len(gids), _CHUNK):
            chunk = list(gids[start:start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    f"SELECT {self._columns} FROM placements WHERE state = 'done' AND dest_uid"
                    f" IS NOT NULL AND gid IN ({marks}) ORDER BY rowid", tuple(chunk)):
                p = self._placement(r)
                if p.gid is not None:
                    out.setdefault(p.gid, p)
        return out

    def has_doubts_for(self, dest_folder: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM placements WHERE dest_folder = ? AND state = 'doubt' LIMIT 1",
            (dest_folder,)).fetchone() is not None

    def record(self, src_folder: str, placements: Iterable[Placement]) -> None:
        """Write rows (any state) in one commit."""
        rows = list(placements)
        if not rows:
            return
        with self._tx() as conn:
            self._write(conn, src_folder, rows)

    @staticmethod
    def _write(conn: sqlite3.Connection, src_folder: str, placements: Iterable[Placement]) -> None:
        now = clock.now().isoformat(timespec="seconds")
        rows = [(src_folder, p.src_key, p.src_uid, p.state, p.dest_folder, p.dest_uidvalidity,
                 p.dest_uid, p.sha256, p.size, p.raw_size or p.size, p.ident,
                 json.dumps(list(p.flags)), p.error, now, p.dest_uidnext, p.sent_at, p.eta,
                 p.loose_ident, p.loose_sha, p.size_slack, p.gid,
                 json.dumps(list(p.labels), ensure_ascii=False) if p.labels is not None else None)
                for p in placements]
        if rows:
            conn.executemany(
                "INSERT OR REPLACE INTO placements (src_folder, src_key, src_uid, state,"
                " dest_folder, dest_uidvalidity, dest_uid, sha256, size, raw_size, ident, flags,"
                " error, updated_at, dest_uidnext, sent_at, eta, loose_ident, loose_sha,"
                " size_slack, gid, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?)", rows)

    def forget(self, src_folder: str, keys: Sequence[str]) -> None:
        """Drop rows of messages that turned out not to be on the destination."""
        if not keys:
            return
        with self._tx() as conn:
            conn.executemany("DELETE FROM placements WHERE src_folder = ? AND src_key = ?",
                             [(src_folder, k) for k in keys])

    # -- re-appends after doubt (see the module docstring) ----------------------------
    def missed(self, src_folder: str, found: Iterable[Placement], misses: Sequence[Placement],
               records: Iterable[Reappend]) -> None:
        """One commit for a settled batch of doubts: the found ones are done, the missing
        ones are forgotten and (those that may still land) watched as ``records``."""
        with self._tx() as conn:
            self._write(conn, src_folder, found)
            conn.executemany("DELETE FROM placements WHERE src_folder = ? AND src_key = ?",
                             [(src_folder, p.src_key) for p in misses])
            conn.executemany(
                f"INSERT OR REPLACE INTO reappends ({_REAPPEND_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.src_folder, r.src_key, r.dest_folder, r.dest_uidvalidity, r.uidnext_before,
                  r.doubted_at, r.settle_by, r.expires_at, r.sha256, r.size, r.raw_size, r.ident,
                  r.loose_ident, r.loose_sha, r.size_slack, r.reappend_uid, r.seen_uidnext)
                 for r in records])

    def reappends(self, dest_folder: str | None = None) -> list[Reappend]:
        """Watched re-appends, of one destination folder or all."""
        where, args = ("WHERE dest_folder = ?", (dest_folder,)) if dest_folder else ("", ())
        return [Reappend(*r) for r in self.conn.execute(
            f"SELECT {_REAPPEND_COLUMNS} FROM reappends {where} ORDER BY src_folder, src_key",
            args)]

    def pending_reappends(self, src_folder: str, keys: Sequence[str]) -> set[str]:
        """Keys among ``keys`` that are watched and not yet appended a second time."""
        return self._keys("reappends", "reappend_uid IS NULL", src_folder, keys)

    def done_with_reappends(self, src_folder: str, placements: Sequence[Placement],
                            reappended: dict[str, int | None], dropped: Sequence[str] = ()) -> None:
        """The commit after an APPEND: its rows, the UIDs of the second APPENDs among them
        (``{key: uid}``), and the watch on ``dropped`` keys ended."""
        with self._tx() as conn:
            self._write(conn, src_folder, placements)
            # seen_uidnext is cleared: the late copy may have landed just before ours,
            # with a lower UID, so the next look starts from uidnext_before again.
            conn.executemany(
                "UPDATE reappends SET reappend_uid = ?, seen_uidnext = NULL WHERE src_folder = ?"
                " AND src_key = ?", [(uid, src_folder, key) for key, uid in reappended.items()])
            conn.executemany("DELETE FROM reappends WHERE src_folder = ? AND src_key = ?",
                             [(src_folder, k) for k in dropped])

    def end_watch(self, record: Reappend, placement: Placement | None = None) -> None:
        """Stop watching ``record``; with ``placement``, the message's row now says where it is."""
        with self._tx() as conn:
            if placement is not None:
                self._write(conn, record.src_folder, [placement])
            conn.execute("DELETE FROM reappends WHERE src_folder = ? AND src_key = ?",
                         (record.src_folder, record.src_key))

    def watched_up_to(self, records: Iterable[Reappend], uidnext: int) -> None:
        """No copy at or above these records' last look up to ``uidnext``: skip it next time."""
        with self._tx() as conn:
            conn.executemany("UPDATE reappends SET seen_uidnext = ? WHERE src_folder = ? AND"
                             " src_key = ?", [(uidnext, r.src_folder, r.src_key) for r in records])

    def set_labels(self, src_folder: str, labels_by_key: dict[str, tuple[str, ...]]) -> None:
        """The Gmail labels now set on these placements' messages."""
        if not labels_by_key:
            return
        with self._tx() as conn:
            conn.executemany(
                "UPDATE placements SET labels = ? WHERE src_folder = ? AND src_key = ?",
                [(json.dumps(list(v), ensure_ascii=False), src_folder, k)
                 for k, v in labels_by_key.items()])

    def set_flags(self, src_folder: str, flags_by_key: dict[str, tuple[str, ...]]) -> None:
        if not flags_by_key:
            return
        with self._tx() as conn:
            conn.executemany(
                "UPDATE placements SET flags = ? WHERE src_folder = ? AND src_key = ?",
                [(json.dumps(list(f)), src_folder, k) for k, f in flags_by_key.items()])


__all__ = ["JobState", "Placement", "Reappend", "default_state_dir", "job_path"]
