"""Header decoding: every way real mail encodes header text gives the text a client shows.

Property tests (Hypothesis) build a header from a Unicode text in one of the
encodings seen in the wild, raw UTF-8 (RFC 6532), raw 8-bit in a legacy
charset (declared in Content-Type or not), RFC 2047 B and Q encoded-words,
split anywhere (also inside a character), with or without whitespace between
words, folded, inside quoted strings, lowercased, wrongly padded, and check
that the summary indexes exactly the text, whitespace-normalised.
"""

from __future__ import annotations

import base64
import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from migrate.formats import headers
from migrate.formats.summary import summarize

LEGACY = ["iso-8859-1", "windows-1252", "iso-8859-15", "iso-8859-2", "koi8-r", "cp1251",
          "iso-8859-7", "shift_jis", "gb2312", "euc-kr", "big5"]
WORD_CHARSETS = ["utf-8", *LEGACY]

# Printable text of every script; no control characters (a client shows none) and no
# surrogates (not text). '=?' in the text itself would be an encoded-word.
text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn")), max_size=40)


def norm(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip()


def encodable(value: str, charset: str) -> bool:
    """``value`` has bytes in ``charset`` that a client reads back as ``value``.

    Clients read some labels as a superset (WHATWG: Shift_JIS as windows-31j, …);
    where Python's codec and the superset disagree on a character, the client's
    reading is the right one, and the generator leaves such text out.
    """
    try:
        data = value.encode(charset)
    except UnicodeEncodeError:
        return False
    return data.decode(headers.codec_for(charset) or charset, "replace") == value


def message(header: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
    return (header + b"\r\nMIME-Version: 1.0\r\nContent-Type: " + content_type
            + b"\r\n\r\nbody\r\n")


def encoded_words(data: bytes, charset: str, rng_splits: list[int], kind: str,
                  separator: str) -> str:
    """``data`` as encoded-words cut at the given byte offsets (maybe mid-character)."""
    cuts = sorted({c for c in rng_splits if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    words = []
    for piece in pieces:
        if kind == "b":
            payload = base64.b64encode(piece).decode()
        else:
            payload = "".join(chr(b) if (chr(b).isalnum() and b < 128) else
                              "_" if b == 32 else f"={b:02X}" for b in piece)
        words.append(f"=?{charset}?{kind}?{payload}?=")
    return separator.join(words)


@settings(max_examples=300, deadline=None)
@given(value=text)
def test_raw_utf8_subject(value: str) -> None:
    assume("=?" not in value)
    raw = message(b"Subject: " + value.encode("utf-8"))
    assert summarize(raw).subject == (norm(value) or None)


@settings(max_examples=300, deadline=None)
@given(value=text, charset=st.sampled_from(LEGACY), declared=st.booleans())
def test_raw_legacy_8bit_subject(value: str, charset: str, declared: bool) -> None:
    """Raw 8-bit bytes: read in the declared charset, or windows-1252 when none is declared."""
    assume("=?" not in value and encodable(value, charset))
    data = value.encode(charset)
    try:
        data.decode("utf-8")
        assume(data.isascii())  # bytes that are valid UTF-8 are read as UTF-8, as clients do
    except UnicodeDecodeError:
        pass
    if not declared:
        assume(encodable(value, "cp1252") and value.encode("cp1252") == data)
    ctype = f"text/plain; charset={charset}".encode() if declared else b"text/plain"
    assert summarize(message(b"Subject: " + data, ctype)).subject == (norm(value) or None)


@settings(max_examples=400, deadline=None)
@given(value=text, charset=st.sampled_from(WORD_CHARSETS), kind=st.sampled_from("bBqQ"),
       splits=st.lists(st.integers(0, 120), max_size=4),
       separator=st.sampled_from([" ", "\r\n ", "\r\n\t", "", "  "]),
       prefix=st.sampled_from(["", "Re: ", "AW: "]))
def test_encoded_word_subject(value: str, charset: str, kind: str, splits: list[int],
                              separator: str, prefix: str) -> None:
    """RFC 2047, also split inside a character and with no space between the words."""
    assume(encodable(value, charset) and value)
    data = value.encode(charset)
    words = encoded_words(data, charset, splits, kind.lower(), separator)
    if kind.isupper():
        words = words.replace(f"?{kind.lower()}?", f"?{kind}?")
    raw = message(b"Subject: " + prefix.encode() + words.encode("ascii"))
    assert summarize(raw).subject == (norm(prefix + value) or None)


name_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"),
                                  blacklist_characters='"\\<>()[]:;@,'), min_size=1, max_size=30)
address = st.from_regex(r"[a-z][a-z0-9.]{0,10}@[a-z]{1,10}\.(de|org|com)", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=name_text, addr=address, how=st.sampled_from(["utf8", "quoted", "word", "word-in-quotes"]),
       charset=st.sampled_from(WORD_CHARSETS))
def test_from_display_names(name: str, addr: str, how: str, charset: str) -> None:
    """A From header as a client shows it: ``Name <addr>``, the name decoded."""
    assume("=?" not in name and norm(name) and norm(name) != addr)
    if how == "utf8":
        header = f"From: {name} <{addr}>".encode()
    elif how == "quoted":
        header = f'From: "{name}" <{addr}>'.encode()
    else:
        assume(encodable(name, charset))
        words = encoded_words(name.encode(charset), charset, [], "b", "")
        header = (f'From: "{words}" <{addr}>' if how == "word-in-quotes"
                  else f"From: {words} <{addr}>").encode()
    assert summarize(message(header)).from_addr == f"{norm(name)} <{addr}>"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_header_bytes_decode_to_one_clean_line(raw: bytes) -> None:
    for decode in (headers.unstructured, headers.addresses):
        out = decode(raw)
        assert "\n" not in out and "\r" not in out and out == out.strip()
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_malformed_encoded_words_seen_in_the_wild() -> None:
    cases = {
        # no padding, lowercase q, a charset with an RFC 2231 language tag
        b"=?utf-8?b?S8O2bG4?=": "Köln",
        b"=?utf-8?q?K=C3=B6ln?=": "Köln",
        b"=?UTF-8*de?Q?K=C3=B6ln?=": "Köln",
        # glued to text on both sides; spaces inside a Q word
        b"Re:=?utf-8?q?K=C3=B6ln?=Bonn": "Re:KölnBonn",
        b"=?iso-8859-1?q?Stra=DFe in K=F6ln?=": "Straße in Köln",
        # a character split across two words, folded
        b"=?utf-8?b?S8M=?=\r\n =?utf-8?b?tmxu?=": "Köln",
        # an unknown label that is really UTF-8, and one that is really Latin-1
        b"=?x-unknown?q?K=C3=B6ln?=": "Köln",
        b"=?unknown-8bit?q?K=F6ln?=": "Köln",
        # undecodable base64 is kept as it stands
        b"=?utf-8?b?!!!?=": "=?utf-8?b?!!!?=",
        # iso-8859-1 declared, windows-1252 sent (the euro sign and curly quotes)
        b"=?iso-8859-1?q?=80_=96_=84x=93?=": "€ – „x“",
    }
    for raw, shown in cases.items():
        assert headers.unstructured(raw) == shown, raw


def test_raw_8bit_headers_of_a_german_mailbox() -> None:
    """The case the index got wrong: 'Empfänger' and 'Köln' as raw Latin-1 and raw UTF-8."""
    latin = ("From: Jürgen Müller <j@example.de>\r\nTo: Empfänger <e@example.de>\r\n"
             "Subject: Grüße aus Köln\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\nLiebe Grüße\r\n").encode("latin-1")
    s = summarize(latin)
    assert (s.from_addr, s.to_addrs, s.subject) == (
        "Jürgen Müller <j@example.de>", "Empfänger <e@example.de>", "Grüße aus Köln")
    assert "Liebe Grüße" in s.body
    # Nothing declared and not UTF-8: windows-1252, which reads Latin-1 text the same.
    undeclared = latin.replace(b"Content-Type: text/plain; charset=ISO-8859-1\r\n", b"")
    assert summarize(undeclared).subject == "Grüße aus Köln"
    utf8 = latin.decode("latin-1").replace("ISO-8859-1", "utf-8").encode("utf-8")
    s = summarize(utf8)
    assert (s.to_addrs, s.subject) == ("Empfänger <e@example.de>", "Grüße aus Köln")
    # multipart: the charset of the first text part decides
    multi = ("Subject: Привет\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
             "Content-Type: text/plain; charset=koi8-r\r\n\r\nтекст\r\n--b--\r\n").encode("koi8-r")
    assert summarize(multi).subject == "Привет"
    assert summarize(multi).body.strip() == "текст"


def test_addresses_groups_comments_and_commas_inside_encoded_names() -> None:
    assert headers.addresses(b"=?utf-8?q?M=C3=BCller=2C_Hans?= <h@x.de>, b@y.de") == \
        "Müller, Hans <h@x.de>, b@y.de"
    assert headers.addresses(b"bob@example.org (Bob Smith)") == "Bob Smith <bob@example.org>"
    assert headers.addresses(b"undisclosed-recipients:;") == "undisclosed-recipients:;"
    assert headers.addresses(b'"bob@example.org" <bob@example.org>') == "bob@example.org"
