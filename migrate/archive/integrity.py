"""``mailmigrate verify ARCHIVE``: an archive's integrity, like ``borg check``.

What is checked, per format:

- SQLite archive: SQLite's own ``quick_check``; every stored message against
  its sha256 and size (one row in memory at a time); folder rows that point
  at no message or no folder; the full-text index against the messages
  (every message searchable, no stale entries) and FTS5's own structure
  check; messages no folder refers
  to (orphans: kept by design when a UIDVALIDITY change detached them, so
  reported, never deleted).
- mbox tree: the index database's ``quick_check``; every index row against
  its mbox file: the frame lies inside the file, decodes as mboxrd and
  hashes to the recorded sha256.

``--repair`` fixes only what needs no guessing, and says what it did: a
damaged or missing message is dropped from the index (its bytes cannot be
trusted) and its folder is marked partial, so the next ``backup`` lists the
folder from its first UID and fetches exactly those messages again; the
full-text index is rebuilt from the stored messages; an mbox file's
commit mark is moved back to its last good frame, so the next backup cuts
off the broken tail. A corrupt database file is not repaired: that needs a
copy from a backup (or ``sqlite3 .recover``), and we say so.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import ArchiveError
from migrate.formats import mboxrd
from migrate.formats.summary import summarize
from migrate.safepath import resolve_inside
from migrate.stores import sqlite_schema
from migrate.stores.sqlite_archive import SqliteArchive


@dataclass
class IntegrityReport:
    archive: str
    messages_checked: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fully_repaired: bool = False

    @property
    def ok(self) -> bool:
        """Nothing wrong, or everything wrong was repaired."""
        return not self.problems or self.fully_repaired

    def as_dict(self) -> dict[str, Any]:
        return {"archive": self.archive, "messages_checked": self.messages_checked,
                "ok": self.ok, "problems": self.problems, "repaired": self.repaired,
                "notes": self.notes}


def _connect(path: Path, repair: bool) -> sqlite3.Connection:
    try:
        if repair:
            return sqlite3.connect(path, isolation_level=None, timeout=30)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise ArchiveError(f"cannot open {path}: {exc}") from None


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        raise ArchiveError(
            f"{path} is corrupt at the SQLite level ({'; '.join(rows[:3])}); nothing can be "
            "repaired in place: restore it from a backup, or salvage with `sqlite3 "
            f"{path} .recover`")


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Rows of a query, in pages by rowid, so a big archive never sits in memory."""
    after = -1
    while True:
        page = conn.execute(sql, (*args, after)).fetchall()
        if not page:
            return
        yield from page
        after = page[-1][0]


def _fts_damage(path: Path, report: IntegrityReport) -> str | None:
    """FTS5's own check of its index structure (rank 0: not against the content table,
    which does not hold the body text the index was built from).

    FTS5 runs it as an INSERT, so it needs a writable connection, inside a
    transaction that is rolled back: nothing is written.
    """
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        report.notes.append("full-text index structure not checked (the archive is read-only)")
        return None
    conn = _connect(path, repair=True)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 0)")
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    return None


def check_sqlite(path: Path, repair: bool = False) -> IntegrityReport:
    report = IntegrityReport(str(path))
    # An archive of an older schema is upgraded first, as by every command that opens it.
    SqliteArchive(path, readonly=True).close()
    conn = _connect(path, repair)
    try:
        _quick_check(conn, path)
        bad: list[tuple[int, str]] = []
        for mid, sha, size in _rows(
                conn, "SELECT id, sha256, size FROM messages WHERE id > ? ORDER BY id LIMIT 200"):
            raw = bytes(conn.execute("SELECT raw FROM messages WHERE id = ?", (mid,)).fetchone()[0])
            report.messages_checked += 1
            length = len(raw)
            if hashlib.sha256(raw).hexdigest() != sha or length != size:
                bad.append((mid, f"message {mid} does not match its sha256 {sha[:12]}… "
                                 f"(stored {length} bytes, recorded {size})"))
        report.problems += [text for _, text in bad]
        dangling = conn.execute(
            "SELECT fm.id, fm.folder_id FROM folder_messages fm"
            " LEFT JOIN messages m ON m.id = fm.message_id LEFT JOIN folders f ON f.id = fm.folder_id"
            " WHERE m.id IS NULL OR f.id IS NULL").fetchall()
        if dangling:
            report.problems.append(f"{len(dangling)} folder entries point at no message or folder")
        orphans = conn.execute(
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS"
            " (SELECT 1 FROM folder_messages fm WHERE fm.message_id = m.id)").fetchone()[0]
        if orphans:
            report.notes.append(f"{orphans} messages belong to no folder (detached by a UIDVALIDITY "
                                "change); kept")
        # The index's own list of what it holds: one docsize row per indexed message (a
        # scan of an external-content table would list the content table instead).
        fts = {r[0] for r in conn.execute("SELECT id FROM messages_fts_docsize")}
        ids = {r[0] for r in conn.execute("SELECT id FROM messages")}
        unsearchable, stale = len(ids - fts), len(fts - ids)
        if unsearchable or stale:
            report.problems.append(f"full-text index out of step: {unsearchable} messages not "
                                   f"searchable, {stale} stale entries")
        damage = _fts_damage(path, report)
        if damage is not None:
            report.problems.append(f"full-text index is damaged ({damage})")
        if repair and report.problems:
            _repair_sqlite(conn, report, [mid for mid, _ in bad], dangling,
                           rebuild_fts=bool(unsearchable or stale or bad or damage))
    finally:
        conn.close()
    return report


def _repair_sqlite(conn: sqlite3.Connection, report: IntegrityReport, bad: list[int],
                   dangling: list[tuple[int, int]], rebuild_fts: bool) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        folders: set[int] = {fid for _, fid in dangling}
        for mid in bad:
            folders |= {r[0] for r in conn.execute(
                "SELECT folder_id FROM folder_messages WHERE message_id = ?", (mid,))}
            conn.execute("DELETE FROM folder_messages WHERE message_id = ?", (mid,))
            conn.execute("DELETE FROM messages WHERE id = ?", (mid,))
        if bad:
            report.repaired.append(f"dropped {len(bad)} damaged messages; the next backup "
                                   "fetches them again")
        if dangling:
            conn.executemany("DELETE FROM folder_messages WHERE id = ?", [(d[0],) for d in dangling])
            report.repaired.append(f"dropped {len(dangling)} folder entries that pointed at nothing")
        if folders:
            # The next backup lists these folders from UID 1 (partial pass), so
            # exactly what was dropped is fetched again.
            conn.executemany("UPDATE folders SET partial = 1, uidnext = NULL, highestmodseq = NULL"
                             " WHERE id = ?", [(f,) for f in folders])
        if rebuild_fts:
            # The index holds body text no table holds, so FTS5's 'rebuild' cannot
            # make it; 'delete-all' empties it and every message is summarised again.
            conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('delete-all')")
            count = 0
            for mid, raw in _rows(conn, "SELECT id, raw FROM messages WHERE id > ? ORDER BY id"
                                        " LIMIT 100"):
                info = summarize(bytes(raw))
                conn.execute("UPDATE messages SET msgid = ?, subject = ?, from_addr = ?,"
                             " to_addrs = ?, date = ?, attachments = ? WHERE id = ?",
                             (info.msgid, info.subject, info.from_addr, info.to_addrs, info.date,
                              info.attachments, mid))
                conn.execute(sqlite_schema.INSERT_FTS, sqlite_schema.fts_row(mid, info))
                count += 1
            report.repaired.append(f"rebuilt the full-text index ({count} messages)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    report.fully_repaired = True


def check_mbox_tree(root: Path, repair: bool = False) -> IntegrityReport:
    report = IntegrityReport(str(root))
    index = root / ".mailmigrate" / "index.sqlite"
    if not index.exists():
        raise ArchiveError(f"{root} has no index ({index}); it is not an mbox-tree archive")
    conn = _connect(index, repair)
    try:
        _quick_check(conn, index)
        fixes: dict[int, tuple[list[int], int]] = {}  # folder id -> (bad rows, last good end)
        for fid, name, relpath, committed in conn.execute(
                "SELECT id, name, path, committed_size FROM folders ORDER BY name").fetchall():
            try:
                path = resolve_inside(root, relpath)
            except ValueError as exc:
                report.problems.append(f"folder {name!r}: unsafe path in the index ({exc})")
                continue
            size = path.stat().st_size if path.exists() else -1
            bad: list[int] = []
            good_end = 0
            with open(path, "rb") if size >= 0 else _Nothing() as fp:
                for rid, sha, msize, offset, length, eol in _rows(
                        conn, "SELECT id, sha256, size, offset, length, eol FROM messages"
                              " WHERE folder_id = ? AND id > ? ORDER BY id LIMIT 200", (fid,)):
                    report.messages_checked += 1
                    if offset + length > size:
                        bad.append(rid)
                        continue
                    fp.seek(offset)
                    try:
                        raw = mboxrd.decode(fp.read(length), eol, msize)
                    except mboxrd.FrameError:
                        bad.append(rid)
                        continue
                    if hashlib.sha256(raw).hexdigest() != sha:
                        bad.append(rid)
                        continue
                    good_end = max(good_end, offset + length)
            if size < 0 and committed == 0 and not bad:
                continue  # a folder that never held mail has no file yet
            if size < 0 and committed > 0:
                report.problems.append(f"folder {name!r}: mbox file {path} is missing "
                                       f"({len(bad)} messages)")
            elif size < committed:
                report.problems.append(f"folder {name!r}: mbox file {path} is {size} bytes, the "
                                       f"index records {committed}; {len(bad)} messages lost")
            elif bad:
                report.problems.append(f"folder {name!r}: {len(bad)} damaged messages in {path}")
            if bad or size < committed:
                fixes[fid] = (bad, good_end if size < committed else committed)
        if repair and fixes:
            conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = 0
                for fid, (bad, end) in fixes.items():
                    conn.executemany("DELETE FROM messages WHERE id = ?", [(r,) for r in bad])
                    dropped += len(bad)
                    conn.execute("UPDATE folders SET committed_size = ?, partial = 1, uidnext = NULL,"
                                 " highestmodseq = NULL WHERE id = ?", (end, fid))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            report.repaired.append(f"dropped {dropped} lost or damaged messages from the index of "
                                   f"{len(fixes)} folders; the next backup cuts off broken tails "
                                   "and fetches those messages again")
            report.fully_repaired = True
    finally:
        conn.close()
    return report


class _Nothing:
    """Stands in for a missing mbox file: every frame lies beyond its end."""

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def seek(self, offset: int) -> int:
        return 0

    def read(self, n: int) -> bytes:
        return b""


__all__ = ["IntegrityReport", "check_mbox_tree", "check_sqlite"]
