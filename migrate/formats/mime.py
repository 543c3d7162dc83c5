"""A message's MIME structure, found in bounded time, without copying bodies.

The standard library's parser reads a message line by line in Python and
builds every body as a string: for the index, which runs on every archived
message, that costs time in proportion to the attachments. This walker finds
only the structure: each part's header block is parsed by ``email`` (small),
and its body is located by searching for the boundary with ``bytes.find``
(C speed), so a 20 MB attachment costs a few searches, not a parse. The
viewer and ``show`` decode just the part they need (:func:`payload`).

Lenient as mail clients are: a missing closing boundary ends the part at the
end of the message; a multipart without a boundary, or nested deeper than
:data:`MAX_DEPTH`, is one opaque part; at most :data:`MAX_PARTS` parts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.policy
import quopri
import re
from dataclasses import dataclass
from email.message import Message

from migrate.formats import headers

MAX_DEPTH = 8
MAX_PARTS = 200
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Part:
    """One leaf of the MIME tree: its headers and where its body lies in the message."""

    number: int  # position among the leaves, from 0: what download URLs name
    content_type: str
    charset: str | None
    encoding: str  # Content-Transfer-Encoding, lowercased
    disposition: str | None
    filename: str | None
    content_id: str | None
    start: int  # body start offset in the raw message
    end: int  # body end offset (exclusive)
    in_alternative: bool

    @property
    def maintype(self) -> str:
        return self.content_type.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]

    @property
    def is_text_body(self) -> bool:
        """Text meant to be read as the message, not a file attached to it."""
        return (self.content_type in ("text/plain", "text/html")
                and self.disposition != "attachment" and self.filename is None)


def parse_head(block: bytes) -> Message:
    """A header block as a compat32 Message (raw values kept for :mod:`headers`)."""
    return _HEADER_PARSER.parsebytes(block + b"\n\n")


def split_head(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the header block, start of the body) within ``raw[start:end]``."""
    stop = len(raw) if end is None else end
    if raw.startswith((b"\r\n", b"\n"), start):  # no headers at all
        return start, start + (2 if raw.startswith(b"\r\n", start) else 1)
    match = _HEADER_END.search(raw, start, stop)
    return (match.start(), match.end()) if match else (stop, stop)


def raw_header(head: Message, name: str) -> bytes | None:
    """The raw bytes of the first ``name`` header (8-bit bytes as sent), or None."""
    wanted = name.lower()
    for key, value in head.raw_items():
        if key.lower() == wanted:
            return str(value).encode("ascii", "surrogateescape")
    return None


def _filename(head: Message, fallback: str) -> str | None:
    try:
        name = head.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        return None
    if name is None:
        return None
    text = str(name).encode("utf-8", "surrogateescape")
    return headers.unstructured(text, fallback) or None


def _boundary(head: Message) -> bytes | None:
    try:
        value = head.get_boundary()
    except Exception:
        return None
    if not value:
        return None
    return value.encode("utf-8", "surrogateescape")


class _Walker:
    def __init__(self, raw: bytes, fallback: str) -> None:
        self.raw = raw
        self.fallback = fallback
        self.parts: list[Part] = []

    def walk(self, start: int, end: int, depth: int, in_alternative: bool,
             head: Message | None = None) -> None:
        if len(self.parts) >= MAX_PARTS:
            return
        head_end, body = split_head(self.raw, start, end)
        if head is None:
            head = parse_head(self.raw[start:head_end])
        ctype = head.get_content_type()
        boundary = _boundary(head) if head.get_content_maintype() == "multipart" else None
        if boundary is not None and depth < MAX_DEPTH:
            alternative = ctype == "multipart/alternative"
            for part_start, part_end in self._children(boundary, body, end):
                self.walk(part_start, part_end, depth + 1, alternative)
            return
        try:
            charset = head.get_content_charset()
        except Exception:
            charset = None
        disposition = head.get_content_disposition()
        cid = raw_header(head, "Content-ID")
        self.parts.append(Part(
            number=len(self.parts), content_type=ctype, charset=charset,
            encoding=str(head.get("Content-Transfer-Encoding", "")).strip().lower(),
            disposition=disposition, filename=_filename(head, self.fallback),
            content_id=headers.clean(cid.decode("ascii", "replace")).strip("<>") if cid else None,
            start=body, end=max(body, end), in_alternative=in_alternative))

    def _children(self, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
        """Body ranges of the parts between ``--boundary`` lines in ``raw[start:end]``."""
        delim = b"--" + boundary
        raw = self.raw
        out: list[tuple[int, int]] = []
        part_start: int | None = None
        pos = start
        while pos < end:
            hit = raw.find(delim, pos, end)
            if hit < 0:
                break
            line_end = raw.find(b"\n", hit, end)
            line_end = end if line_end < 0 else line_end + 1
            after = raw[hit + len(delim):line_end]
            at_line_start = hit == start or raw[hit - 1:hit] == b"\n"
            closing = after.startswith(b"--")
            if not at_line_start or (after[2:] if closing else after).strip():
                pos = hit + len(delim)
                continue
            if part_start is not None:
                # The line break before a delimiter belongs to it (RFC 2046 5.1.1).
                stop = hit
                if raw[hit - 2:hit] == b"\r\n" and hit - 2 >= part_start:
                    stop = hit - 2
                elif raw[hit - 1:hit] == b"\n" and hit - 1 >= part_start:
                    stop = hit - 1
                out.append((part_start, stop))
            if closing:
                return out
            part_start = line_end
            pos = line_end
        if part_start is not None and part_start < end:
            out.append((part_start, end))  # no closing delimiter: the part runs to the end
        return out


def walk(raw: bytes, fallback: str = headers.FALLBACK, head: Message | None = None) -> list[Part]:
    """The leaf parts of ``raw`` in order (never raises on any input).

    ``head``: the message's header block, if the caller parsed it already.
    """
    walker = _Walker(raw, fallback)
    with contextlib.suppress(Exception):  # hostile input: the parts found so far
        walker.walk(0, len(raw), 0, False, head)
    return walker.parts


def payload(raw: bytes, part: Part, limit: int | None = None) -> bytes:
    """The decoded body of ``part`` (base64 and quoted-printable undone), at most ``limit``
    bytes of it when given (the encoded input is cut in proportion first)."""
    end = part.end
    if limit is not None:
        end = min(end, part.start + limit * 2 + 4)
    body = raw[part.start:end]
    if part.encoding == "base64":
        data = _NOT_BASE64.sub(b"", body)
        if len(data) % 4 == 1:  # a lone trailing character carries no whole byte
            data = data[:-1]
        try:
            body = base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            body = b""
    elif part.encoding == "quoted-printable":
        body = quopri.decodestring(body)
    return body if limit is None else body[:limit]


def text_body_parts(parts: list[Part]) -> list[Part]:
    """The parts a client shows as the message text: plain where there is a choice."""
    texts = [p for p in parts if p.is_text_body]
    return [p for p in texts if p.subtype == "plain"] or texts


def html_part(parts: list[Part]) -> Part | None:
    """The HTML body a client would render, if there is one."""
    return next((p for p in parts if p.is_text_body and p.subtype == "html"), None)


def attachment_parts(parts: list[Part]) -> list[Part]:
    """Every part that is a file rather than the message text."""
    return [p for p in parts if not p.is_text_body]


__all__ = ["MAX_DEPTH", "MAX_PARTS", "Part", "attachment_parts", "html_part", "parse_head",
           "payload", "raw_header", "split_head", "text_body_parts", "walk"]
