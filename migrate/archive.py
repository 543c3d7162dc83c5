"""Choosing and opening an archive from a path, as the CLI contract says.

``*.sqlite`` / ``*.db`` is a SQLite archive; ``maildir:DIR`` / ``eml:DIR``
name other formats; any other path is an mbox tree (a directory). ``--format``
overrides the guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from migrate.errors import ArchiveError, UsageError
from migrate.stores.base import ArchiveReader, DestinationStore

FORMATS = ("sqlite", "mbox-tree")


class Archive(DestinationStore, ArchiveReader, Protocol):
    """An archive is both a destination and a reader."""


def guess_format(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith((".sqlite", ".db", ".sqlite3")):
        return "sqlite"
    if lowered.startswith(("maildir:", "eml:")):
        raise UsageError(f"archive format of {path!r} is not supported yet; "
                         "use a .sqlite path or a directory")
    if lowered.endswith(".mbox"):
        raise UsageError(f"{path!r} is a single mbox file; backup writes a SQLite archive "
                         "(*.sqlite) or an mbox tree (a directory)")
    return "mbox-tree"


def open_archive(path: str, fmt: str | None = None, account: str = "",
                 readonly: bool = False, lock_wait: float = 5.0) -> Archive:
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    location = Path(path).expanduser()
    if readonly and not location.exists():
        raise ArchiveError(f"archive {location} does not exist; check the path")
    if fmt == "sqlite":
        from migrate.stores.sqlite_archive import SqliteArchive

        return SqliteArchive(location, account=account, lock_wait=lock_wait, readonly=readonly)
    from migrate.stores.mbox_archive import MboxArchive

    return MboxArchive(location, account=account, lock_wait=lock_wait, readonly=readonly)
