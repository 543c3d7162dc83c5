"""An archive as a reader browses it: folders with counts, pages of rows, search, one message.

The viewer (:mod:`migrate.web`) shows SQLite archives and mbox trees alike
through this one interface, so it needs no SQL and no mbox framing of its
own. Both kinds open read-only. A SQLite archive answers from its index (the
``mail`` view and ``messages_fts``: the same queries as ``search``); an mbox
tree's index holds no headers, so a page of rows reads the headers of just
the messages on that page, and it has no search (as the ``search`` command).
IDs are the archive's own (see :mod:`migrate.archive.browse`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from migrate.archive.browse import SearchQuery, find_message, search
from migrate.archive.open import guess_format, open_archive
from migrate.errors import UsageError
from migrate.formats.summary import summarize
from migrate.model import Folder, Message
from migrate.stores.mbox_archive import MboxArchive
from migrate.stores.sqlite_archive import SqliteArchive


@dataclass(frozen=True)
class FolderEntry:
    name: str
    messages: int
    bytes: int
    special_use: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    """One message in a folder, as a list shows it."""

    id: int
    folder: str
    date: str | None
    received: str | None
    from_addr: str | None
    to_addrs: str | None
    subject: str | None
    size: int
    flags: list[str] = field(default_factory=list)
    attachments: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Catalog(Protocol):
    path: str
    kind: str
    searchable: bool

    def folders(self) -> list[FolderEntry]: ...

    def page(self, folder: str, offset: int, limit: int) -> tuple[list[Row], int]: ...

    def search(self, query: SearchQuery, offset: int, limit: int) -> tuple[list[Row], bool]: ...

    def message(self, ident: int) -> tuple[Folder, Message]: ...

    def close(self) -> None: ...


def _entries(summary: list[tuple[Folder, int, int]]) -> list[FolderEntry]:
    return [FolderEntry(f.name, count, size, f.special_use) for f, count, size in summary]


class SqliteCatalog:
    kind = "sqlite"
    searchable = True

    def __init__(self, path: str, archive: SqliteArchive) -> None:
        self.path = path
        self.archive = archive

    def folders(self) -> list[FolderEntry]:
        return _entries(self.archive.folder_summary())

    def page(self, folder: str, offset: int, limit: int) -> tuple[list[Row], int]:
        conn = self.archive.conn
        total = int(conn.execute("SELECT COUNT(*) FROM mail WHERE folder = ?",
                                 (folder,)).fetchone()[0])
        rows = conn.execute(
            'SELECT m.id, m.folder, m.date, m.received, m."from", m."to", m.subject, m.size,'
            " fm.flags, m.attachments FROM mail m JOIN folder_messages fm ON fm.id = m.id"
            " WHERE m.folder = ? ORDER BY COALESCE(m.received, m.date) DESC, m.id DESC"
            " LIMIT ? OFFSET ?", (folder, limit, offset)).fetchall()
        return [Row(id=int(r[0]), folder=r[1], date=r[2], received=r[3], from_addr=r[4],
                    to_addrs=r[5], subject=r[6], size=int(r[7]), flags=json.loads(r[8] or "[]"),
                    attachments=r[9]) for r in rows], total

    def search(self, query: SearchQuery, offset: int, limit: int) -> tuple[list[Row], bool]:
        hits = list(search(self.archive, query, offset + limit + 1))[offset:]
        rows = [Row(id=h.id, folder=h.folder, date=h.date, received=h.internaldate,
                    from_addr=h.from_addr, to_addrs=h.to_addrs, subject=h.subject, size=h.size,
                    flags=h.flags, attachments=h.attachments) for h in hits[:limit]]
        return rows, len(hits) > limit

    def message(self, ident: int) -> tuple[Folder, Message]:
        return find_message(self.archive, ident)

    def close(self) -> None:
        self.archive.close()


class MboxTreeCatalog:
    kind = "mbox-tree"
    searchable = False

    def __init__(self, path: str, archive: MboxArchive) -> None:
        self.path = path
        self.archive = archive

    def folders(self) -> list[FolderEntry]:
        return _entries(self.archive.folder_summary())

    def page(self, folder: str, offset: int, limit: int) -> tuple[list[Row], int]:
        # Newest first, as the SQLite list: the index hands refs oldest first.
        refs = list(self.archive.message_refs(Folder(folder)))
        refs.sort(key=lambda r: (r.internaldate.timestamp() if r.internaldate else 0.0,
                                 int(r.key)), reverse=True)
        chosen = refs[offset:offset + limit]
        by_key = {m.key: m for m in self.archive.read_messages(Folder(folder),
                                                               [r.key for r in chosen])}
        rows = []
        for ref in chosen:
            msg = by_key.get(ref.key)
            if msg is None:
                continue
            info = summarize(msg.raw)
            rows.append(Row(id=int(ref.key), folder=folder, date=info.date,
                            received=ref.internaldate.isoformat() if ref.internaldate else None,
                            from_addr=info.from_addr, to_addrs=info.to_addrs,
                            subject=info.subject, size=ref.size, flags=list(ref.flags),
                            attachments=info.attachments))
        return rows, len(refs)

    def search(self, query: SearchQuery, offset: int, limit: int) -> tuple[list[Row], bool]:
        raise UsageError("searching needs a SQLite archive (it has the full-text index; an mbox "
                         "tree has none): back up into a .sqlite path to search")

    def message(self, ident: int) -> tuple[Folder, Message]:
        return find_message(self.archive, ident)

    def close(self) -> None:
        self.archive.close()


def open_catalog(path: str, fmt: str | None = None) -> Catalog:
    """A read-only catalog of the SQLite archive or mbox tree at ``path``."""
    kind = fmt or guess_format(path)
    if kind not in ("sqlite", "mbox-tree"):
        raise UsageError(f"{path!r}: the viewer reads SQLite archives and mbox trees")
    store = open_archive(str(Path(path).expanduser()), kind, readonly=True)
    if isinstance(store, SqliteArchive):
        return SqliteCatalog(path, store)
    if isinstance(store, MboxArchive):
        return MboxTreeCatalog(path, store)
    store.close()
    raise UsageError(f"{path!r}: the viewer reads SQLite archives and mbox trees")


__all__ = ["Catalog", "FolderEntry", "MboxTreeCatalog", "Row", "SqliteCatalog", "open_catalog"]
