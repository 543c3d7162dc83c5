"""The destination's identity of a message (``imap_writer.header_fields`` and the
identities built on it) reads only the header block, and gives exactly what
splitting the whole first 64 KiB into lines gave (its behaviour before issue 17
phase 2, which the exactly-once records depend on)."""

from __future__ import annotations

import random

from migrate.stores import imap_writer

NAMES = ("message-id", "date", "from", "to", "subject")


def reference(raw: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """The former implementation: every line of the first 64 KiB split first."""
    out: dict[str, str] = {}
    current = None
    for line in imap_writer._LINE_END.split(raw[:65536]):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                out[current] += " " + line.decode("latin-1").strip()
            continue
        name, sep, value = line.partition(b":")
        key = name.decode("latin-1").strip().lower()
        current = None
        if sep and key in names and key not in out:
            out[key] = value.decode("latin-1").strip()
            current = key
    return {k: imap_writer._WS.sub(" ", v).strip() for k, v in out.items()}


def test_header_fields_match_the_whole_split_on_generated_headers():
    rng = random.Random(17)
    atoms = [b"Message-ID: <a@b>", b"message-id:", b" <folded@x>", b"\tmore", b"Subject: s\xe9",
             b"From: a", b"To: b", b"Date: x", b"", b"X: y", b"no colon", b":", b" "]
    ends = [b"\r\n", b"\n", b"\r", b"\r\r", b"\n\r", b"\r\n\r\n"]
    for _ in range(3000):
        raw = b"".join(rng.choice(atoms) + rng.choice(ends) for _ in range(rng.randint(0, 12)))
        raw += b"Subject: in the body\r\n" * rng.randint(0, 2)
        assert imap_writer.header_fields(raw, NAMES) == reference(raw, NAMES), raw
        ident, loose = imap_writer.identities(raw)
        assert ident == imap_writer.identity(raw) and loose == imap_writer.loose_identity(raw)


def test_a_header_past_the_limit_is_not_read():
    raw = b"X: " + b"y" * 70000 + b"\r\nMessage-ID: <late@x>\r\n\r\nbody\r\n"
    assert imap_writer.header_fields(raw, NAMES) == reference(raw, NAMES) == {}
    assert imap_writer.identity(raw).startswith("sig:")
