"""The mbox-tree archive: one mboxrd file per folder plus a SQLite index.

The mbox files are the archive other tools can read; the index
(``.mailmigrate/index.sqlite``) holds what mbox cannot: UIDs, flags,
INTERNALDATE, the exact size and sha256 of each message, where its frame is,
and the per-folder checkpoint.

Durability rests on one rule: bytes first, then the index. A batch is
appended to the mbox and fsync'ed, then its index rows and the folder's new
``committed_size`` are committed in one transaction. Everything in an mbox
file beyond ``committed_size`` is a batch whose commit never happened; it is
cut off when the folder is next opened and fetched again, so a kill at any
instant neither loses nor duplicates a message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, TypeVar

from migrate import clock, mboxrd
from migrate.errors import ArchiveError
from migrate.lock import ArchiveLock
from migrate.model import (
    FlagChange,
    Folder,
    FolderCheckpoint,
    FolderStatus,
    Message,
    MessageRef,
    normalise_flags,
)
from migrate.safepath import META_DIR, assign_path, collision_key, resolve_inside

SCHEMA_VERSION: Final = 1
INDEX_NAME: Final = "index.sqlite"
LOCK_NAME: Final = "lock"
# SQLite's default limit on bound parameters is 999 on old builds; stay below.
_CHUNK: Final = 500
_PAGE: Final = 1000
# One writev hands the kernel up to this many buffers (POSIX IOV_MAX is >= 16,
# Linux and macOS allow 1024) or about this many bytes, whichever comes first.
_IOV_MAX: Final = max(16, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))
_WRITE_CHUNK: Final = 8 << 20

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
    archived_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_uid
    ON messages(folder_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_key
    ON messages(folder_id, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_offset ON messages(folder_id, offset);
CREATE INDEX IF NOT EXISTS messages_detached
    ON messages(folder_id, sha256) WHERE uid IS NULL AND key IS NULL;
"""

_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    # A naive time has lost its offset already; UTC is the least wrong reading.
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).isoformat()


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable; without it a created file can vanish."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FolderRow:
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


class MboxArchive:
    """An mbox-tree archive at ``root``: a :class:`DestinationStore` and :class:`ArchiveReader`.

    The archive lock is held from construction to :meth:`close` (not when
    ``readonly``), so the truncation of uncommitted tails can never cut off
    another run's batch in flight.
    """

    def __init__(self, root: Path, account: str = "", lock_wait: float = 5.0, readonly: bool = False) -> None:
        self.root = Path(root)
        self.account = account
        self.readonly = readonly
        self._meta = self.root / META_DIR
        self._index_path = self._meta / INDEX_NAME
        self._mutex = threading.RLock()
        self._lock: ArchiveLock | None = None
        self._writer: tuple[int, int] | None = None  # (folder id, fd)
        self._taken_keys: set[str] | None = None
        self._conn: sqlite3.Connection | None = None
        try:
            if readonly:
                self._open_readonly()
            else:
                self._prepare_root()
                self._lock = ArchiveLock(self._meta / LOCK_NAME, lock_wait)
                self._lock.acquire()
                self._open_writable()
            self._check_schema()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ opening

    def _prepare_root(self) -> None:
        try:
            if self.root.exists() and not self.root.is_dir():
                raise ArchiveError(
                    f"archive path {self.root} exists and is not a directory; "
                    "give a directory path for an mbox-tree archive"
                )
            for d in (self.root, self._meta):
                if not d.exists():
                    d.mkdir(mode=0o700, parents=True, exist_ok=True)
                    _fsync_dir(d.parent)
            for d in (self.root, self._meta):
                if not os.access(d, os.W_OK | os.X_OK):
                    # access() fails with EROFS on a read-only mount: say which it is.
                    err = errno.EROFS if os.statvfs(d).f_flag & os.ST_RDONLY else errno.EACCES
                    raise OSError(err, os.strerror(err))
        except OSError as exc:
            raise ArchiveError(
                f"cannot write to archive directory {self.root}: {exc.strerror or exc}; "
                "choose a writable location or fix its permissions"
            ) from exc

    def _connect(self, target: str, uri: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise ArchiveError(
                f"cannot open archive index {self._index_path}: {exc}; "
                "check that the file is readable and the directory writable"
            ) from exc
        return conn

    def _open_writable(self) -> sqlite3.Connection:
        if not self._index_path.exists():
            try:
                # Created here so that it (and SQLite's -wal/-shm, which copy
                # its mode) are private from the start.
                os.close(os.open(self._index_path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise ArchiveError(
                    f"cannot create archive index {self._index_path}: {exc.strerror}; "
                    "choose a writable location or fix its permissions"
                ) from exc
        conn = self._connect(str(self._index_path), uri=False)
        self._conn = conn  # closed by close() if anything below fails
        with self._db(conn):
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.DatabaseError("cannot switch the index to WAL mode")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    for stmt in _split_sql(_SCHEMA):
                        conn.execute(stmt)
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                elif "meta" not in tables:
                    # Someone else's database: adding our tables to it would be rude.
                    raise sqlite3.DatabaseError("not a mailmigrate index")
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

    def _open_readonly(self) -> sqlite3.Connection:
        if not self._index_path.is_file():
            raise ArchiveError(
                f"{self.root} is not a mailmigrate mbox archive (no {META_DIR}/{INDEX_NAME}); check the path"
            )
        conn = self._connect(f"{self._index_path.resolve().as_uri()}?mode=ro", uri=True)
        self._conn = conn
        with self._db(conn):
            conn.execute("PRAGMA query_only=ON")
        return conn

    def _check_schema(self) -> None:
        conn = self._db_conn()
        with self._db(conn):
            try:
                rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.OperationalError as exc:
                raise sqlite3.DatabaseError(f"not a mailmigrate index ({exc})") from exc
        version = rows.get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise ArchiveError(
                f"archive index {self._index_path} has schema version {version}, "
                f"this mailmigrate reads version {SCHEMA_VERSION}; use a matching mailmigrate"
            )
        stored = rows.get("account", "")
        if self.account and stored and stored != self.account:
            raise ArchiveError(
                f"archive {self.root} holds account {stored!r}, not {self.account!r}; "
                "use a separate archive directory per account"
            )

    @contextlib.contextmanager
    def _db(self, conn: sqlite3.Connection | None = None) -> Iterator[None]:
        """Turn SQLite failures into one-line ArchiveErrors naming the index."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise ArchiveError(
                    f"archive index {self._index_path} is busy ({text}); "
                    "wait for the other process using it to finish, then run again"
                ) from exc
            if "readonly" in text or "read-only" in text or "disk" in text:
                raise ArchiveError(
                    f"cannot write archive index {self._index_path} ({text}); "
                    "free disk space or fix the permissions, then run again"
                ) from exc
            raise self._corrupt(exc) from exc
        except sqlite3.Error as exc:
            raise self._corrupt(exc) from exc

    def _corrupt(self, exc: BaseException) -> ArchiveError:
        return ArchiveError(
            f"archive index {self._index_path} is unusable ({exc}); restore it from a "
            f"backup or salvage it with `sqlite3 {self._index_path} .recover`"
        )

    def _db_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ArchiveError(f"archive {self.root} is closed; open it again")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of a batch's rows or none of them."""
        conn = self._db_conn()
        if self.readonly:
            raise ArchiveError(f"archive {self.root} was opened read-only; cannot write to it")
        with self._db():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ folders

    def _folder_row(self, name: str) -> _FolderRow | None:
        conn = self._db_conn()
        with self._db():
            row = conn.execute(
                "SELECT id, name, path, uidvalidity, committed_size, delimiter, special_use,"
                " selectable FROM folders WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _FolderRow(*row)

    def _ensure_folder(self, folder: Folder) -> _FolderRow:
        row = self._folder_row(folder.name)
        if row is not None:
            if (row.delimiter, row.special_use, row.selectable) != (
                folder.delimiter,
                folder.special_use,
                folder.selectable,
            ):
                with self._tx() as conn:
                    conn.execute(
                        "UPDATE folders SET delimiter = ?, special_use = ?, selectable = ? WHERE id = ?",
                        (folder.delimiter, folder.special_use, int(folder.selectable), row.id),
                    )
            return row
        if self.readonly:
            raise ArchiveError(f"archive {self.root} was opened read-only; cannot add folders")
        if self._taken_keys is None:
            with self._db():
                self._taken_keys = {r[0] for r in self._db_conn().execute("SELECT path_key FROM folders")}
        taken = self._taken_keys
        path = assign_path(folder.name, taken)
        key = collision_key(path)
        with self._tx() as conn:
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
        taken.add(key)
        row = self._folder_row(folder.name)
        assert row is not None
        return row

    def _mbox_path(self, row: _FolderRow) -> Path:
        try:
            return resolve_inside(self.root, row.path)
        except ValueError as exc:
            raise ArchiveError(
                f"archive index {self._index_path} maps folder {row.name!r} to an unsafe "
                f"path ({exc}); restore the index from a backup"
            ) from None

    def _check_file(self, row: _FolderRow, path: Path) -> int:
        """The mbox file's size, after making sure it holds all committed bytes."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if row.committed_size == 0:
                return -1
            raise ArchiveError(
                f"mbox file {path} of folder {row.name!r} is missing but the index says it "
                f"holds {row.committed_size} bytes; restore the file from a backup"
            ) from None
        except OSError as exc:
            raise ArchiveError(
                f"cannot read mbox file {path} of folder {row.name!r}: {exc.strerror}; fix its permissions"
            ) from exc
        if size < row.committed_size:
            raise ArchiveError(
                f"mbox file {path} of folder {row.name!r} is shorter ({size} bytes) than the "
                f"index records ({row.committed_size}); restore the file from a backup"
            )
        return size

    def _recover(self, row: _FolderRow) -> None:
        """Cut off an uncommitted tail left by a run that died mid-batch."""
        path = self._mbox_path(row)
        size = self._check_file(row, path)
        if size > row.committed_size and not self.readonly:
            self._close_writer()
            try:
                with open(path, "r+b") as fp:
                    fp.truncate(row.committed_size)
                    os.fsync(fp.fileno())
            except OSError as exc:
                raise ArchiveError(
                    f"cannot truncate the unfinished tail of {path}: {exc.strerror}; "
                    "fix its permissions, then run again"
                ) from exc

    def _open_writer(self, row: _FolderRow) -> int:
        """A raw fd for the folder's mbox, kept open while batches go to one folder."""
        if self._writer is not None and self._writer[0] == row.id:
            return self._writer[1]
        self._close_writer()
        self._recover(row)
        path = self._mbox_path(row)
        try:
            created = self._make_parents(path)
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not existed or created:
                _fsync_dir(path.parent)
        except OSError as exc:
            raise ArchiveError(
                f"cannot open mbox file {path} for writing: {exc.strerror}; "
                "choose a writable location or fix its permissions"
            ) from exc
        self._writer = (row.id, fd)
        return fd

    def _make_parents(self, path: Path) -> bool:
        made = False
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            _fsync_dir(d.parent)
            made = True
        return made

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                os.close(self._writer[1])
            self._writer = None

    # ------------------------------------------------------------ DestinationStore

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        """Say what is held of ``folder``; detach old UIDs on a UIDVALIDITY change.

        Detached messages keep their rows and bytes (uid set NULL) and are
        re-attached by sha256 when the new scan brings them again, so a new
        UIDVALIDITY costs a rescan but never a duplicate.
        """
        with self._mutex:
            if self.readonly:  # a dry run looks, never writes
                found = self._folder_row(folder.name)
                if found is None or (status.uidvalidity is not None
                                     and found.uidvalidity not in (None, status.uidvalidity)):
                    return FolderCheckpoint(uidvalidity=status.uidvalidity)
                return self._read_checkpoint(found.id)
            row = self._ensure_folder(folder)
            self._recover(row)
            new = status.uidvalidity
            if new is not None and row.uidvalidity is not None and new != row.uidvalidity:
                with self._tx() as conn:
                    conn.execute(
                        "UPDATE messages SET uid = NULL WHERE folder_id = ? AND uid IS NOT NULL",
                        (row.id,),
                    )
                    conn.execute(
                        "UPDATE folders SET uidvalidity = ?, uidnext = NULL, highestmodseq = NULL,"
                        " partial = 0 WHERE id = ?",
                        (new, row.id),
                    )
                return FolderCheckpoint(uidvalidity=new)
            if new is not None and row.uidvalidity is None:
                with self._tx() as conn:
                    conn.execute("UPDATE folders SET uidvalidity = ? WHERE id = ?", (new, row.id))
            return self._read_checkpoint(row.id)

    def _read_checkpoint(self, folder_id: int) -> FolderCheckpoint:
        conn = self._db_conn()
        with self._db():
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

    def _held(self, folder_id: int, uids: Sequence[int], keys: Sequence[str]) -> tuple[set[int], set[str]]:
        conn = self._db_conn()
        held_uids: set[int] = set()
        held_keys: set[str] = set()
        with self._db():
            for part in _chunks(uids):
                marks = ",".join("?" * len(part))
                held_uids.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT uid FROM messages WHERE folder_id = ? AND uid IN ({marks})",
                        (folder_id, *part),
                    )
                )
            for kpart in _chunks(keys):
                marks = ",".join("?" * len(kpart))
                held_keys.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT key FROM messages WHERE folder_id = ? AND key IN ({marks})",
                        (folder_id, *kpart),
                    )
                )
        return held_uids, held_keys

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        """Refs not held: by UID in the current UIDVALIDITY, by key when there is no UID."""
        with self._mutex:
            row = self._folder_row(folder.name)
            if row is None:
                return list(refs)
            uids = [r.uid for r in refs if r.uid is not None]
            keys = [r.key for r in refs if r.uid is None]
            held_uids, held_keys = self._held(row.id, uids, keys)
            return [
                r for r in refs if (r.uid not in held_uids if r.uid is not None else r.key not in held_keys)
            ]

    def archived_at(self, folder: Folder, keys: Sequence[str]) -> dict[str, datetime]:
        """{key: commit time} for uid-less (POP3) messages this folder holds."""
        with self._mutex:
            row = self._folder_row(folder.name)
            if row is None:
                return {}
            conn = self._db_conn()
            out: dict[str, datetime] = {}
            with self._db():
                for part in _chunks(list(keys)):
                    marks = ",".join("?" * len(part))
                    for key, when in conn.execute(
                        f"SELECT key, archived_at FROM messages WHERE folder_id = ? AND key IN ({marks})",
                        (row.id, *part),
                    ):
                        stamp = datetime.fromisoformat(when)
                        out[str(key)] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            return out

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        """Append a batch durably: frames fsync'ed first, then one index commit.

        Messages already held (same UID, or same key for uid-less sources)
        are skipped; a message whose bytes match a detached row of this
        folder re-attaches that row instead of being written again. Both
        appended and re-attached messages count as newly stored.
        """
        if not messages:
            return 0
        with self._mutex:
            row = self._ensure_folder(folder)
            held_uids, held_keys = self._held(
                row.id,
                [m.uid for m in messages if m.uid is not None],
                [m.key for m in messages if m.uid is None],
            )
            fresh: list[Message] = []
            for m in messages:
                if m.uid is not None:
                    if m.uid in held_uids:
                        continue
                    held_uids.add(m.uid)
                else:
                    if m.key in held_keys:
                        continue
                    held_keys.add(m.key)
                fresh.append(m)
            if not fresh:
                return 0
            detached = self._detached(row.id, [m.sha256 for m in fresh if m.uid is not None])
            now = clock.now().isoformat(timespec="seconds")
            reattach: list[tuple[int, str, str | None, int]] = []
            to_write: list[Message] = []
            for m in fresh:
                ids = detached.get(m.sha256) if m.uid is not None else None
                if ids:
                    assert m.uid is not None
                    reattach.append(
                        (
                            m.uid,
                            json.dumps(normalise_flags(m.flags)),
                            _iso(m.internaldate),
                            ids.pop(),
                        )
                    )
                else:
                    to_write.append(m)
            try:
                inserts, end = self._append(row, to_write, now)
                with self._tx() as conn:
                    conn.executemany(
                        "INSERT INTO messages(folder_id, uid, key, sha256, size, offset, length,"
                        " eol, flags, internaldate, archived_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        inserts,
                    )
                    conn.executemany(
                        "UPDATE messages SET uid = ?, flags = ?, internaldate = ? WHERE id = ?",
                        reattach,
                    )
                    conn.execute("UPDATE folders SET committed_size = ? WHERE id = ?", (end, row.id))
            except BaseException:
                self._abandon_tail(folder.name)
                raise
            return len(inserts) + len(reattach)

    def _abandon_tail(self, name: str) -> None:
        """After a failed batch, cut off its uncommitted frames now, best effort.

        ``committed_size`` is read back from the index rather than taken from
        before the batch: if the failure (say, Ctrl-C) came just after COMMIT,
        the batch is committed and must stay. If anything fails here, the
        next open of the folder does the same cut.
        """
        self._close_writer()
        with contextlib.suppress(ArchiveError):
            row = self._folder_row(name)
            if row is not None:
                self._recover(row)

    def _detached(self, folder_id: int, shas: Sequence[str]) -> dict[str, list[int]]:
        if not shas:
            return {}
        conn = self._db_conn()
        out: dict[str, list[int]] = {}
        with self._db():
            for part in _chunks(sorted(set(shas))):
                marks = ",".join("?" * len(part))
                for rid, sha in conn.execute(
                    "SELECT id, sha256 FROM messages WHERE folder_id = ? AND uid IS NULL"
                    f" AND key IS NULL AND sha256 IN ({marks}) ORDER BY id DESC",
                    (folder_id, *part),
                ):
                    out.setdefault(sha, []).append(rid)
        return out

    def _append(
        self, row: _FolderRow, batch: Sequence[Message], now: str
    ) -> tuple[list[tuple[object, ...]], int]:
        """Write and fsync the frames; return their index rows and the new file end."""
        if not batch:
            return [], row.committed_size
        fd = self._open_writer(row)
        offset = row.committed_size
        rows: list[tuple[object, ...]] = []
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            for m in batch:
                frame = mboxrd.encode(m.raw, date=m.internaldate)
                pending.extend(frame.parts)
                pending_bytes += frame.length
                if len(pending) + 3 > _IOV_MAX or pending_bytes >= _WRITE_CHUNK:
                    _write_all(fd, pending)
                    pending, pending_bytes = [], 0
                rows.append(
                    (
                        row.id,
                        m.uid,
                        m.key if m.uid is None else None,
                        m.sha256,
                        len(m.raw),
                        offset,
                        frame.length,
                        frame.eol,
                        json.dumps(normalise_flags(m.flags)),
                        _iso(m.internaldate),
                        now,
                    )
                )
                offset += frame.length
            _write_all(fd, pending)
            os.fsync(fd)
        except OSError as exc:
            raise ArchiveError(
                f"cannot append to mbox file of folder {row.name!r}: {exc.strerror}; "
                "free disk space or fix permissions, then run again (nothing was lost)"
            ) from exc
        return rows, offset

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        """Flags live only in the index, so the mbox bytes are never touched."""
        if not changes:
            return 0
        with self._mutex:
            row = self._folder_row(folder.name)
            if row is None:
                return 0
            changed = 0
            with self._tx() as conn:
                for c in changes:
                    flags = json.dumps(normalise_flags(c.flags))
                    if c.uid is not None:
                        cur = conn.execute(
                            "UPDATE messages SET flags = ? WHERE folder_id = ? AND uid = ? AND flags != ?",
                            (flags, row.id, c.uid, flags),
                        )
                    else:
                        cur = conn.execute(
                            "UPDATE messages SET flags = ? WHERE folder_id = ? AND key = ? AND flags != ?",
                            (flags, row.id, c.key, flags),
                        )
                    changed += cur.rowcount
            return changed

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        """Remember the STATUS this pass completed, for the next run's no-op check.

        A filtered pass (``complete=False``) may have left older messages
        behind, so it records no STATUS to skip on and marks the folder partial.
        """
        with self._mutex:
            row = self._ensure_folder(folder)
            with self._tx() as conn:
                if complete:
                    conn.execute(
                        "UPDATE folders SET uidnext = ?, highestmodseq = ?, partial = 0,"
                        " uidvalidity = COALESCE(?, uidvalidity) WHERE id = ?",
                        (status.uidnext, status.highestmodseq, status.uidvalidity, row.id),
                    )
                else:
                    conn.execute(
                        "UPDATE folders SET uidnext = NULL, highestmodseq = NULL, partial = 1 WHERE id = ?",
                        (row.id,),
                    )

    # ------------------------------------------------------------ ArchiveReader

    def list_folders(self) -> list[Folder]:
        return [f for f, _, _ in self.folder_summary()]

    def accounts(self) -> list[str]:
        """The account (user@host) this tree holds (one per tree), if recorded."""
        with self._mutex:
            conn = self._db_conn()
            with self._db():
                row = conn.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
        return [row[0]] if row and row[0] else []

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        with self._mutex:
            conn = self._db_conn()
            with self._db():
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

    def message_refs(self, folder: Folder) -> Iterator[MessageRef]:
        """Every message of a folder as a ref keyed by its index row id (stable), paged."""
        with self._mutex:
            row = self._folder_row(folder.name)
        if row is None:
            return
        after = -1
        while True:
            with self._mutex, self._db():
                page = self._db_conn().execute(
                    "SELECT id, size, flags, internaldate FROM messages WHERE folder_id = ?"
                    " AND id > ? ORDER BY id LIMIT ?", (row.id, after, _PAGE)).fetchall()
            if not page:
                return
            for rid, size, flags, idate in page:
                yield MessageRef(key=str(rid), size=int(size), flags=tuple(json.loads(flags)),
                                 internaldate=datetime.fromisoformat(idate) if idate else None)
            after = int(page[-1][0])

    def folder_of_key(self, key: str) -> Folder | None:
        """The folder holding index row ``key`` (a :meth:`message_refs` key), or None.

        Lets ``show ID`` find a message from the ID alone.
        """
        if not key.isdigit():
            return None
        with self._mutex, self._db():
            row = self._db_conn().execute(
                "SELECT f.name, f.server_name, f.delimiter, f.special_use, f.selectable"
                " FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = ?",
                (int(key),)).fetchone()
        if row is None:
            return None
        name, server, delim, su, sel = row
        return Folder(name=name, server_name=server or name, delimiter=delim, special_use=su,
                      selectable=bool(sel))

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]:
        """The messages for ``keys`` from :meth:`message_refs`, sha256-verified, one at a time."""
        with self._mutex:
            row = self._folder_row(folder.name)
        if row is None or not keys:
            return
        path = self._mbox_path(row)
        try:
            fp = open(path, "rb")  # noqa: SIM115 - closed in finally across yields
        except OSError as exc:
            raise ArchiveError(
                f"cannot read mbox file {path} of folder {row.name!r}: {exc.strerror}; fix its permissions"
            ) from exc
        try:
            for part in _chunks(list(keys)):
                marks = ",".join("?" * len(part))
                with self._mutex, self._db():
                    rows = self._db_conn().execute(
                        "SELECT id, uid, sha256, size, offset, length, eol, flags, internaldate"
                        f" FROM messages WHERE folder_id = ? AND id IN ({marks}) ORDER BY offset",
                        (row.id, *[int(k) for k in part])).fetchall()
                for rid, uid, sha, size, offset, length, eol, flags, idate in rows:
                    yield self._read_one(fp, row.name, path, str(rid), uid, sha, size, offset,
                                         length, eol, flags, idate)
        finally:
            fp.close()

    def iter_messages(self, folder: Folder) -> Iterable[Message]:
        """Messages in file order, one frame in memory at a time, sha256-verified.

        ``Message.key`` is the source's key for uid-less sources (the POP3
        UIDL), otherwise the index row id (stable, and unique even for
        detached messages); ``uid`` is the UID in the current UIDVALIDITY.
        """
        with self._mutex:
            row = self._folder_row(folder.name)
        if row is None:
            return
        path = self._mbox_path(row)
        with self._mutex:
            if self._check_file(row, path) < 0:
                return
        try:
            fp = open(path, "rb")  # noqa: SIM115 - closed in finally across yields
        except OSError as exc:
            raise ArchiveError(
                f"cannot read mbox file {path} of folder {row.name!r}: {exc.strerror}; fix its permissions"
            ) from exc
        try:
            after = -1
            while True:
                with self._mutex, self._db():
                    page = (
                        self._db_conn()
                        .execute(
                            "SELECT id, uid, key, sha256, size, offset, length, eol, flags,"
                            " internaldate FROM messages WHERE folder_id = ? AND offset > ?"
                            " ORDER BY offset LIMIT ?",
                            (row.id, after, _PAGE),
                        )
                        .fetchall()
                    )
                if not page:
                    return
                for rid, uid, key, sha, size, offset, length, eol, flags, idate in page:
                    yield self._read_one(
                        fp,
                        row.name,
                        path,
                        key if key is not None else str(rid),
                        uid,
                        sha,
                        size,
                        offset,
                        length,
                        eol,
                        flags,
                        idate,
                    )
                after = page[-1][5]
        finally:
            fp.close()

    def _read_one(
        self,
        fp: BinaryIO,
        folder: str,
        path: Path,
        key: str,
        uid: int | None,
        sha: str,
        size: int,
        offset: int,
        length: int,
        eol: str,
        flags: str,
        idate: str | None,
    ) -> Message:
        where = f"message at offset {offset} of folder {folder!r} ({path})"
        fix = "restore the mbox file from a backup, or run backup again into a new archive"
        try:
            fp.seek(offset)
            frame = fp.read(length)
        except OSError as exc:
            raise ArchiveError(f"cannot read {where}: {exc.strerror}; {fix}") from exc
        if len(frame) != length:
            raise ArchiveError(f"{where} is cut short; {fix}")
        try:
            raw = mboxrd.decode(frame, eol, size)
        except mboxrd.FrameError as exc:
            raise ArchiveError(f"{where} is damaged ({exc}); {fix}") from None
        msg = Message(
            key=key,
            raw=raw,
            flags=tuple(json.loads(flags)),
            internaldate=datetime.fromisoformat(idate) if idate else None,
            uid=uid,
        )
        if msg.sha256 != sha:
            raise ArchiveError(f"{where} is corrupt (sha256 mismatch); {fix}")
        return msg

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._mutex:
            self._close_writer()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> MboxArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _write_all(fd: int, parts: list[bytes]) -> None:
    """``os.writev`` until everything is written (a short write is legal)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def _split_sql(script: str) -> list[str]:
    """Statements of a script, for running inside our own transaction.

    ``executescript`` would COMMIT first; splitting on ';' is safe here
    because the schema has no ';' inside literals (comments are stripped).
    """
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
