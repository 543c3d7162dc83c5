"""Searchable summary of a raw message: a few headers and its text.

Parsing is best effort and never fails a transfer: the archive keeps the raw
bytes whatever happens here, this only feeds the index columns and the FTS.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import Message as EmailMessage

# Past this much text per message the index gains little and costs time.
MAX_BODY_TEXT = 256 * 1024
# Bigger messages are mostly attachments: index their headers only.
MAX_PARSE_BYTES = 8 * 1024 * 1024

_TAG = re.compile(rb"<[^>]*>")
_WS = re.compile(r"\s+")


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


def _part_text(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    if part.get_content_subtype() == "html":
        payload = _TAG.sub(b" ", payload)
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def summarize(raw: bytes) -> Summary:
    """Headers and body text for indexing; tolerant of any malformed input."""
    try:
        if len(raw) > MAX_PARSE_BYTES:
            end = raw.find(b"\n\n")
            end2 = raw.find(b"\r\n\r\n")
            cut = min(x for x in (end, end2, len(raw)) if x >= 0)
            msg = email.message_from_bytes(raw[:cut], policy=email.policy.compat32)
            parts: list[EmailMessage] = []
        else:
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
            parts = [p for p in msg.walk() if p.get_content_maintype() == "text"]
    except Exception:
        return Summary(None, None, None, None, None, "")
    texts: list[str] = []
    size = 0
    plain = [p for p in parts if p.get_content_subtype() == "plain"] or parts
    for part in plain:
        with contextlib.suppress(Exception):
            text = _part_text(part)
            texts.append(text)
            size += len(text)
        if size >= MAX_BODY_TEXT:
            break
    body = "\n".join(texts)[:MAX_BODY_TEXT]
    to_parts = [_decode_header(msg.get(h)) for h in ("To", "Cc")]

    def header(name: str) -> str | None:
        try:
            return _decode_header(msg.get(name))
        except Exception:
            return None

    msgid = header("Message-ID")
    return Summary(
        msgid=msgid,
        subject=header("Subject"),
        from_addr=header("From"),
        to_addrs=", ".join(p for p in to_parts if p) or None,
        date=_iso_date(header("Date")),
        body=body,
    )
