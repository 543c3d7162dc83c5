"""Searchable summary of a raw message: a few headers and its text.

Parsing is best effort and never fails a transfer: the archive keeps the raw
bytes whatever happens here, this only feeds the index columns and the FTS.
It is also on the hot path of every backup, so it parses as little as it can:
the header block alone for single-part messages (whose body is decoded
directly), and only the head of a multipart message, where text parts sit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.header
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass
from email.message import Message as EmailMessage

# Past this much text per message the index gains little and costs time.
MAX_BODY_TEXT = 64 * 1024
# How much of a multipart message the stdlib parser sees (line by line, slow).
MAX_MULTIPART_PARSE = 128 * 1024

_TAG = re.compile(rb"<[^>]*>")
_WS = re.compile(r"\s+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Summary:
    msgid: str | None
    subject: str | None
    from_addr: str | None
    to_addrs: str | None
    date: str | None
    body: str


def _decode_header(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded-words: keep the raw text
        decoded = text
    return _WS.sub(" ", decoded).strip()


def _iso_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.isoformat() if parsed is not None else None


def _to_text(payload: bytes, charset: str | None, subtype: str) -> str:
    if subtype == "html":
        payload = _TAG.sub(b" ", payload)
    try:
        return payload.decode(charset or "utf-8", "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _part_text(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return _to_text(payload, part.get_content_charset(), part.get_content_subtype())


def _single_part_text(head: EmailMessage, body: bytes) -> str:
    """Body text of a non-multipart message without running the full parser."""
    if head.get_content_maintype() != "text":
        return ""
    body = body[: MAX_BODY_TEXT * 2]
    cte = str(head.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        with contextlib.suppress(binascii.Error, ValueError):
            body = base64.b64decode(body[: len(body) - len(body) % 4] or b"", validate=False)
    elif cte == "quoted-printable":
        body = quopri.decodestring(body)
    return _to_text(body, head.get_content_charset(), head.get_content_subtype())


def summarize(raw: bytes) -> Summary:
    """Headers and body text for indexing; tolerant of any malformed input."""
    match = _HEADER_END.search(raw)
    header_end, body_start = (match.start(), match.end()) if match else (len(raw), len(raw))
    try:
        head = email.message_from_bytes(raw[:header_end] + b"\n\n", policy=email.policy.compat32)
    except Exception:
        return Summary(None, None, None, None, None, "")
    body = ""
    with contextlib.suppress(Exception):
        if head.get_content_maintype() == "multipart":
            msg = email.message_from_bytes(raw[:MAX_MULTIPART_PARSE], policy=email.policy.compat32)
            parts = [p for p in msg.walk() if p.get_content_maintype() == "text"]
            plain = [p for p in parts if p.get_content_subtype() == "plain"] or parts
            texts: list[str] = []
            for part in plain:
                with contextlib.suppress(Exception):
                    texts.append(_part_text(part))
            body = "\n".join(texts)
        else:
            body = _single_part_text(head, raw[body_start:])
    to_parts = [_decode_header(head.get(h)) for h in ("To", "Cc")]

    def header(name: str) -> str | None:
        try:
            return _decode_header(head.get(name))
        except Exception:
            return None

    return Summary(
        msgid=header("Message-ID"),
        subject=header("Subject"),
        from_addr=header("From"),
        to_addrs=", ".join(p for p in to_parts if p) or None,
        date=_iso_date(header("Date")),
        body=body[:MAX_BODY_TEXT],
    )
