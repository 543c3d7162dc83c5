"""What a server may change in a message it stores, and what survives that change.

Some servers do not keep the bytes they are given. Cyrus IMAP changes every
8-bit byte in a header to 'X' (``munge8bit``, its default unless
``reject8bit`` is on: imapd.conf(5)); others replace such bytes, or whole
characters, with '?'. Line ends are made CRLF by every server on output
(handled by the wire form, :func:`migrate.stores.imap_writer.wire_form`).
To recognise its own message on such a server, mailmigrate compares a
*rewrite-tolerant* form: in the header block, every run of bytes that a
rewrite may produce or replace (8-bit bytes, '?', 'X') becomes one '?';
the body must be equal byte for byte.

What can collide, and why that loses no mail: two messages whose bytes are
equal except inside such runs in their headers, with the same Message-ID
(or the same header signature), have the same tolerant form. Taking one for
the other means the destination already holds a message equal to ours up to
the spelling of 8-bit or '?'/'X' header text: the same message as a
rewriting server stores it, never a different body, sender or date.
"""

from __future__ import annotations

import hashlib
import re

_REWRITABLE = re.compile(rb"[\x80-\xff?X]+")
_REWRITABLE_TEXT = re.compile("[\x80-\xff?X]+")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


def header_end(wire: bytes) -> int:
    """Offset just past the blank line that ends the header (the whole text if none)."""
    at = wire.find(b"\r\n\r\n")
    return len(wire) if at < 0 else at + 4


def loose_form(wire: bytes) -> bytes:
    """The rewrite-tolerant form of a message in wire form (CRLF line ends)."""
    end = header_end(wire)
    return _REWRITABLE.sub(b"?", wire[:end]) + wire[end:]


def loose_hash(wire: bytes) -> str:
    """sha256 of :func:`loose_form`; equal for a message and a server's rewrite of it."""
    return hashlib.sha256(loose_form(wire)).hexdigest()


def loosen(text: str) -> str:
    """A header value (decoded as latin-1, byte for character) in its tolerant form."""
    return _REWRITABLE_TEXT.sub("?", text)


def header_slack(wire: bytes) -> int:
    """How many bytes a rewrite may remove from the header: one per 8-bit byte at most
    (a server that writes one '?' for a multi-byte character stores a shorter message)."""
    return len(_EIGHT_BIT.findall(wire[:header_end(wire)]))


def has_8bit_header(wire: bytes) -> bool:
    return _EIGHT_BIT.search(wire[:header_end(wire)]) is not None


__all__ = ["has_8bit_header", "header_end", "header_slack", "loose_form", "loose_hash", "loosen"]
