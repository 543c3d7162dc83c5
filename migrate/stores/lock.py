"""One lock per archive (or job), held for the whole run.

``fcntl.flock`` is released by the kernel when the holder dies, even by
kill -9, so a stale lock can never block the next run; the pid written into
the file is only there to name the holder in the error message.

A clean release removes the file (no lock file stays after a run), while still
holding the lock; so a run that was waiting on the old file checks, once it
holds a lock, that the path still names the file it locked, and starts over on
the new one otherwise (the usual pattern for flock files that are unlinked).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from migrate.errors import ArchiveError, ArchiveLockedError


class ArchiveLock:
    """An exclusive, non-blocking-with-patience lock on ``path``."""

    def __init__(self, path: Path, wait_seconds: float = 5.0) -> None:
        self.path = path
        self.wait_seconds = wait_seconds
        self._fd: int | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._still_ours(fd):
                    break
                os.close(fd)  # the holder removed it as it finished: lock the new file
                continue
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise ArchiveLockedError(
                        f"archive is locked by another mailmigrate run{holder} ({self.path}); "
                        "wait for it to finish, then run again"
                    ) from None
                os.close(fd)
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ArchiveError(
                f"cannot create lock file {self.path}: {exc.strerror}; "
                "check that the archive location is writable"
            ) from exc

    def _still_ours(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if self._still_ours(self._fd):
                    self.path.unlink()  # before unlocking: a waiter then sees it is gone
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ArchiveLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 32).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
