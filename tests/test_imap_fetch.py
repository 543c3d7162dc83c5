"""The lean FETCH parser gives what imapclient's parser gives, for every shape.

``migrate.stores.imap_fetch.parse_fetch`` reads the common shapes itself and
hands every other one to imapclient; either way the result must be the one
``IMAPClient.fetch`` would return. Responses are built the way imaplib stores
them (``(text ending in {n}, literal)`` pairs, then the text after the last
literal), with items in any order, bodies of any bytes, and the unusual shapes
that must take the fallback.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from migrate.stores.imap_fetch import parse_fetch, uid_set

# X-GM-LABELS as Google's extension page shows them: system labels and simple user
# labels as atoms, others quoted (with escapes), modified UTF-7 for other scripts
LABELS = [b"\\Inbox", b"\\Sent", b"\\Important", b"\\Starred", b"Important", b"Work",
          b'"Muy Importante"', b'"say \\"hi\\" (now)"', b'"back\\\\slash"', b"&AOQ-nderung",
          b'"Privat/&ANw-nter"', b'""']
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FLAGS = [b"\\Seen", b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"\\Recent",
         b"$Forwarded", b"$MDNSent", b"Junk", b"$label1", b"NonJunk"]


def imap_date(d: datetime) -> bytes:
    """RFC 3501 date-time, e.g. ' 4-Mar-2021 05:06:07 +0100' (day padded with a space)."""
    off = int(d.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    sign = "+" if off >= 0 else "-"
    return (f'"{d.day:2d}-{MONTHS[d.month - 1]}-{d.year} {d:%H:%M:%S} '
            f'{sign}{abs(off) // 60:02d}{abs(off) % 60:02d}"').encode()


dates = st.builds(
    lambda ts, minutes: datetime.fromtimestamp(ts, timezone(timedelta(minutes=minutes))),
    st.integers(0, 4_000_000_000), st.sampled_from([0, 60, -300, 330, 345, -570, 840]))

# (name, rendered item, literal or None); a literal item ends its text segment
items = st.one_of(
    st.integers(1, 2**32 - 1).map(lambda u: ("UID", b"UID %d" % u, None)),
    st.lists(st.sampled_from(FLAGS), unique=True, max_size=5).map(
        lambda fs: ("FLAGS", b"FLAGS (" + b" ".join(fs) + b")", None)),
    dates.map(lambda d: ("INTERNALDATE", b"INTERNALDATE " + imap_date(d), None)),
    st.integers(0, 10**9).map(lambda n: ("RFC822.SIZE", b"RFC822.SIZE %d" % n, None)),
    st.integers(1, 2**63 - 1).map(lambda n: ("MODSEQ", b"MODSEQ (%d)" % n, None)),
    st.binary(max_size=300).map(lambda b: ("BODY[]", b"BODY[] {%d}" % len(b), b)),
    st.just(("BODY[]", b"BODY[] NIL", None)),
    st.integers(1, 2**63 - 1).map(lambda n: ("X-GM-MSGID", b"X-GM-MSGID %d" % n, None)),
    st.integers(1, 2**63 - 1).map(lambda n: ("X-GM-THRID", b"X-GM-THRID %d" % n, None)),
    st.lists(st.sampled_from(LABELS), max_size=5).map(
        lambda ls: ("X-GM-LABELS", b"X-GM-LABELS (" + b" ".join(ls) + b")", None)),
)

# shapes the lean parser does not read; imapclient's parser must answer for them
unusual = st.one_of(
    st.just(("X", b'BODY[] "short quoted body"', None)),
    st.just(("X", b"X-GM-MSGID -12", None)),
    st.just(("X", b"uid 77", None)),
    st.just(("X", b"FLAGS (\\Seen 123)", None)),
    st.just(("X", b"FLAGS (NIL)", None)),
    st.just(("X", b"INTERNALDATE NIL", None)),
    st.binary(max_size=50).map(lambda b: ("X", b"BODY[HEADER.FIELDS (SUBJECT)] {%d}" % len(b), b)),
    st.just(("X", b"RFC822.SIZE  12", None)),
)


def render(seq: int, uid: int, parts: list[tuple[str, bytes, bytes | None]]) -> list[object]:
    """One response as imaplib stores it (the UID item first or anywhere else)."""
    out: list[object] = []
    text = b"%d (" % seq
    for i, (_, item, literal) in enumerate(parts):
        text += (b" " if i else b"") + item
        if literal is not None:
            out.append((text, literal))
            text = b""
    out.append(text + b")")
    return out


@st.composite
def responses(draw: st.DrawFn, shapes: st.SearchStrategy) -> tuple[list[object], set[int]]:
    data: list[object] = []
    uids: list[int] = []
    for seq in range(1, draw(st.integers(1, 6)) + 1):
        uid = draw(st.integers(1, 40))
        uids.append(uid)
        parts = draw(st.lists(shapes, max_size=6))
        parts = [p for p in parts if p[0] != "UID"]
        parts.insert(draw(st.integers(0, len(parts))), ("UID", b"UID %d" % uid, None))
        data.extend(render(seq, uid, parts))
    wanted = set(draw(st.lists(st.sampled_from(uids), max_size=len(uids))))
    return data, wanted


def imapclient_result(data: list[object], wanted: set[int]) -> dict[int, dict[bytes, object]]:
    parsed = parse_fetch_response(data, False, True)
    return {uid: values for uid, values in parsed.items() if uid in wanted}


@settings(max_examples=400, deadline=None)
@given(responses(items))
def test_common_shapes_parse_as_imapclient_parses_them(case):
    data, wanted = case
    assert parse_fetch(data, wanted) == imapclient_result(data, wanted)


@settings(max_examples=300, deadline=None)
@given(responses(st.one_of(items, unusual)))
def test_unusual_shapes_fall_back_to_imapclient(case):
    data, wanted = case
    assert parse_fetch(data, wanted) == imapclient_result(data, wanted)


def test_a_body_literal_is_returned_as_read_not_copied():
    body = b"Subject: x\r\n\r\n" + b"y" * 100_000
    got = parse_fetch([(b"1 (UID 9 FLAGS (\\Seen) BODY[] {%d}" % len(body), body), b")"], {9})
    assert got[9][b"BODY[]"] is body
    assert got[9][b"FLAGS"] == (b"\\Seen",)


def test_the_lean_path_reads_dovecots_shape_without_falling_back(monkeypatch):
    import migrate.stores.imap_fetch as module

    def no_fallback(*args: object) -> object:
        raise AssertionError("fell back to imapclient's parser")

    monkeypatch.setattr(module, "parse_fetch_response", no_fallback)
    data = [(b'3 (UID 12 FLAGS (\\Seen $Forwarded) INTERNALDATE " 4-Mar-2021 05:06:07 +0100" '
             b"BODY[] {5}", b"hello"), b")", b"4 (UID 13 RFC822.SIZE 2048)",
            b"5 (UID 14 MODSEQ (77) FLAGS ())"]
    got = parse_fetch(data, {12, 13, 14})
    assert got[12][b"BODY[]"] == b"hello"
    assert got[12][b"INTERNALDATE"].isoformat() == "2021-03-04T05:06:07+01:00"
    assert got[13] == {b"SEQ": 4, b"RFC822.SIZE": 2048}
    assert got[14] == {b"SEQ": 5, b"MODSEQ": (77,), b"FLAGS": ()}


def test_responses_without_uid_or_for_other_messages_are_dropped():
    """An unsolicited FLAGS update carries no UID (RFC 3501 §7.4.2): it is not filed
    under a UID equal to its sequence number, as imapclient's parser would."""
    data = [b"7 (FLAGS (\\Deleted))", b"8 (UID 99 FLAGS (\\Seen))", b"1 (UID 7 RFC822.SIZE 10)"]
    assert parse_fetch(data, {7}) == {7: {b"SEQ": 1, b"RFC822.SIZE": 10}}


def test_malformed_responses_raise_imapclients_protocol_error():
    import pytest
    from imapclient.exceptions import IMAPClientError

    for data in ([b"1 (UID 7 FLAGS (\\Seen)"], [b"x (UID 7)"], [(b"1 (UID 7 BODY[] {3}", b"abc")]):
        with pytest.raises(IMAPClientError):
            parse_fetch(data, {7})


def test_uid_set_compresses_runs():
    assert uid_set([5, 1, 2, 3, 3, 9, 10, 12]) == b"1:3,5,9:10,12"
    assert uid_set([42]) == b"42"
    assert uid_set(range(1, 2001)) == b"1:2000"


def test_gmail_labels_that_look_like_numbers_or_nil_stay_labels():
    """imapclient reads the atom ``2019`` as a number and ``NIL`` as None; as labels
    (astrings, per Google's X-GM-LABELS) they are text, and come back as they were."""
    from migrate.folders import make_folder
    from migrate.stores.imap import gmail_meta

    data = [b'1 (UID 9 X-GM-MSGID 77 X-GM-LABELS (2019 007 NIL "NIL" \\Inbox))']
    parsed = parse_fetch(data, {9})[9]
    assert parsed[b"X-GM-LABELS"] == (b"2019", b"007", b"NIL", b"NIL", b"\\Inbox")
    via_imapclient = imapclient_result(data, {9})[9]
    all_mail = make_folder("[Gmail]/All Mail", "/", ["\\HasNoChildren", "\\All"])
    for values in (parsed, via_imapclient):
        assert gmail_meta(all_mail, values)[1] == ("2019", "007", "NIL", "\\Inbox")
