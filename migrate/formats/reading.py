"""A message as a person reads it: shown headers, text, HTML, attachments.

What ``show`` prints and the viewer displays, from the raw bytes alone, with
the same decoding as the index (:mod:`migrate.formats.headers`) and the same
idea of which parts are the text and which are files
(:mod:`migrate.formats.mime`), so a message looks the same in the terminal,
in the browser and in a search result. Total on any input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from migrate.formats import headers, htmltext, mime
from migrate.formats.summary import header_fallback, part_text

SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject", "Message-ID")
ADDRESS_HEADERS = frozenset({"From", "To", "Cc", "Bcc", "Reply-To", "Sender"})
# The viewer shows whole messages, but not without limit.
MAX_SHOWN_TEXT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    number: int  # the part's number: what a download names
    filename: str | None
    content_type: str
    size: int  # decoded bytes
    content_id: str | None
    inline: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reading:
    """One message, parsed once for everything a reader asks of it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head_end, _ = mime.split_head(raw)
        self.head = mime.parse_head(raw[:head_end])
        self.parts = mime.walk(raw, head=self.head)
        self.fallback = header_fallback(self.head, self.parts)

    def header(self, name: str) -> str | None:
        value = mime.raw_header(self.head, name)
        if value is None:
            return None
        decode = headers.addresses if name in ADDRESS_HEADERS else headers.unstructured
        return decode(value, self.fallback)

    def headers(self, names: tuple[str, ...] = SHOWN_HEADERS) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            value = self.header(name)
            if value is not None:
                out[name] = value
        return out

    def text(self, limit: int = MAX_SHOWN_TEXT) -> str:
        """The plain-text body, or the HTML one as text, with line breaks kept."""
        texts: list[str] = []
        for part in mime.text_body_parts(self.parts):
            if part.subtype == "html":
                data = mime.payload(self.raw, part, limit)
                texts.append(htmltext.html_to_text(headers.decode_text(data, part.charset), limit))
            else:
                texts.append(part_text(self.raw, part, limit))
        return "\n".join(texts).replace("\r\n", "\n")[:limit]

    def html(self, limit: int = MAX_SHOWN_TEXT) -> str | None:
        """The HTML body as it was sent (unsanitised: hostile), or None."""
        part = mime.html_part(self.parts)
        if part is None:
            return None
        return headers.decode_text(mime.payload(self.raw, part, limit), part.charset)

    def attachments(self) -> list[Attachment]:
        out = []
        for part in mime.attachment_parts(self.parts):
            out.append(Attachment(
                number=part.number, filename=part.filename, content_type=part.content_type,
                size=len(mime.payload(self.raw, part)), content_id=part.content_id,
                inline=part.disposition != "attachment" and part.content_id is not None))
        return out

    def attachment(self, number: int) -> tuple[Attachment, bytes] | None:
        """An attachment's description and decoded bytes, or None if there is no such part."""
        for item in self.attachments():
            if item.number == number:
                return item, mime.payload(self.raw, self.parts[number])
        return None


__all__ = ["ADDRESS_HEADERS", "MAX_SHOWN_TEXT", "SHOWN_HEADERS", "Attachment", "Reading"]
