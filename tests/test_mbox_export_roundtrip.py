"""A single-file export (``export ARCHIVE FILE.mbox``) read back by the foreign mbox reader
with nothing to pass: bytes, flags and INTERNALDATE of every message, while other mbox
readers (Python's ``mailbox``) still see an ordinary mbox with Status flags."""

from __future__ import annotations

import email
import mailbox
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seeding import corpus_index, corpus_messages
from test_mboxrd import messages as tricky_messages

from migrate.formats import mboxrd
from migrate.model import Folder, FolderCheckpoint, Message
from migrate.stores.export_stores import MboxFileDestination
from migrate.stores.foreign_mbox import ForeignMbox

FLAG_SETS: list[tuple[str, ...]] = [
    (), ("\\Seen",), ("\\Seen", "$Forwarded"), ("\\Flagged", "\\Answered", "Projekt-X"),
    ("\\Draft",), ("\\Seen", "\\Deleted"), ("$label1", "Junk", "\\Seen", "\\Answered", "\\Flagged"),
]
DATES = [datetime(1994, 7, 1, 8, 30, tzinfo=timezone(timedelta(hours=-7))),
         datetime(2003, 12, 31, 23, 59, 59, tzinfo=UTC),
         datetime(2012, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         datetime(1970, 1, 1, tzinfo=UTC)]
LETTERS = {"\\Seen": "R", "\\Answered": "A", "\\Flagged": "F", "\\Draft": "T", "\\Deleted": "D"}

# Messages that stress exactly what the marker and the status lines must carry.
ODD: list[tuple[bytes, tuple[str, ...], datetime | None]] = [
    (b"", ("\\Seen",), DATES[1]),  # empty
    (b"\n", (), DATES[1]),  # a lone newline
    (b"Subject: no newline at all", (), DATES[1]),
    (b"Subject: crlf\r\n\r\nlast line without one", ("\\Flagged",), DATES[0]),
    (b"Subject: crlf\r\n\r\nends with a bare CR\r", (), DATES[0]),
    (b"Subject: mixed\n\r\nbody\r\n\n", (), DATES[0]),
    (b"\r\n\r\n", (), DATES[0]),  # only blank lines, CRLF
    (b"Status: O\nX-Status: \nX-Keywords: mine\nSubject: own status lines\n\nx\n", ("\\Seen",), DATES[2]),
    (b"Status: RO\nX-Status:\nX-Keywords:\nSubject: looks like ours\n\nx\n", (), DATES[2]),
    (b" continued first line\nSubject: odd start\n\nbody\n", (), DATES[2]),
    (b"From someone@example.com Mon Jan  2 15:04:05 2006\nSubject: envelope inside\n\n"
     b"From here\n>From there\n>>From everywhere\n", ("\\Answered",), DATES[2]),
    (b"From x", (), DATES[2]),
    (b"Subject: odd keywords\n\nx\n", ("a,b", "50%", "caf\u00e9", "sp ace", "tab\t", "\\Recent",
                                         "\\SEEN", "x%41"), DATES[3]),
    (b"Subject: no INTERNALDATE\n\nx\n", ("\\Seen",), None),
    (b"Subject: NUL and 8-bit\n\n\x00\xff\xfe\n", (), DATES[1]),
]


def write_export(path: Path, msgs: Sequence[Message], folders: int = 1) -> None:
    """What ``export`` does: one destination, messages added folder by folder, then finish."""
    dest = MboxFileDestination(path)
    try:
        step = max(1, len(msgs) // folders)
        for i in range(0, len(msgs), step):
            dest.add_messages(Folder(f"F{i}"), msgs[i:i + step])
        dest.finish()
    finally:
        dest.close()


def read_back(path: Path, framing: str = "auto") -> tuple[ForeignMbox, list[Message]]:
    box = ForeignMbox(path, framing)
    got: list[Message] = []
    for folder in box.list_folders():
        got.extend(box.fetch(folder, list(box.list_new(folder, FolderCheckpoint()))))
    got.sort(key=lambda m: int(m.key))
    return box, got


def as_read(msgs: Sequence[Message]) -> list[tuple[bytes, tuple[str, ...], datetime | None]]:
    return [(m.raw, tuple(sorted(set(m.flags))), m.internaldate) for m in msgs]


def corpus_as_exported() -> list[Message]:
    """Every corpus message as it is, and as Dovecot gives it (CRLF), with flags and dates."""
    msgs: list[Message] = []
    for i, (_, raw) in enumerate(corpus_messages()):
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        for j, variant in enumerate((raw, crlf)):
            n = 2 * i + j
            msgs.append(Message(key=str(n), raw=variant, flags=FLAG_SETS[n % len(FLAG_SETS)],
                                internaldate=DATES[n % len(DATES)]))
    return msgs


@pytest.fixture(scope="module")
def corpus_export(tmp_path_factory) -> tuple[Path, list[Message]]:
    msgs = corpus_as_exported()
    msgs += [Message(key=f"odd{i}", raw=raw, flags=flags, internaldate=when)
             for i, (raw, flags, when) in enumerate(ODD)]
    path = tmp_path_factory.mktemp("mbox-export") / "all.mbox"
    write_export(path, msgs, folders=5)
    return path, msgs


def test_every_corpus_message_comes_back_exact_with_flags_and_date(corpus_export):
    path, msgs = corpus_export
    index = corpus_index()
    # The corpus has what the marker must carry: no final newline, CRLF, mixed, From lines.
    assert sum(row["ends_with_newline"] == "n" for row in index.values()) == 31
    assert {row["line_endings"] for row in index.values()} >= {"LF", "CRLF"}
    assert any(row["from_line_in_body"] == "y" for row in index.values())
    assert any(row["gt_from_line_in_body"] == "y" for row in index.values())
    box, got = read_back(path)
    try:
        assert box.framing == "mboxrd" and "written by mailmigrate export" in box.description
        assert box.exported == len(msgs) and box.changed == 0
        assert [f.name for f in box.list_folders()] == ["all"]
        assert len(got) == len(msgs)
        for want, have in zip(as_read(msgs), as_read(got), strict=True):
            assert have == want
    finally:
        box.close()


def test_the_same_with_mbox_format_mboxrd_as_the_readme_used_to_say(corpus_export):
    path, msgs = corpus_export
    box, got = read_back(path, "mboxrd")
    try:
        assert as_read(got) == as_read(msgs)
    finally:
        box.close()


def test_python_mailbox_reads_the_export_with_status_flags(corpus_export):
    path, msgs = corpus_export
    box = mailbox.mbox(path)
    ids = 0
    try:
        assert len(box) == len(msgs)
        for want, have in zip(msgs, box.values(), strict=True):
            letters = set(have.get_flags())
            wanted = {LETTERS[f] for f in want.flags if f in LETTERS} | {"O"}
            assert letters == wanted, want.key
            if want.internaldate is not None:
                assert mboxrd.asctime(want.internaldate) in have.get_from()
            # The message's own headers still parse as they did without ours in front
            # (not so for a first line that is a 'From ' line or a continuation).
            if not want.raw.startswith((b"From ", b" ", b"\t")):
                assert have["Message-ID"] == email.message_from_bytes(want.raw)["Message-ID"], want.key
                ids += have["Message-ID"] is not None
        assert ids > 200
    finally:
        box.close()
    # mailbox's own view of the bytes: ours plus the three lines, LF line ends.
    seen = mailbox.mbox(path)
    try:
        raw = seen.get_bytes(0)
        assert raw.startswith(b"Status: O\nX-Status:\nX-Keywords:\n")
    finally:
        seen.close()


def test_unmarked_mboxo_file_reads_as_before(tmp_path):
    """No marker: framing is guessed exactly as it always was, '>From ' lines stay."""
    path = tmp_path / "plain.mbox"
    path.write_bytes(b"From a@b Mon Jan  2 15:04:05 2006\nStatus: RO\nX-Status: F\nSubject: one\n\n"
                     b">From the start\nFrom\n\n"
                     b"From a@b Mon Jan  2 15:04:06 2006\nSubject: two\n\nplain\n")
    box, got = read_back(path)
    try:
        assert box.framing == "mboxo" and "'>From ' lines" in box.description
        assert box.exported == 0 and "mailmigrate export" not in box.description
        assert got[0].raw == (b"Status: RO\nX-Status: F\nSubject: one\n\n>From the start\nFrom\n")
        assert got[0].flags == ("\\Flagged", "\\Seen")
        assert got[1].raw == b"Subject: two\n\nplain\n"
    finally:
        box.close()


def test_marker_without_our_status_lines_is_read_as_it_stands(tmp_path):
    """A mail client rewrote the header (mutt moves Status to its end): nothing is taken off."""
    path = tmp_path / "touched.mbox"
    write_export(path, [Message(key="1", raw=b"Subject: a\n\n>From x\n", flags=("\\Seen",),
                                internaldate=DATES[1]),
                        Message(key="2", raw=b"Subject: b\r\n\r\nbody", flags=("\\Flagged",),
                                internaldate=DATES[1])])
    data = path.read_bytes()
    data = data.replace(b"Status: RO\nX-Status:\nX-Keywords:\nSubject: a\n",
                        b"Subject: a\nStatus: RO\nX-Status: A\n", 1)
    path.write_bytes(data)
    box, got = read_back(path)
    try:
        assert box.framing == "mboxrd" and box.exported == 1 and box.changed == 1
        assert "changed by a mail client" in box.description
        # Still unquoted as mboxrd (the marker says who quoted it); flags from its headers now.
        assert got[0].raw == b"Subject: a\nStatus: RO\nX-Status: A\n\n>From x\n"
        assert got[0].flags == ("\\Answered", "\\Seen")
        assert got[0].internaldate == DATES[1]
        assert (got[1].raw, got[1].flags) == (b"Subject: b\r\n\r\nbody", ("\\Flagged",))
    finally:
        box.close()


def test_status_lines_must_be_exactly_ours(tmp_path):
    """Lines we would not have written (order, case, spacing, escapes) are not taken off."""
    for lines in (b"Status: O\nX-Status: FA\nX-Keywords:\n",  # letters out of order
                  b"Status: O\nX-Status:\nX-Keywords: b a\n",  # keywords unsorted
                  b"Status: O\nX-Status:\nX-Keywords: a a\n",  # duplicate
                  b"Status: O\nX-Status: \nX-Keywords:\n",  # trailing space
                  b"Status: O\nX-Status:\nX-Keywords: %41\n",  # needless escape
                  b"Status: O\nX-Status:\nX-Keywords: %4\n",  # broken escape
                  b"status: O\nX-Status:\nX-Keywords:\n",
                  b"Status: O\r\nX-Status:\r\nX-Keywords:\r\n"):
        assert mboxrd.parse_status_lines(lines + b"Subject: x\n") is None, lines
    assert mboxrd.parse_status_lines(b"Status: RO\nX-Status: AFTD\nX-Keywords: %25 a,b\nS: x\n") == (
        len(b"Status: RO\nX-Status: AFTD\nX-Keywords: %25 a,b\n"),
        ("%", "\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen", "a,b"))
    for line in (b"From mailmigrate-export@localhost Mon Jan  2 15:04:05 2006\r\n",
                 b"From mailmigrate-export+nonl+crlf@localhost Mon Jan  2 15:04:05 2006\n",
                 b"From mailmigrate-export+x@localhost Mon Jan  2 15:04:05 2006\n",
                 b"From mailmigrate-export@localhost  Mon Jan  2 15:04:05 2006\n",
                 b"From mailmigrate-export@example.com Mon Jan  2 15:04:05 2006\n",
                 b"From mailmigrate-export@localhost Mon Jan  2 15:04:05 2006 +0000\n"):
        assert mboxrd.parse_export_mark(line) is None, line
    assert mboxrd.parse_export_mark(
        b"From mailmigrate-export+raw+nonl+nodate@localhost Mon Jan  2 15:04:05 2006\n"
    ) == mboxrd.ExportMark(eol=mboxrd.EOL_RAW, newline_added=True, dated=False)


def test_other_messages_appended_keep_their_own_framing(tmp_path):
    """``cat export.mbox thunderbird.mbox``: ours exact, theirs guessed from theirs alone."""
    ours = [Message(key="1", raw=b"Subject: ours\r\n\r\n>From a\r\nFrom b\r\n", flags=("\\Draft",),
                    internaldate=DATES[2])]
    path = tmp_path / "both.mbox"
    write_export(path, ours)
    theirs = (b"From - Mon Jan  2 15:04:05 2006\nX-Mozilla-Status: 0005\nSubject: theirs\n\n"
              b">From mboxo, kept\n\n")
    path.write_bytes(path.read_bytes() + theirs)
    box, got = read_back(path)
    try:
        assert box.framing == "mboxo" and "1 messages carry mailmigrate's export marker" in box.description
        assert as_read(got[:1]) == as_read(ours)
        assert got[1].raw == b"X-Mozilla-Status: 0005\nSubject: theirs\n\n>From mboxo, kept\n"
        assert got[1].flags == ("\\Flagged", "\\Seen")
    finally:
        box.close()


def test_forced_mboxo_ignores_the_marker(tmp_path):
    path = tmp_path / "forced.mbox"
    write_export(path, [Message(key="1", raw=b"Subject: a\n\nFrom x\n", flags=("\\Seen",),
                                internaldate=DATES[1])])
    box, got = read_back(path, "mboxo")
    try:
        assert box.exported == 0
        assert got[0].raw == b"Status: RO\nX-Status:\nX-Keywords:\nSubject: a\n\n>From x\n"
        assert got[0].flags == ("\\Seen",)
    finally:
        box.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(tricky_messages(),
                          st.sets(st.one_of(st.sampled_from(sorted(LETTERS)), st.text(max_size=8))),
                          st.one_of(st.none(), st.datetimes(min_value=datetime(1970, 1, 1),
                                                            max_value=datetime(9999, 1, 1),
                                                            timezones=st.just(UTC)))),
                min_size=1, max_size=6))
def test_any_bytes_and_flags_round_trip(items):
    msgs = [Message(key=str(i), raw=raw, flags=tuple(flags),
                    internaldate=None if when is None else when.replace(microsecond=0))
            for i, (raw, flags, when) in enumerate(items)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.mbox"
        write_export(path, msgs)
        box, got = read_back(path)
        try:
            assert box.exported == len(msgs)
            want = [(raw, tuple(sorted(f for f in set(flags) if f)), when)
                    for raw, flags, when in as_read(msgs)]
            assert as_read(got) == want
        finally:
            box.close()
        other = mailbox.mbox(path)
        try:
            assert len(other) == len(msgs)
        finally:
            other.close()


def test_dovecots_mbox_driver_reads_the_export(dovecot, tmp_path):
    """An independent mbox reader: Dovecot's own mbox driver (via doveadm) sees every message
    and takes the system flags from our Status/X-Status lines.

    Where a message has a Status or X-Status header of its own, Dovecot merges it with
    ours (documented); our reader takes ours alone. Dovecot reads X-Keywords only for
    keywords declared in its own X-IMAPbase header, so keywords are not compared here.
    """
    user = dovecot.add_user()
    where = dovecot.mail_dir / f"mbox-{user.name}"
    where.mkdir(parents=True)
    path = where / "export.mbox"
    msgs = corpus_as_exported() + [Message(key=f"odd{i}", raw=raw, flags=flags, internaldate=when)
                                   for i, (raw, flags, when) in enumerate(ODD)]
    write_export(path, msgs)
    for p in (where, path):  # Dovecot opens it as its mail user (and rewrites its headers)
        os.chown(p, dovecot.uid, dovecot.gid)
    result = dovecot.doveadm("-f", "tab", "-o", f"mail_location=mbox:{where}:INBOX={path}:INDEX=MEMORY",
                             "fetch", "-u", user.name, "flags", "mailbox", "INBOX", "all")
    rows = result.stdout.splitlines()
    assert rows[0] == "flags" and len(rows) - 1 == len(msgs)
    merged = 0
    for msg, row in zip(msgs, rows[1:], strict=True):
        want = {f for f in msg.flags if f in LETTERS}
        got = set(row.split())
        if got != want:
            head = msg.raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
            assert want < got and (b"Status:" in head), (msg.key, want, got)
            merged += 1
    assert merged < 10


def test_a_message_with_its_own_x_gmail_labels_header_comes_back_whole(tmp_path):
    """The export adds Takeout's X-Gmail-Labels line only for a message with labels, and
    its From line says so (+labels): a message that begins with such a header of its own
    keeps it, with or without labels of its own (Hypothesis found the first case)."""
    own = b"X-Gmail-Labels: Work\nSubject: kept\n\nbody\n"
    msgs = [Message(key="0", raw=own), Message(key="1", raw=b"X-Gmail-Labels: \n\nx\n"),
            Message(key="2", raw=own, gid="7", labels=("Home",))]
    path = tmp_path / "g.mbox"
    write_export(path, msgs)
    assert path.read_bytes().count(b"+labels@localhost") == 1
    box, got = read_back(path)
    try:
        # one entry per frame (a labelled one is listed in each of its label folders)
        assert list({m.key: m.raw for m in got}.values()) == [m.raw for m in msgs]
        assert box.exported == 3
    finally:
        box.close()
