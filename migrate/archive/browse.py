"""Finding and reading messages in an archive: the logic behind ``search``, ``show`` and
the filters of ``export``.

IDs: a message is named by its placement in a folder, the key an archive's
``message_refs`` hands the engine (``folder_messages.id`` in a SQLite
archive, the index row id in an mbox tree). So the ID ``search`` prints is
what ``show`` takes and what ``export --id`` keeps, and a message stored in
two folders has two IDs, one per folder, as a mail client shows it twice.

Search runs on the SQLite archive only: its ``messages_fts`` index answers a
word query without reading a message. An mbox tree has no such index, and a
scan of every message would make one search cost as much as a restore; the
command says so (exit 2) and how to get a SQLite archive. Column filters and
dates are plain SQL over the documented schema. Dates (``--since`` and
``--before``) are compared on INTERNALDATE's calendar day in its own offset,
as IMAP SEARCH SINCE/BEFORE and backup's ``--since`` do.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

from migrate.errors import UsageError
from migrate.folders import select_folders
from migrate.formats.reading import Reading
from migrate.model import Folder, FolderCheckpoint, Message, MessageRef
from migrate.stores.archive_source import ArchiveSource
from migrate.stores.base import ArchiveReader, KeyedArchiveReader
from migrate.stores.sqlite_archive import SqliteArchive


@dataclass(frozen=True)
class SearchQuery:
    """A search: words for the full-text index plus column and folder filters (all ANDed)."""

    text: str = ""
    from_addr: str | None = None
    to_addr: str | None = None
    subject: str | None = None
    since: date | None = None
    before: date | None = None
    folders: Sequence[str] = ()
    exclude: Sequence[str] = ()
    raw_fts: bool = False

    def needs_index(self) -> bool:
        """True when only a SQLite archive can answer (words or header columns)."""
        return bool(self.text.strip() or self.from_addr or self.to_addr or self.subject)


@dataclass(frozen=True)
class Hit:
    """One search result: a placement of a message in a folder."""

    id: int
    folder: str
    date: str | None
    internaldate: str | None
    from_addr: str | None
    to_addrs: str | None
    subject: str | None
    msgid: str | None
    size: int
    flags: list[str] = field(default_factory=list)
    attachments: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fts_expression(text: str, raw: bool = False) -> str:
    """The FTS5 MATCH expression for what the user typed.

    By default every word must occur (each quoted, so '-', ':' or '.' in a
    word are no FTS5 syntax errors); a trailing '*' keeps prefix search.
    ``raw`` passes FTS5 syntax through (OR, NEAR, ``subject:word``).
    """
    if raw:
        return text
    terms = []
    for word in text.split():
        prefix = word.endswith("*") and len(word) > 1
        core = word[:-1] if prefix else word
        terms.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


def require_sqlite(archive: ArchiveReader, path: str) -> SqliteArchive:
    if isinstance(archive, SqliteArchive):
        return archive
    raise UsageError(
        f"searching {path!r} needs a SQLite archive (it has the full-text index; an mbox tree "
        "or Maildir has none): back up into a .sqlite path, e.g. `mailmigrate backup SOURCE "
        "mail.sqlite`; --folder, --since, --before and --id work on any archive with export")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(archive: SqliteArchive, query: SearchQuery, limit: int | None = None) -> Iterator[Hit]:
    """Placements matching ``query``: best full-text match first, else newest first.

    Rows are streamed from SQLite, so an unlimited search (export) holds one
    row at a time, never a message body.
    """
    where: list[str] = []
    params: list[Any] = []
    join = ""
    order = "COALESCE(fm.internaldate, m.date) DESC, fm.id"
    expr = fts_expression(query.text, query.raw_fts)
    if expr:
        join = (" JOIN (SELECT rowid, rank FROM messages_fts WHERE messages_fts MATCH ?) s"
                " ON s.rowid = m.id")
        params.append(expr)
        order = "s.rank, fm.id"
    for column, value in (("m.from_addr", query.from_addr), ("m.to_addrs", query.to_addr),
                          ("m.subject", query.subject)):
        if value:
            where.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(_like(value))
    day = "substr(COALESCE(fm.internaldate, m.date), 1, 10)"
    if query.since is not None:
        where.append(f"{day} >= ?")
        params.append(query.since.isoformat())
    if query.before is not None:
        where.append(f"{day} < ?")
        params.append(query.before.isoformat())
    if query.folders or query.exclude:
        chosen = select_folders(archive.list_folders(), query.folders, query.exclude)
        if not chosen:
            return
        where.append(f"f.name IN ({','.join('?' * len(chosen))})")
        params.extend(archive.row_name(f) for f in chosen)
    sql = ("SELECT fm.id, f.name, m.date, fm.internaldate, m.from_addr, m.to_addrs, m.subject,"
           " m.msgid, m.size, fm.flags, m.attachments FROM folder_messages fm"
           " JOIN folders f ON f.id = fm.folder_id JOIN messages m ON m.id = fm.message_id"
           f"{join}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    try:
        cursor = archive.conn.execute(sql, params)
        for row in cursor:
            yield Hit(id=int(row[0]), folder=str(row[1]), date=row[2], internaldate=row[3],
                      from_addr=row[4], to_addrs=row[5], subject=row[6], msgid=row[7],
                      size=int(row[8]), flags=list(json.loads(row[9] or "[]")),
                      attachments=row[10])
    except sqlite3.OperationalError as exc:
        if "fts5" in str(exc) or "syntax" in str(exc):
            raise UsageError(f"bad search query {query.text!r} ({exc}); without --fts every word "
                             "is matched as typed, with --fts the query is FTS5 syntax") from None
        raise


def matching_ids(archive: SqliteArchive, query: SearchQuery) -> set[int]:
    """IDs of every placement matching ``query`` (export's filter): ints, no bodies."""
    return {hit.id for hit in search(archive, query)}


class FilteredArchiveSource(ArchiveSource):
    """An archive as export's source, keeping only the chosen IDs and dates.

    Folder globs and ``--since`` are the engine's own options; this adds what
    only export has: a set of IDs (from a search or ``--id``) and ``--before``.
    """

    def __init__(self, archive: KeyedArchiveReader, identity: str,
                 keys: set[str] | None = None, before: date | None = None) -> None:
        super().__init__(archive, identity)
        self.keys = keys
        self.before = before

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        for ref in super().list_new(folder, checkpoint, since):
            if self.keys is not None and ref.key not in self.keys:
                continue
            if (self.before is not None and ref.internaldate is not None
                    and ref.internaldate.date() >= self.before):
                continue
            yield ref


# -- show ---------------------------------------------------------------------------------
@dataclass
class Shown:
    """What ``show`` prints about one message."""

    id: int
    folder: str
    flags: list[str]
    internaldate: str | None
    size: int
    headers: dict[str, str]
    body: str
    attachments: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class IdArchive(Protocol):
    """An archive whose IDs name a message without its folder (SQLite, mbox tree)."""

    def folder_of_key(self, key: str) -> Folder | None: ...

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]: ...


def parse_id(ident: str | int) -> int:
    """A message ID as typed (``search`` prints numbers), or a UsageError that says so."""
    text = str(ident).strip()
    if not text.isdigit():
        raise UsageError(f"{ident!r} is not a message ID; IDs are the numbers in the first "
                         "column of `mailmigrate search`")
    return int(text)


def find_message(archive: object, ident: str | int) -> tuple[Folder, Message]:
    """The message with archive ID ``ident``, or a NotFound that says where IDs come from."""
    if not isinstance(archive, IdArchive):
        raise UsageError("show reads a SQLite archive or an mbox tree; this archive kind has "
                         "no message IDs")
    key = str(parse_id(ident))
    folder = archive.folder_of_key(key)
    if folder is not None:
        for msg in archive.read_messages(folder, [key]):
            return folder, msg
    raise UsageError(f"no message with ID {ident!r} in this archive; IDs are the first column "
                     "of `mailmigrate search`")


def describe(ident: int, folder: Folder, msg: Message) -> Shown:
    """Headers, the text body and the attachment list; never fails on a malformed message.

    Decoded as the index decodes them (:mod:`migrate.formats.reading`), so what
    ``search`` matched is what ``show`` prints.
    """
    reading = Reading(msg.raw)
    return Shown(id=ident, folder=folder.name, flags=list(msg.flags),
                 internaldate=msg.internaldate.isoformat() if msg.internaldate else None,
                 size=msg.size, headers=reading.headers(), body=reading.text(),
                 attachments=[{"number": a.number, "filename": a.filename,
                               "content_type": a.content_type, "size": a.size}
                              for a in reading.attachments()])


def render_shown(shown: Shown) -> str:
    lines = [f"ID: {shown.id}", f"Folder: {shown.folder}"]
    lines += [f"{k}: {v}" for k, v in shown.headers.items()]
    lines.append(f"Flags: {' '.join(shown.flags) or '-'}")
    if shown.internaldate:
        lines.append(f"Received: {shown.internaldate}")
    lines.append(f"Size: {shown.size}")
    for a in shown.attachments:
        lines.append(f"Attachment: {a['filename'] or '(no name)'} ({a['content_type']}, "
                     f"{a['size']} bytes)")
    lines.append("")
    lines.append(shown.body.rstrip("\n"))
    return "\n".join(lines)


__all__ = ["Hit", "SearchQuery", "Shown", "describe", "find_message", "fts_expression",
           "matching_ids", "parse_id", "render_shown", "require_sqlite", "search"]
