"""Byte-exact mboxrd framing.

The stdlib writes mboxo, where a body line ``>From `` and a quoted ``From ``
look the same after writing, so the original cannot be recovered. mboxrd
quotes every line matching ``^>*From `` with one more '>', which is
reversible; that, plus what the index remembers (the exact raw size and the
line-end marker), lets :func:`decode` return the very bytes given to
:func:`encode`.

Line ends: mbox is an LF format and other tools expect LF, so a message whose
line ends are all CRLF (what IMAP servers send) is stored with LF and marked
``crlf`` to be restored. A message that is already pure LF is stored as is
(``lf``). Anything else (mixed ends, bare CR) is stored unchanged (``raw``):
converting it could not be undone.

A frame is ``From <sender> <asctime>\\n`` + quoted body + a newline if the
body does not end with one + the blank separator line. The framing newline
is told apart from a real one by the raw size, so a message without a final
newline survives too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, Final

EOL_CRLF: Final = "crlf"
EOL_LF: Final = "lf"
EOL_RAW: Final = "raw"
EOL_MARKERS: Final = (EOL_CRLF, EOL_LF, EOL_RAW)

DEFAULT_SENDER: Final = "MAILER-DAEMON"

_QUOTE_RE: Final = re.compile(rb"^(>*From )", re.MULTILINE)
_UNQUOTE_RE: Final = re.compile(rb"^>(>*From )", re.MULTILINE)
# Only the header block is searched for a sender, and only its start: a
# pathological message must not make framing slow.
_HEADER_SCAN_LIMIT: Final = 16384
# Both patterns are linear in the input: no nested or lazy quantifiers that
# a hostile header could make backtrack.
_SENDER_RE: Final = re.compile(rb"^(?:Return-Path|From):[ \t]*([^\r\n]*)", re.MULTILINE | re.IGNORECASE)
_TOKEN_SPLIT_RE: Final = re.compile(rb"[\s<>,;:()\"\[\]\\]+")
_MAX_SENDER: Final = 320
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


class FrameError(ValueError):
    """A stored frame does not decode to a message of the recorded size."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded message: the bytes to append and the marker the index keeps.

    Kept as parts (envelope line, quoted body, separator) so a writer can
    hand them to ``os.writev`` without first copying the body into one
    buffer; ``data`` joins them for callers that want one ``bytes``.
    """

    parts: tuple[bytes, bytes, bytes]
    eol: str
    length: int

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def split_eol(raw: bytes) -> tuple[bytes, str]:
    """The bytes to store for ``raw`` and the line-end marker to restore them.

    Written for speed on the common cases (this runs over every byte
    archived): a memchr for CR settles pure-LF messages, and for CRLF ones
    the LF version is computed once and reused for the checks. After
    CRLF -> LF, a leftover CR is a bare one, and more LFs than CRLFs removed
    means a bare LF; either way the message is kept as it came.
    """
    if b"\r" not in raw:
        return raw, EOL_LF
    body = raw.replace(b"\r\n", b"\n")
    if b"\r" not in body and body.count(b"\n") == len(raw) - len(body):
        return body, EOL_CRLF
    return raw, EOL_RAW


def classify_eol(raw: bytes) -> str:
    """Which line-end treatment keeps ``raw`` recoverable (see :func:`split_eol`)."""
    return split_eol(raw)[1]


def quote(body: bytes) -> bytes:
    """mboxrd quoting: one more '>' on every line matching ``^>*From ``."""
    if b"From " not in body:
        return body
    return _QUOTE_RE.sub(rb">\1", body)


def unquote(body: bytes) -> bytes:
    """Exact inverse of :func:`quote`."""
    if b"From " not in body:
        return body
    return _UNQUOTE_RE.sub(rb"\1", body)


def asctime(when: datetime | None) -> str:
    """``Mon Jan  2 15:04:05 2006`` in UTC, independent of the locale."""
    dt = datetime.now(UTC) if when is None else when
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return (
        f"{_DAYS[dt.weekday()]} {_MONTHS[dt.month - 1]} {dt.day:2d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {dt.year:04d}"
    )


def envelope_sender(raw: bytes) -> str:
    """A plausible envelope sender for the ``From `` line, or MAILER-DAEMON.

    Only informational (other mbox readers show it); it must never contain
    whitespace, which would break the separator line, so anything odd falls
    back to the default.
    """
    limit = min(len(raw), _HEADER_SCAN_LIMIT)
    ends = [x for x in (raw.find(b"\n\n", 0, limit), raw.find(b"\r\n\r\n", 0, limit)) if x >= 0]
    match = _SENDER_RE.search(raw, 0, min(ends, default=limit))
    if match is None:
        return DEFAULT_SENDER
    for token in _TOKEN_SPLIT_RE.split(match.group(1)[:998]):
        if b"@" in token and 2 < len(token) <= _MAX_SENDER:
            if token.isascii() and all(0x21 <= c <= 0x7E for c in token):
                return token.decode("ascii")
            break
    return DEFAULT_SENDER


def _clean_sender(sender: str | None) -> str:
    if not sender or any(ch.isspace() or not ch.isprintable() for ch in sender):
        return DEFAULT_SENDER
    return sender


def encode(raw: bytes, sender: str | None = None, date: datetime | None = None) -> Frame:
    """Frame ``raw`` for appending to an mboxrd file.

    ``sender`` defaults to one found in the headers; ``date`` (the
    INTERNALDATE) to now. Neither affects what :func:`decode` returns.
    """
    body, eol = split_eol(raw)
    body = quote(body)
    who = _clean_sender(sender if sender is not None else envelope_sender(raw))
    head = f"From {who} {asctime(date)}\n".encode("ascii")
    tail = b"\n" if body.endswith(b"\n") else b"\n\n"
    return Frame((head, body, tail), eol, len(head) + len(body) + len(tail))


def decode(frame: bytes, eol: str, size: int) -> bytes:
    """The original message from a frame written by :func:`encode`.

    ``size`` is the raw message size from the index: it decides whether the
    body's last newline was the message's own or added by the framing.
    """
    if eol not in EOL_MARKERS:
        raise FrameError(f"unknown line-end marker {eol!r}")
    if not frame.startswith(b"From ") or not frame.endswith(b"\n"):
        raise FrameError("frame does not start with a From line or lacks its separator")
    start = frame.find(b"\n") + 1
    body = unquote(frame[start:-1])
    if eol == EOL_CRLF:
        body = body.replace(b"\n", b"\r\n")
        added = 2
    else:
        added = 1
    if len(body) == size:
        return body
    if len(body) - added == size and body.endswith(b"\n"):
        return body[:-added]
    raise FrameError(f"frame holds {len(body)} bytes, index says {size}")


def iter_frame_spans(fp: BinaryIO, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(offset, length) of each frame in an mboxrd file we wrote, by scanning.

    The index makes this unnecessary in normal use; it exists so that an
    archive can be checked or re-indexed without trusting the index. A frame
    starts at a ``From `` line at the start of the region or after a blank
    line; our quoting guarantees no body line starts that way.
    """
    fp.seek(start)
    pos = start
    frame_start: int | None = None
    prev_blank = True
    while end is None or pos < end:
        line = fp.readline()
        if not line:
            break
        if prev_blank and line.startswith(b"From "):
            if frame_start is not None:
                yield frame_start, pos - frame_start
            frame_start = pos
        prev_blank = line == b"\n"
        pos += len(line)
    if frame_start is not None:
        yield frame_start, pos - frame_start
