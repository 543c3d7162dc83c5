"""Where ``export`` writes: a directory of .eml files, one .mbox file, or a Maildir.

export = archive -> these, through the same engine as every other command
(:func:`migrate.engine.transfer`), so each of them is a small
:class:`~migrate.stores.base.DestinationStore`. None of them has UIDs: the
source refs are keyed by the archive's IDs (what ``search`` prints), and a
destination that can tell what it already holds (eml, Maildir: the ID is in
the file name) makes a re-run skip it, so an interrupted export resumes.

What each format can keep, since messages are never rewritten:

- ``eml:DIR``: bytes only; the file's mtime is the INTERNALDATE. One
  subdirectory per folder (sanitised with :mod:`migrate.safepath`).
- a single ``.mbox``: an ordinary mboxrd file that mutt, Thunderbird and
  Python's :mod:`mailbox` read, which also describes itself, so that
  ``restore FILE.mbox`` gives back every message byte for byte with its flags
  and INTERNALDATE, with nothing to pass (:func:`migrate.mboxrd.encode_export`):
  each ``From `` line's sender is a marker token that says "mboxrd, written by
  us" and how the line ends and a missing final newline were stored, its date
  is the INTERNALDATE, and three ``Status``/``X-Status``/``X-Keywords`` lines
  in front of the message carry the flags where mail clients look for them.
  The reader (:mod:`migrate.stores.foreign_mbox`) takes exactly those off.
  Why this and not something else: the frame is the only place a single file
  has (a sidecar index would be lost when the file is moved alone, which is
  what a single file is for); Content-Length (mboxcl2) would settle framing
  but carry neither flags nor line ends, and mboxo readers split at its
  unquoted ``From `` lines; flags in the ``From `` line would be invisible to
  mail clients. So the message gains three header lines in the file, which a
  restore removes again. Written whole to ``DEST.part`` and renamed when
  complete; an interrupted export starts that file over.
- ``maildir:DIR``: Maildir++ (INBOX at the root, ``.A.B`` for ``A/B``, names in
  modified UTF-7 as Dovecot keeps them); flags \\Seen \\Answered \\Flagged
  \\Deleted \\Draft in the ``:2,`` info suffix, INTERNALDATE as the mtime;
  keywords are not kept (Maildir needs a per-server keyword file for them).
  :class:`MaildirStore` also reads a Maildir back, so ``restore maildir:DIR``
  works through :class:`~migrate.stores.archive_source.ArchiveSource`.

A directory export records which archive it came from (``mailmigrate-export``
at its root) and refuses another archive's export: IDs of two archives would
clash in the file names, and a clash would silently skip a message.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from imapclient import imap_utf7

from migrate.errors import ArchiveError, UsageError
from migrate.formats import mboxrd
from migrate.labels import folder_label, role, to_takeout
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.safepath import assign_path, collision_key, short_hash
from migrate.stores.base import DestinationStore

MARKER: Final = "mailmigrate-export"
_SAFE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Maildir info letters for IMAP system flags, written in ASCII order as the spec asks.
_MAILDIR_FLAGS: Final = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S",
                         "\\Deleted": "T"}
_FLAG_OF_LETTER: Final = {v: k for k, v in _MAILDIR_FLAGS.items()}
# '.' separates Maildir++ levels; a '.' inside one level is kept as U+2024
# (one dot leader) and turned back into '.' when read.
DOT_STANDIN: Final = "\u2024"


def _file_key(key: str) -> str:
    """A key as a file name part: archive IDs are digits; anything else is hashed."""
    return key if _SAFE_KEY.match(key) else f"k{short_hash(key)}"


def _set_mtime(path: Path, when: datetime | None) -> None:
    if when is not None:
        with contextlib.suppress(OSError, OverflowError, ValueError):
            ts = when.timestamp()
            os.utime(path, (ts, ts))


def _write_file(path: Path, data: bytes, when: datetime | None) -> None:
    """Write via a temp name and rename: a killed export never leaves half a message."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fp:
        fp.write(data)
    _set_mtime(tmp, when)
    os.replace(tmp, path)


def _claim(root: Path, source_id: str, dry_run: bool) -> None:
    """Record (or check) which archive this directory is an export of."""
    marker = root / MARKER
    try:
        held = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        held = None
    except OSError as exc:
        raise ArchiveError(f"cannot read {marker}: {exc.strerror}; fix its permissions") from None
    if held is not None and held != source_id:
        raise UsageError(f"{root} holds an export of {held}, not of {source_id}; "
                         "export each archive into a directory of its own")
    if held is None and not dry_run:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(source_id + "\n", encoding="utf-8")


class ExportDestination(DestinationStore, Protocol):
    """A destination that is told when the export completed (see :meth:`finish`)."""

    def finish(self) -> None: ...


class _NoUidDestination:
    """What every export destination shares: no UIDs, no flag updates, no STATUS to keep."""

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        return FolderCheckpoint()

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        return 0

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        return None

    def finish(self) -> None:
        """The export completed: make it visible (only the single .mbox needs this)."""

    def close(self) -> None:
        return None


# -- eml:DIR ---------------------------------------------------------------------------
class EmlDirDestination(_NoUidDestination):
    """``DIR/<folder path>/<ID>.eml``: one file per message, the raw bytes unchanged."""

    def __init__(self, root: Path, source_id: str, dry_run: bool = False) -> None:
        self.root = Path(root)
        self.dry_run = dry_run
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory; give a directory for eml:")
        _claim(self.root, source_id, dry_run)
        self._dirs: dict[str, Path] = {}
        # The marker file's name is taken: a folder of that name gets a suffixed directory.
        self._taken: set[str] = {collision_key(MARKER + ".mbox")}

    def folder_dir(self, folder: Folder) -> Path:
        """The folder's directory: each level sanitised, collisions kept apart, never outside."""
        found = self._dirs.get(folder.name)
        if found is not None:
            return found
        rel = assign_path(folder.name, self._taken)
        self._taken.add(collision_key(rel))
        parts = rel[: -len(".mbox")].split("/")
        # A folder level must not look like a message file of its parent.
        parts = [p + "_" if p.casefold().endswith(".eml") else p for p in parts]
        path = self.root.joinpath(*parts)
        self._dirs[folder.name] = path
        return path

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        where = self.folder_dir(folder)
        return [r for r in refs if not (where / f"{_file_key(r.key)}.eml").exists()]

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        where = self.folder_dir(folder)
        where.mkdir(parents=True, exist_ok=True)
        for msg in messages:
            _write_file(where / f"{_file_key(msg.key)}.eml", msg.raw, msg.internaldate)
        return len(messages)


# -- a single .mbox file ---------------------------------------------------------------------
class MboxFileDestination(_NoUidDestination):
    """Every exported message in one self-describing mboxrd file, folders one after another."""

    def __init__(self, path: Path, dry_run: bool = False) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.dry_run = dry_run
        self._fp: int | None = None
        self._written: set[str] = set()  # gids of the Gmail messages in the file
        if self.path.exists():
            raise UsageError(f"{self.path} already exists; an mbox file is written whole, so "
                             "remove it or choose another name")
        if not dry_run:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fp = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as exc:
                raise ArchiveError(f"cannot write {self.part}: {exc.strerror}; choose a "
                                   "writable location") from None

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        return list(refs)

    # A Gmail message is written once, with all its labels in X-Gmail-Labels as Takeout
    # writes it; its other label folders are that line, not more copies.
    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        return {r.key for r in refs if r.gid is not None and r.gid in self._written}

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        return 0  # nothing more is written: the message is in the file once

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        if self._fp is None:
            raise ArchiveError(f"{self.part} is not open for writing; run the export again")
        fresh = [m for m in messages if m.gid is None or m.gid not in self._written]
        self._written.update(m.gid for m in fresh if m.gid is not None)
        data = b"".join(mboxrd.encode_export(
            m.raw, m.flags, m.internaldate,
            to_takeout(_with_folder(folder, m.labels), "\\Seen" in m.flags)
            if m.labels is not None else None).data for m in fresh)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fp, view):]
        return len(fresh)

    def finish(self) -> None:
        if self._fp is None:
            return
        os.fsync(self._fp)
        os.close(self._fp)
        self._fp = None
        os.replace(self.part, self.path)

    def close(self) -> None:
        """Without :meth:`finish`, the partial file goes: a half export is no export."""
        if self._fp is not None:
            os.close(self._fp)
            self._fp = None
            with contextlib.suppress(OSError):
                self.part.unlink()


def _with_folder(folder: Folder, labels: Sequence[str] | None) -> list[str]:
    """A message's labels and the label of the folder it is exported from."""
    out = list(labels or ())
    own = folder_label(folder) if role(folder) in ("label", "outside") else None
    if own is not None and own not in out:
        out.append(own)
    return out


# -- maildir:DIR --------------------------------------------------------------------------
def maildir_dirname(name: str) -> str:
    """Maildir++ directory of folder ``name`` ('' for INBOX): ``.A.B``, modified UTF-7.

    Encoding makes every byte printable ASCII without '/', and the leading '.'
    plus a non-empty name can never be '.' or '..': a hostile folder name
    cannot leave the Maildir.
    """
    if name == "INBOX":
        return ""
    levels = [(level or "_").replace(".", DOT_STANDIN) for level in name.split("/")]
    return "." + ".".join(imap_utf7.encode(level).decode("ascii") for level in levels)


def maildir_folder_name(dirname: str) -> str:
    """Inverse of :func:`maildir_dirname` for a ``.A.B`` directory name."""
    levels = dirname[1:].split(".")
    return "/".join(imap_utf7.decode(level.encode("ascii")).replace(DOT_STANDIN, ".")
                    for level in levels)


def maildir_info(flags: Sequence[str]) -> str:
    """The ``:2,`` suffix letters for IMAP flags (keywords have no letter here)."""
    return "".join(sorted({_MAILDIR_FLAGS[f] for f in flags if f in _MAILDIR_FLAGS}))


class MaildirStore(_NoUidDestination):
    """A Maildir++ tree: written by export, read by restore/ls/verify (KeyedArchiveReader).

    A message's key is its file's unique name (what precedes ``,S=`` and
    ``:2,``); ours are ``<ID>.mailmigrate``, so a re-run of an export skips
    what is there.
    """

    SUBDIRS: Final = ("cur", "new", "tmp")

    def __init__(self, root: Path, source_id: str = "", readonly: bool = False,
                 dry_run: bool = False) -> None:
        self.root = Path(root)
        self.readonly = readonly
        self.dry_run = dry_run
        self._listing: dict[str, dict[str, Path]] = {}
        if readonly:
            if not (self.root / "cur").is_dir():
                raise ArchiveError(f"{self.root} is not a Maildir (no cur/ directory); "
                                   "check the path")
            return
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory; give a directory "
                             "for maildir:")
        _claim(self.root, source_id, dry_run)
        if not dry_run:
            self._make(self.root, sub=False)

    # -- layout ------------------------------------------------------------------------
    def folder_path(self, name: str) -> Path:
        dirname = maildir_dirname(name)
        return self.root / dirname if dirname else self.root

    def _make(self, path: Path, sub: bool) -> None:
        for d in self.SUBDIRS:
            (path / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        if sub:
            (path / "maildirfolder").touch(exist_ok=True)

    def _files(self, folder: Folder) -> dict[str, Path]:
        """{unique name: path} of a folder's messages in new/ and cur/, listed once."""
        found = self._listing.get(folder.name)
        if found is None:
            found = {}
            base = self.folder_path(folder.name)
            for d in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for entry in os.scandir(base / d):
                        if entry.is_file() and not entry.name.startswith("."):
                            # The key is the unique part, without ":2,info" or ",S=size".
                            found[entry.name.split(":", 1)[0].split(",", 1)[0]] = Path(entry.path)
            self._listing[folder.name] = found
        return found

    # -- destination side -----------------------------------------------------------------
    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        have = self._files(folder)
        return [r for r in refs if f"{_file_key(r.key)}.mailmigrate" not in have]

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        base = self.folder_path(folder.name)
        self._make(base, sub=base != self.root)
        have = self._files(folder)
        for msg in messages:
            unique = f"{_file_key(msg.key)}.mailmigrate"
            name = f"{unique},S={msg.size}:2,{maildir_info(msg.flags)}"
            tmp = base / "tmp" / name
            with open(tmp, "wb") as fp:
                fp.write(msg.raw)
            _set_mtime(tmp, msg.internaldate)
            os.replace(tmp, base / "cur" / name)
            have[unique] = base / "cur" / name
        return len(messages)

    # -- reader side --------------------------------------------------------------------------
    def list_folders(self) -> list[Folder]:
        return [f for f, _, _ in self.folder_summary()]

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        names = ["INBOX"]
        for entry in os.scandir(self.root):
            if (entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir()
                    and (Path(entry.path) / "cur").is_dir()):
                with contextlib.suppress(ValueError, UnicodeError):
                    names.append(maildir_folder_name(entry.name))
        out: list[tuple[Folder, int, int]] = []
        for name in sorted(set(names)):
            folder = Folder(name=name, server_name=name, delimiter="/")
            files = self._files(folder)
            out.append((folder, len(files), sum(p.stat().st_size for p in files.values())))
        return out

    def message_refs(self, folder: Folder) -> Iterator[MessageRef]:
        for key, path in sorted(self._files(folder).items()):
            st = path.stat()
            yield MessageRef(key=key, size=st.st_size, flags=self._flags(path),
                             internaldate=datetime.fromtimestamp(st.st_mtime, UTC))

    @staticmethod
    def _flags(path: Path) -> tuple[str, ...]:
        _, sep, info = path.name.partition(":2,")
        if not sep:
            return ()
        return tuple(sorted(_FLAG_OF_LETTER[c] for c in set(info) if c in _FLAG_OF_LETTER))

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]:
        files = self._files(folder)
        for key in keys:
            path = files.get(key)
            if path is None:
                continue
            try:
                raw = path.read_bytes()
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # moved or deleted by a mail client meanwhile
            yield Message(key=key, raw=raw, flags=self._flags(path),
                          internaldate=datetime.fromtimestamp(mtime, UTC))

    def iter_messages(self, folder: Folder) -> Iterator[Message]:
        for key in sorted(self._files(folder)):
            yield from self.read_messages(folder, [key])


__all__ = ["MARKER", "EmlDirDestination", "ExportDestination", "MaildirStore", "MboxFileDestination",
           "maildir_dirname", "maildir_folder_name", "maildir_info"]
