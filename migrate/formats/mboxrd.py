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
from collections.abc import Iterable, Iterator
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


# -- self-describing export frames (``mailmigrate export FILE.mbox``) ------------------------
#
# A single exported .mbox has no index beside it, so what the index records for
# the mbox tree (line ends, a missing final newline) and what plain mbox cannot
# carry at all (flags) go into the frame itself, in a form other mbox readers
# take in their stride:
#
# * the envelope sender of the ``From `` line is a marker token,
#   ``mailmigrate-export[+crlf|+raw][+nonl][+nodate]@localhost``: the frame was
#   written by us, so its body is mboxrd-quoted; ``+crlf``: the message's line
#   ends were all CRLF and are stored as LF; ``+raw``: mixed line ends, stored
#   as they are; ``+nonl``: the message has no final newline and the framing
#   added one; ``+nodate``: the message had no INTERNALDATE (the date shown is
#   the export's). An address with '+' tags and a valid asctime date is what
#   mutt, Thunderbird and Python's ``mailbox`` expect of a ``From `` line;
# * exactly three header lines are put in front of the message's own first
#   line: ``Status: RO|O``, ``X-Status: [A][F][T][D]``, ``X-Keywords: kw ...``,
#   the convention of mutt, pine, Dovecot's mbox and ``mailbox.mboxMessage``
#   (R \\Seen, O not \\Recent, A \\Answered, F \\Flagged, T \\Draft,
#   D \\Deleted). A keyword is written as it is unless it holds a byte outside
#   '!'..'~' or a '%' (never in an IMAP atom): then as %XX of its UTF-8.
#
# A message with Gmail labels (an archive of a Gmail account) gets a fourth line,
# ``X-Gmail-Labels: ...`` as Google Takeout writes it (one ASCII line, a label with a
# comma in double quotes, other scripts as RFC 2047 encoded words), so that the file
# reads like a Takeout export elsewhere and restores into labels here.
#
# The reader takes the three lines off only if they are exactly what
# :func:`status_lines` writes for the flags they spell, so a message that had
# its own Status header keeps it, and a message whose three lines a mail client
# rewrote is read as it stands (see :mod:`migrate.stores.foreign_mbox`).

EXPORT_LOCALPART: Final = "mailmigrate-export"
EXPORT_DOMAIN: Final = "localhost"
_EXPORT_FROM_RE: Final = re.compile(
    rb"From mailmigrate-export(\+crlf|\+raw)?(\+nonl)?(\+nodate)?(\+labels)?@localhost "
    rb"((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] "
    rb"[0-9]{4})\n\Z"
)
_STATUS_RE: Final = re.compile(rb"Status: R?O\nX-Status:(?: [AFTD]+)?\nX-Keywords:(?: [!-~]+)*\n")
_X_STATUS: Final = (("\\Answered", "A"), ("\\Flagged", "F"), ("\\Draft", "T"), ("\\Deleted", "D"))
_LETTER_FLAG: Final = {letter: flag for flag, letter in _X_STATUS}
_KEYWORD_SAFE: Final = frozenset(range(0x21, 0x7F)) - {ord("%")}
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_LABELS_RE: Final = re.compile(rb"X-Gmail-Labels: ([ -~]*)\n")


@dataclass(frozen=True, slots=True)
class ExportMark:
    """What the marker token of one exported frame says about the message."""

    eol: str = EOL_LF
    newline_added: bool = False
    dated: bool = True
    #: a fourth line, Takeout's ``X-Gmail-Labels``, was added: only then is one taken off
    #: (a message may begin with an ``X-Gmail-Labels`` header of its own)
    labelled: bool = False

    @property
    def sender(self) -> str:
        """The envelope sender token that spells this mark."""
        tags = "".join(f"+{t}" for t, on in ((self.eol, self.eol != EOL_LF),
                                              ("nonl", self.newline_added),
                                              ("nodate", not self.dated),
                                              ("labels", self.labelled)) if on)
        return f"{EXPORT_LOCALPART}{tags}@{EXPORT_DOMAIN}"


def parse_export_mark(from_line: bytes) -> ExportMark | None:
    """The mark of a ``From `` line exactly as :func:`encode_export` writes it, else None."""
    match = _EXPORT_FROM_RE.match(from_line)
    if match is None:
        return None
    eol = match.group(1)
    return ExportMark(eol=eol[1:].decode("ascii") if eol else EOL_LF,
                      newline_added=match.group(2) is not None, dated=match.group(3) is None,
                      labelled=match.group(4) is not None)


def _keyword_text(flag: str) -> str:
    data = flag.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if b in _KEYWORD_SAFE else f"%{b:02X}" for b in data)


def _keyword_value(text: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == ord("%"):
            out.append(int(text[i + 1:i + 3], 16))  # ValueError when malformed: not ours
            i += 3
        else:
            out.append(text[i])
            i += 1
    return out.decode("utf-8", "surrogatepass")


def status_lines(flags: Iterable[str]) -> bytes:
    """The three header lines that carry ``flags`` (exact-case system flags; the rest keywords).

    Deterministic (keywords sorted, duplicates dropped), so the reader can
    check that lines it found are ours by writing them again. An empty flag
    cannot be written and is left out.
    """
    wanted = {f for f in flags if f}
    letters = "".join(letter for flag, letter in _X_STATUS if flag in wanted)
    keywords = sorted(wanted - {"\\Seen", *_LETTER_FLAG.values()})
    status = "RO" if "\\Seen" in wanted else "O"
    x_status = f"X-Status: {letters}" if letters else "X-Status:"
    x_keywords = "".join(f" {_keyword_text(k)}" for k in keywords)
    return f"Status: {status}\n{x_status}\nX-Keywords:{x_keywords}\n".encode("ascii")


def parse_status_lines(data: bytes) -> tuple[int, tuple[str, ...]] | None:
    """(length, flags) of the three lines at the start of ``data``, if they are ours exactly."""
    match = _STATUS_RE.match(data)
    if match is None:
        return None
    status, x_status, x_keywords = match.group(0).split(b"\n")[:3]
    flags = {"\\Seen"} if status == b"Status: RO" else set()
    flags.update(_LETTER_FLAG[chr(c)] for c in x_status[len(b"X-Status:"):].strip())
    try:
        flags.update(_keyword_value(k) for k in x_keywords[len(b"X-Keywords:"):].split(b" ") if k)
    except (ValueError, UnicodeDecodeError):
        return None
    if status_lines(flags) != match.group(0):
        return None  # not canonical (order, duplicates, escapes): not written by us
    return match.end(), tuple(sorted(flags))


def labels_line(value: str) -> bytes:
    """The fourth line of an exported frame: Takeout's ``X-Gmail-Labels`` (ASCII)."""
    return b"X-Gmail-Labels: " + value.encode("ascii") + b"\n"


def parse_labels_line(data: bytes) -> tuple[int, str] | None:
    """(length, value) of our ``X-Gmail-Labels`` line at the start of ``data``, else None."""
    match = _LABELS_RE.match(data)
    if match is None:
        return None
    return match.end(), match.group(1).decode("ascii")


def encode_export(raw: bytes, flags: Iterable[str] = (), date: datetime | None = None,
                  labels: str | None = None) -> Frame:
    """Frame ``raw`` for a self-describing export file (see the comment above).

    The stored body is :func:`split_eol`'s, quoted as mboxrd; if it does not
    end with a newline one is added and the mark says so. The first of
    ``Frame.parts`` holds the ``From `` line and the three status lines;
    ``Frame.eol`` is the line-end marker, as for :func:`encode`.
    """
    body, eol = split_eol(raw)
    mark = ExportMark(eol=eol, newline_added=not body.endswith(b"\n"), dated=date is not None,
                      labelled=labels is not None)
    head = f"From {mark.sender} {asctime(date)}\n".encode("ascii") + status_lines(flags)
    if labels is not None:
        head += labels_line(labels)
    tail = b"\n\n" if mark.newline_added else b"\n"
    body = quote(body)
    return Frame((head, body, tail), eol, len(head) + len(body) + len(tail))


def decode_export(stored: bytes, mark: ExportMark) -> bytes:
    """The message from its stored body: what follows the three status lines, up to the
    separator line, still quoted.

    Tolerant by design, as it reads a file a mail client may have touched:
    with ``+nonl`` only a newline that is there is taken off, and for
    ``+crlf`` only a bare LF becomes CRLF. For a frame we wrote both are exact.
    """
    body = unquote(stored)
    if mark.newline_added and body.endswith(b"\n"):
        body = body[:-1]
    if mark.eol == EOL_CRLF:
        body = body.replace(b"\n", b"\r\n") if b"\r" not in body else _BARE_LF.sub(b"\r\n", body)
    return body

