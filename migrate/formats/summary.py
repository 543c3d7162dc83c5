"""Searchable summary of a raw message: its headers as a client shows them, its text.

A pure function of the bytes (:func:`summarize`), so it can run anywhere: on
the backup's writer today, off the hot path later. It never fails a
transfer: the archive keeps the raw bytes whatever happens here, this only
feeds the index columns and the full-text index.

Bounded time per message: headers are decoded by :mod:`migrate.formats.headers`;
the MIME structure is found by :mod:`migrate.formats.mime` without parsing
bodies; at most :data:`MAX_BODY_TEXT` characters of text are decoded, and
HTML goes through a real parser (:mod:`migrate.formats.htmltext`) on at most
:data:`MAX_HTML` characters.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from migrate.formats import headers, htmltext, mime

# Past this much text per message the index gains little and costs time.
MAX_BODY_TEXT = 64 * 1024
# HTML is mostly markup: parse this much to find MAX_BODY_TEXT of text.
MAX_HTML = 192 * 1024


@dataclass(frozen=True)
class Summary:
    msgid: str | None
    subject: str | None
    from_addr: str | None
    to_addrs: str | None
    date: str | None
    body: str
    attachments: int = 0


def iso_date(value: str | None) -> str | None:
    """A Date header as ISO-8601 with its offset, or None if it is no date."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed.isoformat() if parsed is not None else None


def header_fallback(head: object, parts: list[mime.Part]) -> str:
    """The legacy charset for raw 8-bit headers: the message's own, as clients guess it.

    The top-level Content-Type charset, else the first text part's, else
    windows-1252.
    """
    declared = None
    get_charset = getattr(head, "get_content_charset", None)
    if get_charset is not None:
        try:
            declared = get_charset()
        except Exception:
            declared = None
    if declared is None:
        declared = next((p.charset for p in parts if p.maintype == "text" and p.charset), None)
    return headers.legacy_charset(declared)


def part_text(raw: bytes, part: mime.Part, limit: int) -> str:
    """The readable text of one text part (HTML through the parser), at most ``limit`` chars."""
    is_html = part.subtype == "html"
    # Twice the characters wanted: most text is one or two bytes a character.
    data = mime.payload(raw, part, MAX_HTML if is_html else limit * 2)
    text = headers.decode_text(data, part.charset)
    if is_html:
        return htmltext.html_to_text(text, limit)
    return text[:limit]


def body_text(raw: bytes, parts: list[mime.Part], limit: int = MAX_BODY_TEXT) -> str:
    texts: list[str] = []
    left = limit
    for part in mime.text_body_parts(parts):
        if left <= 0:
            break
        text = part_text(raw, part, left)
        texts.append(text)
        left -= len(text)
    return "\n".join(texts)[:limit]


def summarize(raw: bytes) -> Summary:
    """Headers and body text for indexing; total on any input."""
    try:
        head_end, _ = mime.split_head(raw)
        head = mime.parse_head(raw[:head_end])
    except Exception:
        return Summary(None, None, None, None, None, "")
    try:
        parts = mime.walk(raw, head=head)
    except Exception:
        parts = []
    fallback = header_fallback(head, parts)

    def field(name: str, decode: str = "text") -> str | None:
        value = mime.raw_header(head, name)
        if value is None:
            return None
        try:
            text = (headers.addresses(value, fallback) if decode == "addresses"
                    else headers.unstructured(value, fallback))
        except Exception:
            return None
        return text or None

    try:
        body = body_text(raw, parts)
    except Exception:
        body = ""
    return Summary(
        msgid=field("Message-ID"),
        subject=field("Subject"),
        from_addr=field("From", "addresses"),
        to_addrs=headers.join([field("To", "addresses"), field("Cc", "addresses")]),
        date=iso_date(field("Date")),
        body=body,
        attachments=len(mime.attachment_parts(parts)),
    )


__all__ = ["MAX_BODY_TEXT", "MAX_HTML", "Summary", "body_text", "header_fallback", "iso_date",
           "part_text", "summarize"]
