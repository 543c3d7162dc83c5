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


def test_html_goes_through_a_parser_not_a_regex() -> None:
    raw = (b"Subject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><title>T</title><style>.x{font-family:Verdana}</style></head>"
           b"<body><p title='a > b'>Gr&uuml;&szlig;e &amp; mehr</p><script>var secret=1</script>"
           b"<!-- hidden comment --><p>zweiter Absatz</p></body></html>\r\n")
    body = summarize(raw).body
    assert body == "Grüße & mehr\n\nzweiter Absatz"
    for hidden in ("Verdana", "secret", "hidden comment", "title", "a > b"):
        assert hidden not in body


def test_attachments_are_counted_and_bodies_of_files_never_indexed() -> None:
    big = b"QUFB" * 250_000  # a 1 MB base64 attachment
    raw = (b"Subject: files\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n"
           b"preamble\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
           b"--i\r\nContent-Type: text/plain\r\n\r\nthe text\r\n"
           b"--i\r\nContent-Type: text/html\r\n\r\n<p>the html</p>\r\n--i--\r\n"
           b"--o\r\nContent-Type: application/pdf; name=a.pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + big + b"\r\n"
           b"--o\r\nContent-Type: text/plain; name=notes.txt\r\n"
           b"Content-Disposition: attachment; filename=\"=?utf-8?q?N=C3=B6tes.txt?=\"\r\n\r\n"
           b"attached text\r\n--o\r\nContent-Type: image/png\r\nContent-ID: <img1>\r\n\r\nPNG\r\n")
    s = summarize(raw)  # no closing boundary: the last part runs to the end
    assert s.attachments == 3
    assert s.body == "the text"
    from migrate.formats import mime

    parts = mime.walk(raw)
    assert [p.content_type for p in parts] == ["text/plain", "text/html", "application/pdf",
                                               "text/plain", "image/png"]
    assert parts[3].filename == "Nötes.txt" and parts[4].content_id == "img1"
    assert mime.payload(raw, parts[2]) == b"AAA" * 250_000
    assert mime.payload(raw, parts[4]) == b"PNG\r\n"


def test_body_text_is_capped() -> None:
    from migrate.formats.summary import MAX_BODY_TEXT

    raw = b"Subject: long\r\n\r\n" + b"word " * (MAX_BODY_TEXT // 2)
    assert len(summarize(raw).body) == MAX_BODY_TEXT
