"""imaplib's socket I/O with a timeout that measures progress, not duration.

``socket.sendall`` with a timeout bounds the *whole* send (since Python 3.5),
and a read that waits for the answer to a big APPEND sees nothing while the
kernel is still pushing the literal out at the uplink's pace. Either way a
slow link that never stops moving is taken for a dead one: the connection is
replaced, and the old one's bytes keep arriving (issue 16). So:

- writes go out in chunks, each ``send`` with its own short wait;
- reads wait in short slices too;
- between slices, a byte counts as moved when a chunk was taken, data came
  in, or the kernel's queue of sent-but-unacknowledged bytes shrank (Linux
  ``SIOCOUTQ``: the peer is taking our bytes, however slowly);
- only ``timeout`` seconds without any of these is a stall (``TimeoutError``,
  which the store maps to a lost connection, as before);
- bytes the kernel has handed on may still be moving where we cannot see
  them (a proxy, VPN or load balancer that acknowledges early and forwards at
  the link's pace): :meth:`Progress.expect` lets the writer say "this APPEND
  needs N seconds at the rate measured so far", and the silence is counted
  from then on.

:func:`abort` closes a socket with SO_LINGER 0 (RST, and the kernel drops
what it had not sent), and :func:`discard_unsent` keeps that setting while an
APPEND is on the wire, so a process killed mid-APPEND does not leave its
kernel delivering the rest of the literal after it died.
"""

from __future__ import annotations

import contextlib
import fcntl
import imaplib
import io
import socket
import struct
import time
from typing import Any

SIOCOUTQ = 0x5411  # Linux (== TIOCOUTQ): bytes in the send queue not yet acknowledged
SEND_CHUNK = 64 * 1024


def unacked(sock: socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer (None where the OS cannot say)."""
    try:
        buf = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    return int(struct.unpack("i", buf)[0])


class Progress:
    """When a byte last moved on one connection, in either direction."""

    def __init__(self, sock: socket.socket, timeout: float,
                 clock: Any = time.monotonic) -> None:
        self.sock = sock
        self.timeout = timeout
        self.slice = max(0.05, min(1.0, timeout / 5))
        self._clock = clock
        self.last = clock()
        self.busy_until = 0.0  # the link is expected to be moving our bytes until then
        self._queued = unacked(sock)

    def moved(self) -> None:
        self.last = self._clock()
        self._queued = unacked(self.sock)

    def expect(self, seconds: float) -> None:
        """What was just handed on needs ``seconds`` (the measured rate): no stall before."""
        self.busy_until = max(self.busy_until, self._clock() + seconds)

    def waited(self, what: str) -> None:
        """A slice passed with nothing read or taken: raise TimeoutError if nothing moved at
        all for ``timeout`` seconds (a shrinking send queue counts as movement)."""
        queued = unacked(self.sock)
        if queued is not None and self._queued is not None and queued < self._queued:
            self.moved()
            return
        self._queued = queued
        if self._clock() - max(self.last, self.busy_until) >= self.timeout:
            raise TimeoutError(f"no byte moved for {self.timeout:g} s while {what}")


class ProgressReader(io.RawIOBase):
    """The raw reader under imaplib's buffered ``file``: recv in slices, fail on a stall."""

    def __init__(self, sock: socket.socket, progress: Progress) -> None:
        super().__init__()
        self.sock = sock
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                n = self.sock.recv_into(buffer)
            except TimeoutError:
                self.progress.waited("waiting for the server")
                continue
            except InterruptedError:
                continue
            if n:
                self.progress.moved()
            return n


def send_all(sock: socket.socket, data: bytes, progress: Progress) -> None:
    """``sendall`` where only a stall (no progress for the timeout) is an error.

    On a timed-out ``send`` the same chunk is offered again: a plain socket
    took none of it, and an SSL socket must be given the same buffer to
    finish a record it had begun (OpenSSL's rule for a retried SSL_write).
    """
    view = memoryview(data)
    while view:
        chunk = view[:SEND_CHUNK]
        try:
            n = sock.send(chunk)
        except TimeoutError:
            progress.waited("sending")
            continue
        except InterruptedError:
            continue
        progress.moved()
        view = view[n:]


def install(imap: imaplib.IMAP4, timeout: float) -> Progress | None:
    """Put progress-measuring I/O under ``imap`` (after connecting, and again after STARTTLS).

    ``send`` looks up ``imap.sock`` on every call: STARTTLS swaps the socket
    and sends CAPABILITY on the new one before we are called again.
    Where imaplib owns its read buffer (Python 3.14 makes ``file`` read-only),
    the plain per-call socket timeout stays in place.
    """
    sock: socket.socket = imap.sock
    progress = Progress(sock, timeout)
    try:
        imap.file = io.BufferedReader(ProgressReader(sock, progress), 64 * 1024)
    except AttributeError:
        return None
    sock.settimeout(progress.slice)
    imap.mm_progress = progress  # type: ignore[attr-defined]

    def send(data: bytes) -> None:
        now: socket.socket = imap.sock
        current = progress_of(imap)
        if current is None or current.sock is not now:
            current = Progress(now, timeout)  # STARTTLS swapped the socket under us
        try:
            send_all(now, data, current)
        except OSError as exc:
            raise imap.abort(f"socket error: {exc}") from None

    imap.send = send  # type: ignore[method-assign,assignment]
    return progress


def progress_of(imap: imaplib.IMAP4) -> Progress | None:
    """The connection's :class:`Progress`, where :func:`install` put one."""
    found = getattr(imap, "mm_progress", None)
    return found if isinstance(found, Progress) else None


def discard_unsent(sock: socket.socket | None, on: bool) -> None:
    """SO_LINGER 0 while ``on``: a close (or the death of this process) then resets the
    connection and drops unsent bytes instead of delivering them after we are gone."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0) if on else struct.pack("ii", 0, 0))


def abort(sock: socket.socket | None) -> None:
    """Reset the connection now: nothing we queued reaches the server after this."""
    if sock is None:
        return
    discard_unsent(sock, True)
    with contextlib.suppress(OSError):
        sock.close()


__all__ = ["Progress", "ProgressReader", "abort", "discard_unsent", "install", "progress_of",
           "send_all", "unacked"]
