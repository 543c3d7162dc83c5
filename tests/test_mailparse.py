"""The index summary: right fields for real messages, never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from seeding import corpus_messages

from migrate.formats.summary import summarize


def test_plain_quoted_printable_and_base64_bodies() -> None:
    qp = (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <a@b>\r\n"
          b"From: =?utf-8?b?SsO8cmdlbg==?= <j@example.org>\r\nTo: x@y, z@w\r\nCc: c@d\r\n"
          b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
          b"\r\nK=C3=A4se und Br=C3=B6tchen\r\n")
    s = summarize(qp)
    assert (s.subject, s.msgid, s.from_addr) == ("Grüße", "<a@b>", "Jürgen <j@example.org>")
    assert s.to_addrs == "x@y, z@w, c@d"
    assert s.date == "2003-07-01T10:52:37+02:00"
    assert "Käse und Brötchen" in s.body
    b64 = (b"Subject: b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nS+RzZQ==\r\n")
    assert summarize(b64).body == "Käse"


def test_multipart_prefers_plain_text_and_skips_attachments() -> None:
    raw = (b"Subject: m\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: text/html\r\n\r\n<p>html version</p>\r\n--B\r\n"
           b"Content-Type: text/plain\r\n\r\nplain version\r\n--B\r\n"
           b"Content-Type: application/octet-stream\r\n\r\nBINARYBLOB\r\n--B--\r\n")
    body = summarize(raw).body
    assert "plain version" in body and "BINARYBLOB" not in body and "html" not in body


def test_every_corpus_message_summarises() -> None:
    with_subject = 0
    for _, raw in corpus_messages():
        s = summarize(raw)
        with_subject += bool(s.subject)
    assert with_subject > 150


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    summarize(raw)
    summarize(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + raw)
    summarize(b"Content-Transfer-Encoding: base64\r\n\r\n" + raw)
