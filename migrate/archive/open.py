"""Choosing and opening an archive from a path, as the CLI contract says.

``*.sqlite`` / ``*.db`` is a SQLite archive; ``maildir:DIR`` / ``eml:DIR``
name other formats; any other path is an mbox tree (a directory). ``--format``
overrides the guess.

Where each kind is accepted: SQLite and mbox trees everywhere; ``maildir:DIR``
is read (restore, ls, verify) and written by export; ``eml:DIR`` and a single
``*.mbox`` file are written by export (:func:`open_export_destination`), and a
``*.mbox`` file is read by restore (``migrate.stores.foreign_mbox``). backup
and drain keep to SQLite and mbox trees, whose checkpoints hold UIDs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from migrate.errors import ArchiveError, UsageError
from migrate.stores.base import ArchiveReader, DestinationStore

if TYPE_CHECKING:
    from migrate.stores.export_stores import ExportDestination

FORMATS = ("sqlite", "mbox-tree", "maildir")
EXPORT_FORMATS = ("eml", "mbox", "maildir")


class Archive(DestinationStore, ArchiveReader, Protocol):
    """An archive is both a destination and a reader."""


def guess_format(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith((".sqlite", ".db", ".sqlite3")):
        return "sqlite"
    if lowered.startswith("maildir:"):
        return "maildir"
    if lowered.startswith("eml:"):
        raise UsageError(f"{path!r} is a directory of .eml files, written by `mailmigrate "
                         "export`; give a .sqlite path, a directory or maildir:DIR here")
    if lowered.endswith(".mbox"):
        raise UsageError(f"{path!r} is a single mbox file; backup writes a SQLite archive "
                         "(*.sqlite) or an mbox tree (a directory)")
    return "mbox-tree"


def open_archive(path: str, fmt: str | None = None, account: str = "",
                 readonly: bool = False, lock_wait: float = 5.0) -> Archive:
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not strip_prefix(path).strip():
        raise UsageError(f"{path!r} names no directory; write maildir:DIR")
    location = Path(strip_prefix(path)).expanduser()
    if readonly and not location.exists():
        raise ArchiveError(f"archive {location} does not exist; check the path")
    if fmt == "maildir":
        if not readonly:
            raise UsageError(f"{path!r}: a Maildir is written by `mailmigrate export` only; "
                             "back up into a .sqlite path or a directory (mbox tree)")
        from migrate.stores.export_stores import MaildirStore

        return MaildirStore(location, readonly=True)
    if fmt == "sqlite":
        from migrate.stores.sqlite_archive import SqliteArchive

        return SqliteArchive(location, account=account, lock_wait=lock_wait, readonly=readonly)
    from migrate.stores.mbox_archive import MboxArchive

    return MboxArchive(location, account=account, lock_wait=lock_wait, readonly=readonly)


def strip_prefix(path: str) -> str:
    """``maildir:DIR`` / ``eml:DIR`` -> ``DIR``; other paths unchanged."""
    for prefix in ("maildir:", "eml:"):
        if path.lower().startswith(prefix):
            return path[len(prefix):]
    return path


def export_format(path: str, fmt: str | None = None) -> str:
    """What ``export`` writes to ``path``: eml, mbox (one file) or maildir."""
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"unknown export --to-format {fmt!r}; choose one of "
                             f"{', '.join(EXPORT_FORMATS)}")
        return fmt
    lowered = path.lower()
    if lowered.startswith("eml:"):
        return "eml"
    if lowered.startswith("maildir:"):
        return "maildir"
    if lowered.endswith(".mbox"):
        return "mbox"
    raise UsageError(f"export destination {path!r} names no format; use eml:DIR (.eml files), "
                     "maildir:DIR (a Maildir) or FILE.mbox (one mbox file)")


def open_export_destination(path: str, source_id: str, fmt: str | None = None,
                            dry_run: bool = False) -> ExportDestination:
    """The destination store for ``export ARCHIVE DEST``."""
    from migrate.stores import export_stores

    kind = export_format(path, fmt)
    if not strip_prefix(path).strip():
        raise UsageError(f"export destination {path!r} names no directory; "
                         "write eml:DIR or maildir:DIR")
    location = Path(strip_prefix(path)).expanduser()
    if kind == "eml":
        return export_stores.EmlDirDestination(location, source_id, dry_run=dry_run)
    if kind == "maildir":
        return export_stores.MaildirStore(location, source_id, dry_run=dry_run)
    return export_stores.MboxFileDestination(location, dry_run=dry_run)
