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

The index (:mod:`migrate.stores.mbox_index`) and the file I/O
(:mod:`migrate.stores.mbox_files`) live apart; this module keeps the one
thing neither can know alone, the order of writes, fsyncs and commits, so
that it can be read (and checked) in one place.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from migrate import clock
from migrate.errors import ArchiveError
from migrate.folders import as_relative, legacy_namespace, stored_name
from migrate.model import (
    FlagChange,
    Folder,
    FolderCheckpoint,
    FolderStatus,
    Message,
    MessageRef,
)
from migrate.safepath import META_DIR, assign_path, collision_key, resolve_inside
from migrate.stores import mbox_files, mbox_index
from migrate.stores.lock import ArchiveLock
from migrate.stores.mbox_index import INDEX_NAME, SCHEMA_VERSION, FolderRow

LOCK_NAME: Final = "lock"

__all__ = ["INDEX_NAME", "LOCK_NAME", "SCHEMA_VERSION", "MboxArchive"]


def _by_carrier(refs: Sequence[MessageRef], held: dict[str, tuple[int, int]]
                ) -> dict[tuple[int, tuple[int, ...]], list[tuple[MessageRef, int]]]:
    """Refs grouped by the folder whose file holds their bytes: {(folder, rows): [(ref, row)]}."""
    by_folder: dict[int, list[tuple[MessageRef, int]]] = {}
    for ref in refs:
        found = held.get(ref.gid or "")
        if found is not None:
            by_folder.setdefault(found[0], []).append((ref, found[1]))
    return {(fid, tuple(r for _, r in group)): group for fid, group in by_folder.items()}


class MboxArchive:
    """An mbox-tree archive at ``root``: a :class:`DestinationStore` and :class:`ArchiveReader`.

    The archive lock is held from construction to :meth:`close` (not when
    ``readonly``), so the truncation of uncommitted tails can never cut off
    another run's batch in flight.
    """

    #: A folder's own .mbox and index rows; nothing one folder holds depends on another's
    #: (:class:`~migrate.stores.base.IndependentFolders`).
    folders_independent = True

    def __init__(self, root: Path, account: str = "", lock_wait: float = 5.0, readonly: bool = False) -> None:
        self.root = Path(root)
        self.account = account
        self.readonly = readonly
        self._meta = self.root / META_DIR
        self._index = mbox_index.MboxIndex(self.root, account, readonly)
        self._mutex = threading.RLock()
        self._lock: ArchiveLock | None = None
        self._writer = mbox_files.AppendFile()
        self._taken_keys: set[str] | None = None
        try:
            if readonly:
                self._index.open_readonly()
            else:
                mbox_files.prepare_root(self.root, self._meta)
                self._lock = ArchiveLock(self._meta / LOCK_NAME, lock_wait)
                self._lock.acquire()
                self._index.open_writable()
            self._index.check_schema()
            self.relative_names = self._index.names_relative()
        except BaseException:
            self.close()
            raise
        self._legacy_ns: str | None = None

    def _name(self, folder: Folder) -> str:
        """The name the index keeps ``folder`` under (prefixed in a legacy archive)."""
        return stored_name(folder, self.relative_names)

    def _display(self, folder: Folder) -> Folder:
        """An index folder as readers see it: relative to the namespace, legacy or not."""
        if self.relative_names:
            return folder
        if self._legacy_ns is None:
            self._legacy_ns = legacy_namespace(f for f, _, _ in self._index.folder_summary())
        return as_relative(folder, self._legacy_ns)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One IMMEDIATE index transaction; every write to the index goes through here."""
        return self._index.tx()

    # ------------------------------------------------------------ folders

    def _ensure_folder(self, folder: Folder) -> FolderRow:
        row = self._index.folder_row(self._name(folder))
        if row is not None:
            if (row.delimiter, row.special_use, row.selectable) != (
                folder.delimiter,
                folder.special_use,
                folder.selectable,
            ):
                with self._tx() as conn:
                    mbox_index.update_folder_attrs(conn, row.id, folder)
            return row
        if self.readonly:
            raise ArchiveError(f"archive {self.root} was opened read-only; cannot add folders")
        if self._taken_keys is None:
            self._taken_keys = self._index.path_keys()
        taken = self._taken_keys
        path = assign_path(self._name(folder), taken)
        key = collision_key(path)
        with self._tx() as conn:
            mbox_index.insert_folder(conn, replace(folder, name=self._name(folder)), path, key)
        taken.add(key)
        row = self._index.folder_row(self._name(folder))
        assert row is not None
        return row

    def _mbox_path(self, row: FolderRow) -> Path:
        try:
            return resolve_inside(self.root, row.path)
        except ValueError as exc:
            raise ArchiveError(
                f"archive index {self._index.path} maps folder {row.name!r} to an unsafe "
                f"path ({exc}); restore the index from a backup"
            ) from None

    def _recover(self, row: FolderRow) -> None:
        """Cut off an uncommitted tail left by a run that died mid-batch."""
        path = self._mbox_path(row)
        size = mbox_files.checked_size(path, row.name, row.committed_size)
        if size > row.committed_size and not self.readonly:
            self._writer.close()
            mbox_files.truncate_tail(path, row.committed_size)

    def _open_writer(self, row: FolderRow) -> int:
        """A raw fd for the folder's mbox, kept open while batches go to one folder."""
        fd = self._writer.fd(row.id)
        if fd is not None:
            return fd
        self._writer.close()
        self._recover(row)
        return self._writer.open(row.id, self._mbox_path(row))

    # ------------------------------------------------------------ DestinationStore

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        """Say what is held of ``folder``; detach old UIDs on a UIDVALIDITY change.

        Detached messages keep their rows and bytes (uid set NULL) and are
        re-attached by sha256 when the new scan brings them again, so a new
        UIDVALIDITY costs a rescan but never a duplicate.
        """
        with self._mutex:
            if self.readonly:  # a dry run looks, never writes
                found = self._index.folder_row(self._name(folder))
                if found is None or (status.uidvalidity is not None
                                     and found.uidvalidity not in (None, status.uidvalidity)):
                    return FolderCheckpoint(uidvalidity=status.uidvalidity)
                return self._index.read_checkpoint(found.id)
            row = self._ensure_folder(folder)
            self._recover(row)
            new = status.uidvalidity
            if new is not None and row.uidvalidity is not None and new != row.uidvalidity:
                with self._tx() as conn:
                    mbox_index.detach_uids(conn, row.id, new)
                return FolderCheckpoint(uidvalidity=new)
            if new is not None and row.uidvalidity is None:
                with self._tx() as conn:
                    mbox_index.set_uidvalidity(conn, row.id, new)
            return self._index.read_checkpoint(row.id)

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        """Refs not held: by UID in the current UIDVALIDITY, by key when there is no UID."""
        with self._mutex:
            row = self._index.folder_row(self._name(folder))
            if row is None:
                return list(refs)
            uids = [r.uid for r in refs if r.uid is not None]
            keys = [r.key for r in refs if r.uid is None]
            held_uids, held_keys = self._index.held(row.id, uids, keys)
            return [
                r for r in refs if (r.uid not in held_uids if r.uid is not None else r.key not in held_keys)
            ]

    def archived_at(self, folder: Folder, keys: Sequence[str]) -> dict[str, datetime]:
        """{key: commit time} for uid-less (POP3) messages this folder holds."""
        with self._mutex:
            row = self._index.folder_row(self._name(folder))
            if row is None:
                return {}
            return self._index.archived_at(row.id, keys)

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
            held_uids, held_keys = self._index.held(
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
            detached = self._index.detached(row.id, [m.sha256 for m in fresh if m.uid is not None])
            now = clock.now().isoformat(timespec="seconds")
            reattach: list[tuple[int, str, str | None, str | None, int]] = []
            to_write: list[Message] = []
            for m in fresh:
                ids = detached.get(m.sha256) if m.uid is not None else None
                if ids:
                    reattach.append(mbox_index.reattach_row(m, ids.pop()))
                else:
                    to_write.append(m)
            try:
                inserts, end = self._append(row, to_write, now)
                with self._tx() as conn:
                    mbox_index.record_batch(conn, row.id, inserts, reattach, end)
                    if self._index.has_gmail:
                        mbox_index.record_gmail(conn, row.id, fresh)
            except BaseException:
                self._abandon_tail(self._name(folder))
                raise
            return len(inserts) + len(reattach)

    def _abandon_tail(self, name: str) -> None:
        """After a failed batch, cut off its uncommitted frames now, best effort.

        ``committed_size`` is read back from the index rather than taken from
        before the batch: if the failure (say, Ctrl-C) came just after COMMIT,
        the batch is committed and must stay. If anything fails here, the
        next open of the folder does the same cut.
        """
        self._writer.close()
        with contextlib.suppress(ArchiveError):
            row = self._index.folder_row(name)
            if row is not None:
                self._recover(row)

    def _append(
        self, row: FolderRow, batch: Sequence[Message], now: str
    ) -> tuple[list[tuple[object, ...]], int]:
        """Write and fsync the frames; return their index rows and the new file end."""
        if not batch:
            return [], row.committed_size
        fd = self._open_writer(row)
        out = mbox_files.FrameAppender(fd, row.committed_size, row.name)
        rows: list[tuple[object, ...]] = []
        for m in batch:
            at = out.add(m)
            rows.append(mbox_index.message_row(row.id, m, at.offset, at.length, at.eol, now))
        return rows, out.finish()

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        """Flags live only in the index, so the mbox bytes are never touched."""
        if not changes:
            return 0
        with self._mutex:
            row = self._index.folder_row(self._name(folder))
            if row is None:
                return 0
            changed = 0
            with self._tx() as conn:
                for c in changes:
                    flags = mbox_index.set_flags(conn, row.id, c)
                    labels = mbox_index.set_labels(conn, row.id, c) if self._index.has_gmail else 0
                    changed += 1 if flags or labels else 0
            return changed

    # ------------------------------------------------------------ Gmail (LinkingDestination)

    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        """Refs whose Gmail message this tree holds already, in some folder's mbox file."""
        with self._mutex:
            held = self._index.carriers([r.gid for r in refs if r.gid])
        return {r.key for r in refs if r.gid in held}

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        """A label folder's messages, copied from the frames this tree already holds.

        An mbox file holds every message of its folder (that is what other mbox tools
        read), so the bytes are written once more, but read from the archive itself,
        not downloaded again; then stored like any batch (:meth:`add_messages`)."""
        with self._mutex:
            held = self._index.carriers([r.gid for r in refs if r.gid])
            msgs: list[Message] = []
            for (fid, rid), group in _by_carrier(refs, held).items():
                source = self._index.folder_row_by_id(fid)
                if source is None:
                    continue
                by_id = {m.key: m for m in self._read_rows(source, [str(r) for r in rid])}
                for ref, row_id in group:
                    stored = by_id.get(str(row_id))
                    if stored is not None:
                        msgs.append(Message(key=ref.key, uid=ref.uid, raw=stored.raw,
                                            flags=ref.flags, internaldate=ref.internaldate
                                            or stored.internaldate, sha256=stored.sha256,
                                            gid=ref.gid, labels=ref.labels, thread=ref.thread))
            return self.add_messages(folder, msgs)

    def has_labels(self) -> bool:
        with self._mutex:
            return self._index.has_labels()

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        """Remember the STATUS this pass completed, for the next run's no-op check.

        A filtered pass (``complete=False``) may have left older messages
        behind, so it records no STATUS to skip on and marks the folder partial.
        """
        with self._mutex:
            row = self._ensure_folder(folder)
            with self._tx() as conn:
                mbox_index.finish_folder(conn, row.id, status, complete)

    # ------------------------------------------------------------ ArchiveReader

    def list_folders(self) -> list[Folder]:
        return [f for f, _, _ in self.folder_summary()]

    def accounts(self) -> list[str]:
        """The account (user@host) this tree holds (one per tree), if recorded."""
        with self._mutex:
            account = self._index.stored_account()
        return [account] if account else []

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        with self._mutex:
            rows = [(self._display(f), n, size) for f, n, size in self._index.folder_summary()]
        return sorted(rows, key=lambda row: row[0].name)

    def message_refs(self, folder: Folder) -> Iterator[MessageRef]:
        """Every message of a folder as a ref keyed by its index row id (stable), paged."""
        with self._mutex:
            row = self._index.folder_row(self._name(folder))
        if row is None:
            return
        after = -1
        while True:
            with self._mutex:
                page = self._index.ref_page(row.id, after)
            if not page:
                return
            with self._mutex:
                gmail = self._index.gmail_of(row.id, [int(r[0]) for r in page])
            for rid, size, flags, idate in page:
                gid, labels, thread = gmail.get(int(rid), (None, None, None))
                yield MessageRef(key=str(rid), size=int(size), flags=tuple(json.loads(flags)),
                                 internaldate=datetime.fromisoformat(idate) if idate else None,
                                 gid=gid, labels=labels, thread=thread)
            after = int(page[-1][0])

    def folder_of_key(self, key: str) -> Folder | None:
        """The folder holding index row ``key`` (a :meth:`message_refs` key), or None.

        Lets ``show ID`` find a message from the ID alone.
        """
        if not key.isdigit():
            return None
        with self._mutex:
            found = self._index.folder_of_message(int(key))
            return self._display(found) if found is not None else None

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]:
        """The messages for ``keys`` from :meth:`message_refs`, sha256-verified, one at a time."""
        with self._mutex:
            row = self._index.folder_row(self._name(folder))
        if row is None or not keys:
            return
        for part in mbox_index.chunks(list(keys)):
            with self._mutex:
                gmail = self._index.gmail_of(row.id, [int(k) for k in part])
            for msg in self._read_rows(row, part):
                meta = gmail.get(int(msg.key))
                yield msg if meta is None else replace(msg, gid=meta[0], labels=meta[1],
                                                       thread=meta[2])

    def _read_rows(self, row: FolderRow, keys: Sequence[str]) -> Iterator[Message]:
        """Rows ``keys`` of folder ``row``, read from its mbox file and sha256-verified."""
        path = self._mbox_path(row)
        fp = mbox_files.open_for_reading(path, row.name)
        try:
            for part in mbox_index.chunks(list(keys)):
                with self._mutex:
                    rows = self._index.read_rows(row.id, part)
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
            row = self._index.folder_row(self._name(folder))
        if row is None:
            return
        path = self._mbox_path(row)
        with self._mutex:
            if mbox_files.checked_size(path, row.name, row.committed_size) < 0:
                return
        fp = mbox_files.open_for_reading(path, row.name)
        try:
            after = -1
            while True:
                with self._mutex:
                    page = self._index.frame_page(row.id, after)
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
        raw = mbox_files.read_frame(fp, folder, path, offset, length, eol, size)
        msg = Message(
            key=key,
            raw=raw,
            flags=tuple(json.loads(flags)),
            internaldate=datetime.fromisoformat(idate) if idate else None,
            uid=uid,
        )
        if msg.sha256 != sha:
            raise mbox_files.frame_error(folder, path, offset, "is corrupt (sha256 mismatch)")
        return msg

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._mutex:
            self._writer.close()
            self._index.close()
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
