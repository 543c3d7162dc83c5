"""Header text as a mail client shows it, from the bytes a server sent.

Real mail carries header text in three ways, often wrongly: raw UTF-8
(RFC 6532), raw 8-bit in whatever legacy charset the sender's client used
(no standard says which; mail clients guess from the body's Content-Type
charset and fall back to windows-1252), and RFC 2047 encoded-words, which
senders split in the middle of a character, glue to neighbouring text, put
inside quoted strings, label with unknown charsets or pad wrongly.

The standard library's modern ``email.policy`` decoders are strict where
clients are lenient (a raw 8-bit byte becomes U+FFFD, an encoded-word inside
quotes stays encoded), so this module does what Thunderbird and mutt do:

- the header bytes are unfolded, then decoded as UTF-8 if they are valid
  UTF-8, else in the legacy charset (see :func:`legacy_charset`);
- encoded-words are found anywhere (also inside quotes and words);
  whitespace between two of them is dropped (RFC 2047 section 6.2) and the
  bytes of neighbouring words in one charset are joined before decoding, so
  a character split across two words survives;
- address headers are split into mailboxes first (``email.utils``), and only
  then are display names decoded, so a comma inside an encoded name does not
  split a mailbox;
- control characters become spaces and whitespace runs one space, so what
  is indexed and printed cannot move a terminal's cursor.

Everything here is total: any input gives a string, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import re
from collections.abc import Iterable

# WHATWG Encoding Standard (encoding.spec.whatwg.org, "Encodings" table): mail
# clients and browsers decode these labels with the superset on the right,
# because senders declare the subset and send the superset's bytes.
_SUPERSETS = {
    "us-ascii": "cp1252", "ascii": "cp1252", "iso-8859-1": "cp1252", "latin1": "cp1252",
    "latin-1": "cp1252", "iso8859-1": "cp1252", "iso_8859-1": "cp1252", "l1": "cp1252",
    "iso-8859-9": "cp1254", "latin5": "cp1254", "iso-8859-11": "cp874", "tis-620": "cp874",
    "gb2312": "gbk", "gb_2312": "gbk", "gb_2312-80": "gbk", "x-gbk": "gbk",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "shift_jis": "cp932", "sjis": "cp932",
    "x-sjis": "cp932", "big5": "big5hkscs",
}
# Labels that name no charset at all: decode as if nothing were declared.
_NO_CHARSET = {"", "unknown", "unknown-8bit", "x-unknown", "default", "8bit", "binary",
               "x-user-defined", "charset"}
FALLBACK = "cp1252"

_FOLD = re.compile(rb"\r?\n(?=[ \t])|\r(?=[ \t])")
_EOL = re.compile(rb"[\r\n]+")
_ENCODED_WORD = re.compile(r"=\?([^?\s\"]{1,60}?)\?([bBqQ])\?([^?\r\n]*?)\?=")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_WS = re.compile(r"\s+")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _c1_for_undefined(exc: UnicodeError) -> tuple[str, int]:
    """cp1252 leaves five bytes undefined; WHATWG maps them to the same code points."""
    assert isinstance(exc, UnicodeDecodeError)
    bad = exc.object[exc.start:exc.end]
    return "".join(chr(b) for b in bad), exc.end


codecs.register_error("mailmigrate-latin1", _c1_for_undefined)


def codec_for(label: str | None) -> str | None:
    """The Python codec for a MIME charset label as clients read it, or None if unknown."""
    if label is None:
        return None
    name = label.strip().strip("\"'").split("*", 1)[0].lower()  # RFC 2231 language tag
    if name in _NO_CHARSET:
        return None
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def legacy_charset(declared: str | None) -> str:
    """The charset to read raw 8-bit header bytes in, from the message's declared charset.

    A declared UTF-8 (or nothing) says nothing about bytes that are not
    UTF-8, so those fall back to windows-1252, the commonest legacy charset.
    """
    codec = codec_for(declared)
    if codec is None or codec in ("utf-8", "ascii") or codec.startswith("utf-16"):
        return FALLBACK
    return codec


def decode_bytes(raw: bytes, fallback: str = FALLBACK) -> str:
    """Raw text bytes: UTF-8 when they are valid UTF-8, else ``fallback`` (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode(fallback)
    except (UnicodeDecodeError, LookupError):
        return raw.decode(FALLBACK, "mailmigrate-latin1")


# Codecs whose text is not ASCII where its bytes are (escape sequences, UTF-7, wide).
_NOT_ASCII_COMPATIBLE = ("iso2022", "utf_7", "utf-7", "utf_16", "utf-16", "utf_32", "utf-32",
                         "hz", "cp037", "cp500", "cp1140")


def decode_text(raw: bytes, charset: str | None) -> str:
    """Body text bytes in a declared charset, read as a client would (never fails)."""
    codec = codec_for(charset)
    if raw.isascii() and not (codec or "").startswith(_NOT_ASCII_COMPATIBLE):
        return raw.decode("ascii")  # the common case, at C speed in every such charset
    if codec is not None and codec not in ("ascii", "utf-8"):
        try:
            return raw.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    return decode_bytes(raw, legacy_charset(charset))


def unfold(raw: bytes) -> bytes:
    """A header value without its folding line breaks (RFC 5322 section 2.2.3)."""
    return _EOL.sub(b" ", _FOLD.sub(b"", raw))


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    data = payload.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        data = _NOT_BASE64.sub(b"", data)
        if not data and payload:
            return None
        if len(data) % 4 == 1:  # a lone trailing character carries no whole byte
            data = data[:-1]
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return None
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))


def _decode_run(charset: str, data: bytes) -> str:
    codec = codec_for(charset)
    for name in (codec, "utf-8"):
        if name is None:
            continue
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return decode_bytes(data, legacy_charset(charset))


def decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded-words decoded, leniently (see the module doc)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    run_charset: str | None = None
    run: bytearray = bytearray()
    pos = 0

    def flush() -> None:
        nonlocal run_charset
        if run_charset is not None:
            out.append(_decode_run(run_charset, bytes(run)))
            run.clear()
            run_charset = None

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos:match.start()]
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:  # not decodable: keep the word as it stands
            continue
        charset = match.group(1).split("*", 1)[0].lower()
        adjacent = run_charset is not None and not between.strip()
        if not adjacent:
            flush()
            out.append(between)
        elif charset != run_charset:
            flush()  # whitespace between two encoded-words is dropped
        if run_charset is None:
            run_charset = charset
        run += data
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def clean(text: str) -> str:
    """One line: control characters and whitespace runs become single spaces."""
    return _WS.sub(" ", _CONTROLS.sub(" ", text)).strip()


def unstructured(raw: bytes, fallback: str = FALLBACK) -> str:
    """An unstructured header (Subject, …) as a client shows it."""
    return clean(decode_words(decode_bytes(unfold(raw), fallback)))


def mailbox_text(name: str, addr: str) -> str:
    """One mailbox as shown: ``Name <addr>``, or the part that is there."""
    name = clean(decode_words(name))
    addr = clean(addr)
    if name and addr and name != addr:
        return f"{name} <{addr}>"
    return addr or name


# The two forms nearly every address header has, ``Name <a@b>`` and ``a@b``, with no
# quotes, comments, groups or escapes: these need no RFC 5322 parser (the stdlib's
# costs more than the rest of the index summary together); anything else gets it.
_SIMPLE_ADDR = r"[^<>\s\"(),;:\\@]+@[^<>\s\"(),;:\\@]+"
_SIMPLE_MAILBOX = re.compile(rf"\s*(?:([^<>\"(),;:\\@]*?)\s*<({_SIMPLE_ADDR})>|({_SIMPLE_ADDR}))\s*")


def _simple_pairs(text: str) -> list[tuple[str, str]] | None:
    pairs = []
    for piece in text.split(","):
        match = _SIMPLE_MAILBOX.fullmatch(piece)
        if match is None:
            return None
        name, angle, bare = match.groups()
        pairs.append((name or "", angle or bare))
    return pairs


def addresses(raw: bytes, fallback: str = FALLBACK) -> str:
    """An address header (From, To, Cc) as a client shows it: mailboxes joined by ', '."""
    text = decode_bytes(unfold(raw), fallback)
    pairs = _simple_pairs(text)
    if pairs is None:
        try:
            pairs = email.utils.getaddresses([text])
        except Exception:  # the parser's own bugs on hostile input: show the text
            pairs = []
    shown = [mailbox_text(name, addr) for name, addr in pairs]
    shown = [s for s in shown if s]
    if not shown:
        return unstructured(raw, fallback)
    return ", ".join(shown)


def join(values: Iterable[str | None]) -> str | None:
    """Several decoded address headers as one (To and Cc), or None if all are empty."""
    return ", ".join(v for v in values if v) or None


__all__ = ["FALLBACK", "addresses", "clean", "codec_for", "decode_bytes", "decode_text",
           "decode_words", "join", "legacy_charset", "mailbox_text", "unfold", "unstructured"]
