"""mboxrd framing: exact round trips, and files other mbox readers can split."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.formats import mboxrd

CORPUS_DIRS = [
    Path(__file__).parent / "data" / "corpus",
    Path(__file__).parent.parent.parent / "shared" / "corpus",
]

# Lines that stress the framing: quoting, SMTP dot-stuffing leftovers, NUL,
# lone CR, mixed ends, and empty lines around a "From ".
_tricky_lines = st.sampled_from(
    [
        b"From ",
        b"From me Mon Jan  1 00:00:00 2024",
        b">From x",
        b">>From y",
        b">>>From ",
        b"From",
        b">From",
        b".",
        b"..",
        b"",
        b"\x00",
        b"\r",
        b"a\rb",
        b"Subject: hi",
        b"\xff\xfe",
        b" From indented",
    ]
)
_eols = st.sampled_from([b"\n", b"\r\n", b"\r", b""])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, biased towards line structures that break naive mbox code."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    mixed = draw(st.booleans())
    parts: list[bytes] = []
    for line in draw(st.lists(st.one_of(_tricky_lines, st.binary(max_size=20)), max_size=12)):
        parts.append(line + (draw(_eols) if mixed else eol))
    out = b"".join(parts)
    if draw(st.booleans()) and out.endswith(eol):
        out = out[: -len(eol)]
    return out


@given(messages())
@settings(max_examples=400)
def test_round_trip_is_exact(raw: bytes) -> None:
    frame = mboxrd.encode(raw)
    assert mboxrd.decode(frame.data, frame.eol, len(raw)) == raw


@pytest.mark.parametrize(
    ("raw", "eol"),
    [
        (b"", "lf"),
        (b"no newline at all", "lf"),
        (b"a\nb\n", "lf"),
        (b"a\r\nb\r\n", "crlf"),
        (b"a\r\nb", "crlf"),
        (b"a\r\nb\n", "raw"),
        (b"a\rb\n", "raw"),
        (b"a\r\r\n", "raw"),
        (b"trailing CR\r", "raw"),
    ],
)
def test_eol_classification(raw: bytes, eol: str) -> None:
    frame = mboxrd.encode(raw)
    assert frame.eol == eol
    assert mboxrd.decode(frame.data, frame.eol, len(raw)) == raw


def test_crlf_is_stored_as_lf() -> None:
    frame = mboxrd.encode(b"Subject: x\r\n\r\nbody\r\n")
    assert b"\r" not in frame.data
    assert frame.data.endswith(b"Subject: x\n\nbody\n\n")


def test_quoting_is_mboxrd() -> None:
    raw = b"X: y\n\nFrom a\n>From b\n>>From c\nFromage\n"
    data = mboxrd.encode(raw, sender="s@example.org").data
    assert data.split(b"\n", 1)[1] == b"X: y\n\n>From a\n>>From b\n>>>From c\nFromage\n\n"
    assert mboxrd.unquote(mboxrd.quote(raw)) == raw


def test_envelope_line() -> None:
    when = datetime(2024, 3, 5, 1, 2, 3, tzinfo=timezone(timedelta(hours=2)))
    raw = b"Return-Path: <bounce@example.org>\r\nFrom: A <a@example.org>\r\n\r\nx\r\n"
    line = mboxrd.encode(raw, date=when).data.split(b"\n", 1)[0]
    assert line == b"From bounce@example.org Mon Mar  4 23:02:03 2024"
    assert mboxrd.encode(b"no headers", date=when).data.startswith(b"From MAILER-DAEMON Mon")
    # A sender with whitespace would break the separator line: it is refused.
    assert mboxrd.encode(b"", sender="a b\nFrom x").data.startswith(b"From MAILER-DAEMON ")


def test_asctime_naive_is_utc() -> None:
    assert mboxrd.asctime(datetime(2001, 12, 31, 23, 59, 59)) == "Mon Dec 31 23:59:59 2001"
    assert mboxrd.asctime(datetime(2001, 1, 1, tzinfo=UTC)) == "Mon Jan  1 00:00:00 2001"


@pytest.mark.parametrize(
    ("frame", "eol", "size"),
    [
        (b"From x\nabc\n\n", "lf", 10),
        (b"not a frame\n", "lf", 0),
        (b"From x\nabc", "lf", 3),
        (b"From x\nabc\n\n", "bogus", 3),
    ],
)
def test_decode_rejects_damage(frame: bytes, eol: str, size: int) -> None:
    with pytest.raises(mboxrd.FrameError):
        mboxrd.decode(frame, eol, size)


@given(st.lists(messages(), max_size=25))
@settings(max_examples=100, deadline=None)
def test_stdlib_mailbox_splits_our_file(tmp_path_factory: pytest.TempPathFactory, raws: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("mbox") / "f.mbox"
    frames = [mboxrd.encode(raw) for raw in raws]
    path.write_bytes(b"".join(f.data for f in frames))
    box = mailbox.mbox(path, create=False)
    try:
        assert len(box) == len(raws)
    finally:
        box.close()
    # Our own scanner finds the same frame boundaries the index would record.
    with path.open("rb") as fp:
        spans = list(mboxrd.iter_frame_spans(fp))
    offsets = [0]
    for f in frames:
        offsets.append(offsets[-1] + len(f.data))
    assert spans == [(offsets[i], len(f.data)) for i, f in enumerate(frames)]


def test_stdlib_reads_plain_lf_message_unchanged(tmp_path: Path) -> None:
    raw = b"From: a@example.org\nSubject: s\n\nline\n"
    path = tmp_path / "f.mbox"
    path.write_bytes(mboxrd.encode(raw).data * 2)
    box = mailbox.mbox(path, create=False)
    try:
        assert [box.get_bytes(k) for k in box.iterkeys()] == [raw, raw]
    finally:
        box.close()


def _corpus_files() -> list[Path]:
    for d in CORPUS_DIRS:
        if d.is_dir():
            return sorted(p for p in d.rglob("*.eml") if p.is_file())
    return []


def test_corpus_round_trip(tmp_path: Path) -> None:
    files = _corpus_files()
    if not files:
        pytest.skip("no message corpus available")
    frames = []
    for p in files:
        raw = p.read_bytes()
        frame = mboxrd.encode(raw)
        assert mboxrd.decode(frame.data, frame.eol, len(raw)) == raw, p
        frames.append(frame)
    path = tmp_path / "all.mbox"
    path.write_bytes(b"".join(f.data for f in frames))
    box = mailbox.mbox(path, create=False)
    try:
        assert len(box) == len(files)
    finally:
        box.close()
