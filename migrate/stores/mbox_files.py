"""The mbox files of an mbox-tree archive, as bytes on disk.

It exists apart from the index because file durability is its own craft:
directory entries must be fsync'ed or a new file can vanish, a short
``writev`` is legal, a torn tail must be cut and the cut made durable, and a
frame read back must be checked before it is trusted. None of this knows
SQL; the store tells it which offsets are committed and when to write.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

from migrate.errors import ArchiveError
from migrate.formats import mboxrd
from migrate.model import Message

# One writev hands the kernel up to this many buffers (POSIX IOV_MAX is >= 16,
# Linux and macOS allow 1024) or about this many bytes, whichever comes first.
_IOV_MAX: Final = max(16, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))
_WRITE_CHUNK: Final = 8 << 20
_FIX: Final = "restore the mbox file from a backup, or run backup again into a new archive"


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable; without it a created file can vanish."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_root(root: Path, meta: Path) -> None:
    """Create the archive directory and its metadata directory durably, and check both are writable."""
    try:
        if root.exists() and not root.is_dir():
            raise ArchiveError(
                f"archive path {root} exists and is not a directory; "
                "give a directory path for an mbox-tree archive"
            )
        for d in (root, meta):
            if not d.exists():
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                fsync_dir(d.parent)
        for d in (root, meta):
            if not os.access(d, os.W_OK | os.X_OK):
                # access() fails with EROFS on a read-only mount: say which it is.
                err = errno.EROFS if os.statvfs(d).f_flag & os.ST_RDONLY else errno.EACCES
                raise OSError(err, os.strerror(err))
    except OSError as exc:
        raise ArchiveError(
            f"cannot write to archive directory {root}: {exc.strerror or exc}; "
            "choose a writable location or fix its permissions"
        ) from exc


def _unreadable(path: Path, folder: str, exc: OSError) -> ArchiveError:
    return ArchiveError(
        f"cannot read mbox file {path} of folder {folder!r}: {exc.strerror}; fix its permissions"
    )


def checked_size(path: Path, folder: str, committed: int) -> int:
    """The mbox file's size, after making sure it holds all ``committed`` bytes (-1: no file, none due)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if committed == 0:
            return -1
        raise ArchiveError(
            f"mbox file {path} of folder {folder!r} is missing but the index says it "
            f"holds {committed} bytes; restore the file from a backup"
        ) from None
    except OSError as exc:
        raise _unreadable(path, folder, exc) from exc
    if size < committed:
        raise ArchiveError(
            f"mbox file {path} of folder {folder!r} is shorter ({size} bytes) than the "
            f"index records ({committed}); restore the file from a backup"
        )
    return size


def truncate_tail(path: Path, committed: int) -> None:
    """Cut the file back to ``committed`` bytes, durably."""
    try:
        with open(path, "r+b") as fp:
            fp.truncate(committed)
            os.fsync(fp.fileno())
    except OSError as exc:
        raise ArchiveError(
            f"cannot truncate the unfinished tail of {path}: {exc.strerror}; "
            "fix its permissions, then run again"
        ) from exc


def _make_parents(path: Path) -> bool:
    made = False
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700)
        fsync_dir(d.parent)
        made = True
    return made


class AppendFile:
    """The one mbox file open for appending: a raw fd kept while batches go to one folder."""

    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (folder id, fd)

    def fd(self, folder_id: int) -> int | None:
        """The open fd if it is the one of ``folder_id``."""
        if self._current is not None and self._current[0] == folder_id:
            return self._current[1]
        return None

    def open(self, folder_id: int, path: Path) -> int:
        """Open (creating it and its directories durably) the mbox file of ``folder_id``."""
        try:
            created = _make_parents(path)
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not existed or created:
                fsync_dir(path.parent)
        except OSError as exc:
            raise ArchiveError(
                f"cannot open mbox file {path} for writing: {exc.strerror}; "
                "choose a writable location or fix its permissions"
            ) from exc
        self._current = (folder_id, fd)
        return fd

    def close(self) -> None:
        if self._current is not None:
            with contextlib.suppress(OSError):
                os.close(self._current[1])
            self._current = None


class Placed(NamedTuple):
    """Where a message's frame went, and the line-end marker to decode it."""

    offset: int
    length: int
    eol: str


class FrameAppender:
    """Frames written from ``offset`` on, a few writev calls per batch, then one fsync.

    Nothing is durable before :meth:`finish` returns; :attr:`end` is the file
    end the batch will have.
    """

    def __init__(self, fd: int, offset: int, folder: str) -> None:
        self._fd = fd
        self._folder = folder
        self.end = offset
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        with self._errors():
            os.lseek(fd, offset, os.SEEK_SET)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ArchiveError(
                f"cannot append to mbox file of folder {self._folder!r}: {exc.strerror}; "
                "free disk space or fix permissions, then run again (nothing was lost)"
            ) from exc

    def add(self, m: Message) -> Placed:
        """Frame ``m`` as mboxrd and queue it, writing when enough is queued."""
        frame = mboxrd.encode(m.raw, date=m.internaldate)
        self._pending.extend(frame.parts)
        self._pending_bytes += frame.length
        if len(self._pending) + 3 > _IOV_MAX or self._pending_bytes >= _WRITE_CHUNK:
            with self._errors():
                _write_all(self._fd, self._pending)
            self._pending, self._pending_bytes = [], 0
        placed = Placed(self.end, frame.length, frame.eol)
        self.end += frame.length
        return placed

    def finish(self) -> int:
        """Write what is queued and fsync; return the new file end."""
        with self._errors():
            _write_all(self._fd, self._pending)
            os.fsync(self._fd)
        return self.end


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


def open_for_reading(path: Path, folder: str) -> BinaryIO:
    try:
        return open(path, "rb")  # the caller closes it, after its last yield
    except OSError as exc:
        raise _unreadable(path, folder, exc) from exc


def _where(folder: str, path: Path, offset: int) -> str:
    return f"message at offset {offset} of folder {folder!r} ({path})"


def frame_error(folder: str, path: Path, offset: int, problem: str) -> ArchiveError:
    """What is wrong with the frame at ``offset``, and how to get the message back."""
    return ArchiveError(f"{_where(folder, path, offset)} {problem}; {_FIX}")


def read_frame(fp: BinaryIO, folder: str, path: Path, offset: int, length: int, eol: str, size: int) -> bytes:
    """The raw message whose frame the index places at ``offset``; the caller checks its sha256."""
    try:
        fp.seek(offset)
        frame = fp.read(length)
    except OSError as exc:
        raise ArchiveError(f"cannot read {_where(folder, path, offset)}: {exc.strerror}; {_FIX}") from exc
    if len(frame) != length:
        raise frame_error(folder, path, offset, "is cut short")
    try:
        return mboxrd.decode(frame, eol, size)
    except mboxrd.FrameError as exc:
        raise frame_error(folder, path, offset, f"is damaged ({exc})") from None
