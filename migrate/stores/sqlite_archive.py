"""The embedded SQLite archive: content-addressed, browsable, crash-safe.

The schema (:mod:`migrate.stores.sqlite_schema`, with the upgrade of older
archives) is a public interface (README documents it; tests query it with
plain SQL). A message and the checkpoint that says it is stored commit
in one transaction, so kill -9 at any instant leaves either both or neither;
the next run re-fetches what the lost batch held. Batches, not messages, are
committed: one fsync per batch keeps the archive fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate import clock
from migrate.errors import ArchiveError
from migrate.folders import NAMES_KEY, NAMES_RELATIVE, as_relative, legacy_namespace, stored_name
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores import sqlite_schema
from migrate.stores.lock import ArchiveLock
from migrate.stores.sqlite_checkpoint import BackgroundCheckpoint

if TYPE_CHECKING:  # the summary (email.policy, the HTML sanitiser) loads when first needed
    from migrate.formats.summary import Summary

SCHEMA_VERSION = sqlite_schema.SCHEMA_VERSION


class UpgradeProgress:
    """Says on stderr how the one-off reindex of an older archive advances (every 10 %)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = 100 if total == 0 else done * 10 // total * 10
        if step == self.shown:
            return
        if self.shown < 0:
            print(f"mailmigrate: upgrading the search index of {self.path} to schema version "
                  f"{SCHEMA_VERSION} (once; safe to interrupt, it resumes)", file=sys.stderr)
        self.shown = step
        print(f"mailmigrate: reindexed {done:,} of {total:,} messages ({step} %)",
              file=sys.stderr, flush=True)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# The writer checkpoints by itself only when the background checkpoint lags this far
# behind (pages of 16 KiB: 64 MB of WAL; SQLite's default is 1,000 pages).
CHECKPOINT_BOUND_PAGES = 4096


class SqliteArchive:
    """A SQLite archive file; implements DestinationStore and ArchiveReader."""

    #: A placement per folder and UID, content shared by hash as it is stored
    #: (:class:`~migrate.stores.base.IndependentFolders`).
    folders_independent = True

    def __init__(
        self, path: Path, account: str = "", lock_wait: float = 5.0, readonly: bool = False,
        upgrade_progress: bool = True,
    ) -> None:
        self.path = Path(path)
        self.account = account
        self.readonly = readonly
        self.lock_wait = lock_wait
        self.upgrade_progress = upgrade_progress
        self._lock: ArchiveLock | None = None
        self._folder_ids: dict[str, int] = {}
        self._summaries: dict[str, Summary] = {}  # sha256 -> summary, from prepare()
        self._checkpoint: BackgroundCheckpoint | None = None
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
        conn = self._connect(readonly=self.readonly)
        try:
            if not self.readonly:
                self._prepare(conn)
            elif self._upgrade_due(conn):
                # A reader of an older archive upgrades it once, then reads as usual.
                conn.close()
                self._upgrade_for_reader()
                conn = self._connect(readonly=True)
                self._upgrade_due(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rw'}"
        try:
            return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0,
                                   check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: BaseException) -> ArchiveError:
        return ArchiveError(f"archive {self.path} is not a usable SQLite archive ({exc}); "
                            "restore it from a copy or choose another path")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """A writer's connection: pragmas, the schema of a new file, the upgrade of an old one."""
        try:
            # 16 KiB pages suit a table of message blobs (measured ~20% faster
            # than 4 KiB); it only takes effect when the file is new.
            conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
            if has_meta is None:
                conn.execute("BEGIN IMMEDIATE")
                sqlite_schema.create(conn)
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._unusable(exc) from None
        if self._upgrade_due(conn):
            self._upgrade(conn)

    def _upgrade_due(self, conn: sqlite3.Connection) -> bool:
        """Whether the archive is older than this version (or mid-upgrade); refuses newer ones."""
        try:
            version, _ = sqlite_schema.version(conn)
            due = sqlite_schema.needs_upgrade(conn)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise self._unusable(exc) from None
        if version is None or version > SCHEMA_VERSION:
            raise ArchiveError(
                f"archive {self.path} has an unknown schema version; "
                "use a newer mailmigrate or another path"
            )
        return due

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        progress = UpgradeProgress(self.path) if self.upgrade_progress else None
        try:
            sqlite_schema.upgrade(conn, progress)
        except sqlite3.OperationalError as exc:
            raise ArchiveError(
                f"cannot upgrade archive {self.path}: {exc}; free disk space or fix "
                "permissions, then run again (the upgrade resumes where it stopped)") from None
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _upgrade_for_reader(self) -> None:
        if not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK):
            raise ArchiveError(
                f"archive {self.path} was written by an older mailmigrate and its search "
                "index must be upgraded once, which needs write access; fix its permissions "
                "or copy it to a writable place")
        lock = ArchiveLock(self.path.with_name(self.path.name + ".lock"), self.lock_wait)
        lock.acquire()
        try:
            conn = self._connect(readonly=False)
            try:
                self._prepare(conn)
            finally:
                conn.close()
        finally:
            lock.release()

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
            with self._writing():
                self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                  (NAMES_KEY, NAMES_RELATIVE))
        return True

    def row_name(self, folder: Folder) -> str:
        """The name the folders table keeps ``folder`` under (prefixed in a legacy archive)."""
        return stored_name(folder, self.relative_names)

    def close(self) -> None:
        try:
            if self._checkpoint is not None:
                self._checkpoint.stop()
                self._checkpoint = None
            self.conn.close()
        finally:
            if self._lock:
                self._lock.release()
                self._lock = None

    # -- destination side ----------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction. A write SQLite refuses (disk full, a read-only file) is
        an ArchiveError naming the fix (exit 5), wherever in a run it comes, never a
        traceback; what was committed before stays."""
        try:
            with self.conn:
                yield
        except sqlite3.OperationalError as exc:
            raise ArchiveError(
                f"cannot write to archive {self.path}: {exc}; free disk space or fix permissions,"
                " then run again (what was committed is kept)"
            ) from None

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
            with self._writing():
                cur = self.conn.execute(
                    "INSERT INTO folders (account, name, delimiter, special_use, selectable)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (self.account, name, folder.delimiter, folder.special_use,
                     int(folder.selectable)),
                )
            fid = int(cur.lastrowid or 0)
        else:
            fid = int(row[0])
            with self._writing():
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
            with self._writing():
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
        have_uids, have_keys = self._placed(fid, [r.uid for r in refs if r.uid is not None],
                                            [r.key for r in refs if r.uid is None])
        return [r for r in refs
                if (r.uid not in have_uids if r.uid is not None else r.key not in have_keys)]

    def _placed(self, fid: int, uids: Sequence[int], keys: Sequence[str]
                ) -> tuple[set[int], set[str]]:
        """The UIDs, and the keys of uid-less (POP3) messages, that folder ``fid`` holds
        among these: one query per 500, not one per message."""
        return self._present(fid, "uid", uids), self._present(fid, "uidl", keys)

    def _present(self, fid: int, column: str, values: Sequence[Any]) -> set[Any]:
        """The ``values`` found in ``folder_messages.column`` (uid or uidl) of folder ``fid``."""
        found: set[Any] = set()
        for start in range(0, len(values), 500):
            chunk = list(values[start:start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self.conn.execute(
                f"SELECT {column} FROM folder_messages WHERE folder_id = ? AND {column} IN ({marks})",
                (fid, *chunk)))
        return found

    def _contents(self, digests: Sequence[str]) -> dict[str, int]:
        """{sha256: content id} of the contents among ``digests`` already stored."""
        out: dict[str, int] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update((str(d), int(i)) for d, i in self.conn.execute(
                f"SELECT sha256, id FROM messages WHERE sha256 IN ({marks})", chunk))
        return out

    def prepare(self, messages: Sequence[Message]) -> None:
        """Summarise a fetched batch for the index ahead of storing it: the engine calls
        this on its fetch thread, while the batch before is written (SQLite and fsync
        release the GIL), so the summary, the writer's largest cost, leaves its path.
        At most the batch being stored and the one fetched are held."""
        from migrate.formats.summary import summarize

        if not self.readonly:
            for msg in messages:
                self._summaries[msg.sha256] = summarize(msg.raw)

    def _store_blob(self, msg: Message, stored: dict[str, int]) -> int:
        """The content id of ``msg``: the one in ``stored`` (the batch's contents the
        archive holds, kept up to date here), else a new row with its index entry."""
        from migrate.formats.summary import summarize

        mid = stored.get(msg.sha256)
        if mid is not None:
            return mid
        info = self._summaries.pop(msg.sha256, None) or summarize(msg.raw)
        cur = self.conn.execute(
            "INSERT INTO messages (sha256, size, raw, msgid, subject, from_addr, to_addrs, date,"
            " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (msg.sha256, msg.size, msg.raw, info.msgid, info.subject, info.from_addr,
             info.to_addrs, info.date, info.attachments),
        )
        mid = int(cur.lastrowid or 0)
        self.conn.execute(sqlite_schema.INSERT_FTS, sqlite_schema.fts_row(mid, info))
        stored[msg.sha256] = mid
        return mid

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        fid = self._folder_id(folder)
        now = clock.now().isoformat(timespec="seconds")
        added = 0
        if self._checkpoint is None:
            # The WAL goes back into the file beside the writer, not inside its commits;
            # SQLite's own checkpoint stays as the bound (64 MB) should that fall behind.
            self.conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BOUND_PAGES}")
            self._checkpoint = BackgroundCheckpoint(self.path)
        try:
            with self._writing():
                self.conn.execute("BEGIN IMMEDIATE")
                # What the folder and the archive hold of the batch, asked once for it
                have_uids, have_keys = self._placed(
                    fid, [m.uid for m in messages if m.uid is not None],
                    [m.key for m in messages if m.uid is None])
                before = self._contents([m.sha256 for m in messages])
                stored = dict(before)
                for msg in messages:
                    if msg.uid in have_uids if msg.uid is not None else msg.key in have_keys:
                        continue
                    mid = self._store_blob(msg, stored)
                    if msg.gid is not None:
                        self._gmail_row(folder, msg.gid, mid, msg.thread, msg.labels)
                    # only content held before can have a detached placement to re-attach
                    added += self._place(fid, mid, msg, now, reattach=msg.sha256 in before)
                    if msg.uid is not None:
                        have_uids.add(msg.uid)
                    else:
                        have_keys.add(msg.key)
        finally:
            for msg in messages:  # those stored before, and all of them after a failure
                self._summaries.pop(msg.sha256, None)
        if self._checkpoint is not None:
            self._checkpoint.committed()
        return added

    def _place(self, fid: int, mid: int, msg: Message | MessageRef, now: str,
               reattach: bool = True) -> int:
        """One placement of content ``mid`` in folder ``fid`` (inside the caller's
        transaction); a row detached by a UIDVALIDITY change with the same content is
        re-attached instead (looked for unless ``reattach`` is False: content stored
        in this very batch). Returns 1."""
        flags = json.dumps(list(msg.flags), ensure_ascii=False)
        if msg.uid is not None and reattach:
            detached = self.conn.execute(
                "SELECT id FROM folder_messages WHERE folder_id = ? AND message_id = ?"
                " AND uid IS NULL AND uidl IS NULL LIMIT 1", (fid, mid)).fetchone()
            if detached is not None:
                self.conn.execute(
                    "UPDATE folder_messages SET uid = ?, flags = ?, internaldate = ?,"
                    " gm_msgid = COALESCE(?, gm_msgid) WHERE id = ?",
                    (msg.uid, flags, _iso(msg.internaldate), msg.gid, detached[0]))
                return 1
        self.conn.execute(
            "INSERT INTO folder_messages (folder_id, message_id, uid, uidl, flags,"
            " internaldate, archived_at, gm_msgid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (fid, mid, msg.uid, None if msg.uid is not None else msg.key, flags,
             _iso(msg.internaldate), now, msg.gid))
        return 1

    def _gmail_row(self, folder: Folder, gid: str, mid: int, thread: str | None,
                   labels: tuple[str, ...] | None) -> None:
        """The Gmail message ``gid`` is content ``mid``, with these labels (None: as
        recorded) and thread."""
        self.conn.execute(
            "INSERT INTO gmail_messages (account, msgid, thrid, message_id, labels)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, msgid) DO UPDATE SET"
            " message_id = excluded.message_id, thrid = COALESCE(excluded.thrid, thrid),"
            " labels = CASE WHEN ? IS NULL THEN labels ELSE excluded.labels END",
            (self.account, gid, thread, mid,
             json.dumps(list(labels or ()), ensure_ascii=False),
             None if labels is None else 1))

    # -- one message in several folders (Gmail labels, see LinkingDestination) ---------
    def _held(self, folder: Folder, gids: Sequence[str]) -> dict[str, int]:
        """{gid: content id} of the Gmail messages whose content this archive holds."""
        out: dict[str, int] = {}
        for start in range(0, len(gids), 500):
            chunk = list(gids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            out.update((str(g), int(m)) for g, m in self.conn.execute(
                "SELECT g.msgid, g.message_id FROM gmail_messages g JOIN messages m"
                f" ON m.id = g.message_id WHERE g.account = ? AND g.msgid IN ({marks})",
                (self.account, *chunk)))
        return out

    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        held = self._held(folder, [r.gid for r in refs if r.gid])
        return {r.key for r in refs if r.gid in held}

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        """Placements of messages already stored (a label folder's copy of All Mail's
        message): one transaction, as a batch of :meth:`add_messages` is."""
        fid = self._folder_id(folder)
        held = self._held(folder, [r.gid for r in refs if r.gid])
        now = clock.now().isoformat(timespec="seconds")
        added = 0
        with self._writing():
            self.conn.execute("BEGIN IMMEDIATE")
            for ref in refs:
                mid = held.get(ref.gid or "")
                if mid is None or ref.uid is None or self.conn.execute(
                        "SELECT 1 FROM folder_messages WHERE folder_id = ? AND uid = ?",
                        (fid, ref.uid)).fetchone():
                    continue
                if ref.labels is not None or ref.thread is not None:
                    self._gmail_row(folder, str(ref.gid), mid, ref.thread, ref.labels)
                added += self._place(fid, mid, ref, now)
        return added

    def has_labels(self) -> bool:
        """Whether this archive holds Gmail messages (labels to restore)."""
        return self.conn.execute("SELECT 1 FROM gmail_messages LIMIT 1").fetchone() is not None

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
        """Flags of the placements, and (Gmail) the labels of the message: how many
        messages changed."""
        fid = self._folder_id(folder)
        changed = 0
        with self._writing():
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
                relabelled = 0
                if ch.labels is not None and ch.uid is not None:
                    labels = json.dumps(list(ch.labels), ensure_ascii=False)
                    relabelled = self.conn.execute(
                        "UPDATE gmail_messages SET labels = ? WHERE account = ? AND labels != ?"
                        " AND msgid = (SELECT gm_msgid FROM folder_messages WHERE folder_id = ?"
                        " AND uid = ?)", (labels, self.account, labels, fid, ch.uid)).rowcount
                changed += 1 if cur.rowcount or relabelled else 0
        return changed

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        fid = self._folder_id(folder)
        with self._writing():
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
                "SELECT fm.id, m.size, fm.flags, fm.internaldate, fm.gm_msgid, g.labels, g.thrid"
                " FROM folder_messages fm JOIN messages m ON m.id = fm.message_id"
                " JOIN folders f ON f.id = fm.folder_id LEFT JOIN gmail_messages g"
                " ON g.account = f.account AND g.msgid = fm.gm_msgid"
                " WHERE fm.folder_id = ? AND fm.id > ? ORDER BY fm.id LIMIT 1000",
                (fid, after)).fetchall()
            if not page:
                return
            for fm_id, size, flags, idate, gid, labels, thread in page:
                yield MessageRef(key=str(fm_id), size=int(size), flags=tuple(json.loads(flags)),
                                 internaldate=_parse_iso(idate), gid=gid,
                                 labels=tuple(json.loads(labels)) if labels is not None else None,
                                 thread=thread)
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
                "SELECT fm.flags, fm.internaldate, m.raw, m.sha256, fm.gm_msgid, g.labels, g.thrid"
                " FROM folder_messages fm JOIN messages m ON m.id = fm.message_id"
                " JOIN folders f ON f.id = fm.folder_id LEFT JOIN gmail_messages g"
                " ON g.account = f.account AND g.msgid = fm.gm_msgid"
                " WHERE fm.id = ? AND fm.folder_id = ?", (int(key), fid)).fetchone()
            if row is None:
                continue
            flags, idate, raw, sha, gid, labels, thread = row
            msg = Message(key=key, raw=bytes(raw), flags=tuple(json.loads(flags)),
                          internaldate=_parse_iso(idate), gid=gid,
                          labels=tuple(json.loads(labels)) if labels is not None else None,
                          thread=thread)
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
