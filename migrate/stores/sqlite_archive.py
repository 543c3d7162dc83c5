"""The embedded SQLite archive: content-addressed, browsable, crash-safe.

The schema below is a public interface (README documents it; tests query it
with plain SQL). A message and the checkpoint that says it is stored commit
in one transaction, so kill -9 at any instant leaves either both or neither;
the next run re-fetches what the lost batch held. Batches, not messages, are
committed: one fsync per batch keeps the archive fast.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from migrate import clock
from migrate.errors import ArchiveError
from migrate.folders import NAMES_KEY, NAMES_RELATIVE, as_relative, legacy_namespace, stored_name
from migrate.formats.summary import summarize
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.lock import ArchiveLock

SCHEMA_VERSION = 1

SCHEMA = """
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
    date TEXT
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
    archived_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS folder_messages_uid
    ON folder_messages (folder_id, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS folder_messages_uidl
    ON folder_messages (folder_id, uidl) WHERE uidl IS NOT NULL;
CREATE INDEX IF NOT EXISTS folder_messages_message ON folder_messages (message_id);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (
    subject, from_addr, to_addrs, body, content=''
);
"""


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class SqliteArchive:
    """A SQLite archive file; implements DestinationStore and ArchiveReader."""

    def __init__(
        self, path: Path, account: str = "", lock_wait: float = 5.0, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        self.account = account
        self.readonly = readonly
        self._lock: ArchiveLock | None = None
        self._folder_ids: dict[str, int] = {}
        if readonly:
            if not self.path.exists():
                raise ArchiveError(f"archive {self.path} does not exist; check the path")
        else:
            self._lock = ArchiveLock(self.path.with_name(self.path.name + ".lock"), lock_wait)
            self._lock.acquire()
        try:
            self.conn = self._open()
            self.relative_names = self._names_relative()
        except BaseException:
            if self._lock:
                self._lock.release()
            raise
        self._legacy_ns: dict[str, str] | None = None

    # -- opening -----------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        created = not self.path.exists()
        if not self.readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if created:
                    os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise ArchiveError(
                    f"cannot create archive {self.path}: {exc.strerror}; "
                    "choose a writable location"
                ) from None
            if not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK):
                raise ArchiveError(
                    f"archive {self.path} is not writable; fix its permissions or choose "
                    "another path"
                )
        uri = f"file:{self.path}?mode={'ro' if self.readonly else 'rw'}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0,
                                   check_same_thread=False)
            if not self.readonly:
                # 16 KiB pages suit a table of message blobs (measured ~20% faster
                # than 4 KiB); it only takes effect when the file is new.
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(SCHEMA)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            version = conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(
                f"archive {self.path} is not a usable SQLite archive ({exc}); "
                "restore it from a copy or choose another path"
            ) from None
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise ArchiveError(
                f"archive {self.path} has an unknown schema version; "
                "use a newer mailmigrate or another path"
            )
        return conn

    def _names_relative(self) -> bool:
        """Whether folder names are relative to the source's namespace (see migrate.folders).

        Archives made before that hold prefixed names ("INBOX/Archiv"); one
        that holds no such name is the same either way, and is marked.
        """
        if self.conn.execute("SELECT 1 FROM meta WHERE key = ?", (NAMES_KEY,)).fetchone():
            return True
        prefixed = self.conn.execute(
            "SELECT 1 FROM folders WHERE upper(substr(name, 1, 6)) = 'INBOX/' LIMIT 1").fetchone()
        if prefixed:
            return False
        if not self.readonly:
            with self.conn:
                self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                  (NAMES_KEY, NAMES_RELATIVE))
        return True

    def row_name(self, folder: Folder) -> str:
        """The name the folders table keeps ``folder`` under (prefixed in a legacy archive)."""
        return stored_name(folder, self.relative_names)

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self._lock:
                self._lock.release()
                self._lock = None

    # -- destination side ----------------------------------------------------------
    def _folder_id(self, folder: Folder) -> int:
        """The folder's row id, created on first use; -1 for an unknown folder when read-only."""
        name = self.row_name(folder)
        fid = self._folder_ids.get(name)
        if fid is not None:
            return fid
        row = self.conn.execute(
            "SELECT id FROM folders WHERE account = ? AND name = ?", (self.account, name)
        ).fetchone()
        if self.readonly:  # a dry run looks, never writes
            return int(row[0]) if row is not None else -1
        if row is None:
            with self.conn:
                cur = self.conn.execute(
                    "INSERT INTO folders (account, name, delimiter, special_use, selectable)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (self.account, name, folder.delimiter, folder.special_use,
                     int(folder.selectable)),
                )
            fid = int(cur.lastrowid or 0)
        else:
            fid = int(row[0])
            with self.conn:
                self.conn.execute(
                    "UPDATE folders SET delimiter = ?, special_use = ?, selectable = ?"
                    " WHERE id = ?",
                    (folder.delimiter, folder.special_use, int(folder.selectable), fid),
                )
        self._folder_ids[name] = fid
        return fid

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        fid = self._folder_id(folder)
        if fid < 0:
            return FolderCheckpoint()
        uidvalidity, uidnext, modseq, partial = self.conn.execute(
            "SELECT uidvalidity, uidnext, highestmodseq, partial FROM folders WHERE id = ?",
            (fid,)).fetchone()
        if status.uidvalidity is not None and uidvalidity != status.uidvalidity:
            if self.readonly:
                return FolderCheckpoint(uidvalidity=status.uidvalidity)
            # New UIDVALIDITY (or first visit): old UIDs mean nothing now. Keep the
            # messages, detach their UIDs; add_messages re-attaches by content.
            with self.conn:
                self.conn.execute(
                    "UPDATE folder_messages SET uid = NULL WHERE folder_id = ? AND uid IS NOT NULL",
                    (fid,),
                )
                self.conn.execute(
                    "UPDATE folders SET uidvalidity = ?, uidnext = NULL, highestmodseq = NULL,"
                    " partial = 0 WHERE id = ?",
                    (status.uidvalidity, fid),
                )
            return FolderCheckpoint(uidvalidity=status.uidvalidity)
        last_uid, count = self.conn.execute(
            "SELECT COALESCE(MAX(uid), 0), COUNT(*) FROM folder_messages WHERE folder_id = ?",
            (fid,),
        ).fetchone()
        return FolderCheckpoint(uidvalidity=uidvalidity, last_uid=int(last_uid),
                                uidnext=uidnext, highestmodseq=modseq, messages=int(count),
                                partial=bool(partial))

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        fid = self._folder_id(folder)
        out: list[MessageRef] = []
        for start in range(0, len(refs), 500):
            chunk = refs[start:start + 500]
            uids = [r.uid for r in chunk if r.uid is not None]
            keys = [r.key for r in chunk if r.uid is None]
            have_uids: set[int] = set()
            have_keys: set[str] = set()
            if uids:
                marks = ",".join("?" * len(uids))
                have_uids = {row[0] for row in self.conn.execute(
                    f"SELECT uid FROM folder_messages WHERE folder_id = ? AND uid IN ({marks})",
                    (fid, *uids))}
            if keys:
                marks = ",".join("?" * len(keys))
                have_keys = {row[0] for row in self.conn.execute(
                    f"SELECT uidl FROM folder_messages WHERE folder_id = ? AND uidl IN ({marks})",
                    (fid, *keys))}
            out.extend(r for r in chunk
                       if (r.uid not in have_uids if r.uid is not None else r.key not in have_keys))
        return out

    def _store_blob(self, msg: Message) -> int:
        row = self.conn.execute("SELECT id FROM messages WHERE sha256 = ?", (msg.sha256,)).fetchone()
        if row is not None:
            return int(row[0])
        info = summarize(msg.raw)
        cur = self.conn.execute(
            "INSERT INTO messages (sha256, size, raw, msgid, subject, from_addr, to_addrs, date)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (msg.sha256, msg.size, msg.raw, info.msgid, info.subject, info.from_addr,
             info.to_addrs, info.date),
        )
        mid = int(cur.lastrowid or 0)
        self.conn.execute(
            "INSERT INTO messages_fts (rowid, subject, from_addr, to_addrs, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (mid, info.subject or "", info.from_addr or "", info.to_addrs or "", info.body),
        )
        return mid

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        fid = self._folder_id(folder)
        now = clock.now().isoformat(timespec="seconds")
        added = 0
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                for msg in messages:
                    if msg.uid is not None:
                        exists = self.conn.execute(
                            "SELECT 1 FROM folder_messages WHERE folder_id = ? AND uid = ?",
                            (fid, msg.uid)).fetchone()
                    else:
                        exists = self.conn.execute(
                            "SELECT 1 FROM folder_messages WHERE folder_id = ? AND uidl = ?",
                            (fid, msg.key)).fetchone()
                    if exists:
                        continue
                    mid = self._store_blob(msg)
                    flags = json.dumps(list(msg.flags), ensure_ascii=False)
                    if msg.uid is not None:
                        # A row detached by a UIDVALIDITY change, same content: re-attach it.
                        detached = self.conn.execute(
                            "SELECT id FROM folder_messages WHERE folder_id = ? AND message_id = ?"
                            " AND uid IS NULL AND uidl IS NULL LIMIT 1", (fid, mid)).fetchone()
                        if detached is not None:
                            self.conn.execute(
                                "UPDATE folder_messages SET uid = ?, flags = ?, internaldate = ?"
                                " WHERE id = ?",
                                (msg.uid, flags, _iso(msg.internaldate), detached[0]))
                            added += 1
                            continue
                    self.conn.execute(
                        "INSERT INTO folder_messages (folder_id, message_id, uid, uidl, flags,"
                        " internaldate, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (fid, mid, msg.uid, None if msg.uid is not None else msg.key, flags,
                         _iso(msg.internaldate), now))
                    added += 1
        except sqlite3.OperationalError as exc:
            raise ArchiveError(
                f"cannot write to archive {self.path}: {exc}; free disk space or fix permissions,"
                " then run again (what was committed is kept)"
            ) from None
        return added

    def archived_at(self, folder: Folder, keys: Sequence[str]) -> dict[str, datetime]:
        row = self.conn.execute("SELECT id FROM folders WHERE account = ? AND name = ?",
                                (self.account, self.row_name(folder))).fetchone()
        if row is None:
            return {}
        out: dict[str, datetime] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for uidl, when in self.conn.execute(
                    f"SELECT uidl, archived_at FROM folder_messages WHERE folder_id = ?"
                    f" AND uidl IN ({marks})", (row[0], *chunk)):
                out[str(uidl)] = datetime.fromisoformat(when)
        return out

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        fid = self._folder_id(folder)
        changed = 0
        with self.conn:
            for ch in changes:
                flags = json.dumps(list(ch.flags), ensure_ascii=False)
                if ch.uid is not None:
                    cur = self.conn.execute(
                        "UPDATE folder_messages SET flags = ? WHERE folder_id = ? AND uid = ?"
                        " AND flags != ?", (flags, fid, ch.uid, flags))
                else:
                    cur = self.conn.execute(
                        "UPDATE folder_messages SET flags = ? WHERE folder_id = ? AND uidl = ?"
                        " AND flags != ?", (flags, fid, ch.key, flags))
                changed += cur.rowcount
        return changed

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        fid = self._folder_id(folder)
        with self.conn:
            if complete:
                self.conn.execute(
                    "UPDATE folders SET uidvalidity = COALESCE(?, uidvalidity), uidnext = ?,"
                    " highestmodseq = ?, partial = 0 WHERE id = ?",
                    (status.uidvalidity, status.uidnext, status.highestmodseq, fid))
            else:
                self.conn.execute(
                    "UPDATE folders SET uidnext = NULL, highestmodseq = NULL, partial = 1"
                    " WHERE id = ?", (fid,))

    # -- reader side ----------------------------------------------------------------
    def _folder_from_row(self, row: sqlite3.Row | tuple[object, ...], account: object = None
                         ) -> Folder:
        """A folder row as readers see it: named relative to the namespace, also in a
        legacy archive (whose rows keep the prefixed names, see ``_name``)."""
        name, delimiter, special_use, selectable = row[0], row[1], row[2], row[3]
        folder = Folder(name=str(name), server_name=str(name),
                        delimiter=str(delimiter) if delimiter is not None else None,
                        special_use=str(special_use) if special_use else None,
                        selectable=bool(selectable))
        if self.relative_names:
            return folder
        if self._legacy_ns is None:
            by_account: dict[str, list[Folder]] = {}
            for acc, n, d in self.conn.execute("SELECT account, name, delimiter FROM folders"):
                by_account.setdefault(str(acc), []).append(Folder(name=str(n), delimiter=d))
            self._legacy_ns = {acc: legacy_namespace(fs) for acc, fs in by_account.items()}
        return as_relative(folder, self._legacy_ns.get(str(account), ""))

    def list_folders(self) -> list[Folder]:
        rows = self.conn.execute(
            "SELECT name, delimiter, special_use, selectable, account FROM folders"
            " WHERE account = ? OR ? = '' ORDER BY name", (self.account, self.account)).fetchall()
        return sorted((self._folder_from_row(r, r[4]) for r in rows), key=lambda f: f.name)

    def accounts(self) -> list[str]:
        """The accounts (user@host) this archive holds, e.g. to find their provider."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT account FROM folders WHERE account != '' ORDER BY account")]

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        rows = self.conn.execute(
            "SELECT f.name, f.delimiter, f.special_use, f.selectable, COUNT(fm.id),"
            " COALESCE(SUM(m.size), 0), f.account FROM folders f"
            " LEFT JOIN folder_messages fm ON fm.folder_id = f.id"
            " LEFT JOIN messages m ON m.id = fm.message_id"
            " WHERE f.account = ? OR ? = '' GROUP BY f.id ORDER BY f.name",
            (self.account, self.account)).fetchall()
        return sorted(((self._folder_from_row(r, r[6]), int(r[4]), int(r[5])) for r in rows),
                      key=lambda item: item[0].name)

    def _folder_row_id(self, folder: Folder) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM folders WHERE (account = ? OR ? = '') AND name = ?",
            (self.account, self.account, self.row_name(folder))).fetchone()
        return int(row[0]) if row is not None else None

    def message_refs(self, folder: Folder) -> Iterator[MessageRef]:
        """Every message of a folder as a ref keyed by its placement row id (stable).

        Paged, so listing a large folder never holds it all; the key is what
        :meth:`read_messages` takes back, and what a restore's state records.
        """
        fid = self._folder_row_id(folder)
        if fid is None:
            return
        after = 0
        while True:
            page = self.conn.execute(
                "SELECT fm.id, m.size, fm.flags, fm.internaldate FROM folder_messages fm"
                " JOIN messages m ON m.id = fm.message_id WHERE fm.folder_id = ? AND fm.id > ?"
                " ORDER BY fm.id LIMIT 1000", (fid, after)).fetchall()
            if not page:
                return
            for fm_id, size, flags, idate in page:
                yield MessageRef(key=str(fm_id), size=int(size), flags=tuple(json.loads(flags)),
                                 internaldate=_parse_iso(idate))
            after = int(page[-1][0])

    def folder_of_key(self, key: str) -> Folder | None:
        """The folder holding placement ``key`` (a :meth:`message_refs` key), or None.

        Lets ``show ID`` find a message from the ID alone, as ``search`` prints it.
        """
        if not key.isdigit():
            return None
        row = self.conn.execute(
            "SELECT f.name, f.delimiter, f.special_use, f.selectable, f.account"
            " FROM folder_messages fm JOIN folders f ON f.id = fm.folder_id WHERE fm.id = ?",
            (int(key),)).fetchone()
        return self._folder_from_row(row, row[4]) if row is not None else None

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]:
        """The messages for ``keys`` from :meth:`message_refs`, one row in memory at a time."""
        fid = self._folder_row_id(folder)
        if fid is None:
            return
        for key in keys:
            row = self.conn.execute(
                "SELECT fm.flags, fm.internaldate, m.raw, m.sha256 FROM folder_messages fm"
                " JOIN messages m ON m.id = fm.message_id WHERE fm.id = ? AND fm.folder_id = ?",
                (int(key), fid)).fetchone()
            if row is None:
                continue
            flags, idate, raw, sha = row
            msg = Message(key=key, raw=bytes(raw), flags=tuple(json.loads(flags)),
                          internaldate=_parse_iso(idate))
            if msg.sha256 != sha:
                raise ArchiveError(
                    f"archive {self.path}: message {key} in {folder.name!r} does not match "
                    "its sha256; run `mailmigrate verify` on a copy")
            yield msg

    def iter_messages(self, folder: Folder) -> Iterator[Message]:
        row = self.conn.execute(
            "SELECT id FROM folders WHERE (account = ? OR ? = '') AND name = ?",
            (self.account, self.account, self.row_name(folder))).fetchone()
        if row is None:
            return
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM folder_messages WHERE folder_id = ? ORDER BY uid, id", (row[0],))]
        for fm_id in ids:
            fm = self.conn.execute(
                "SELECT fm.uid, fm.uidl, fm.flags, fm.internaldate, m.raw, m.sha256, fm.id"
                " FROM folder_messages fm JOIN messages m ON m.id = fm.message_id"
                " WHERE fm.id = ?", (fm_id,)).fetchone()
            uid, uidl, flags, internaldate, raw, sha, _ = fm
            msg = Message(key=str(uidl if uidl is not None else f"fm{fm_id}"), raw=bytes(raw),
                          flags=tuple(json.loads(flags)), internaldate=_parse_iso(internaldate),
                          uid=uid)
            if msg.sha256 != sha:
                raise ArchiveError(
                    f"archive {self.path}: message {fm_id} in {folder.name!r} does not match "
                    "its sha256; run `mailmigrate verify` on a copy"
                )
            yield msg
