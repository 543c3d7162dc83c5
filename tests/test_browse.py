"""`mailmigrate search` and `show` on an archive made by a real backup from Dovecot."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli
from seeding import append, create_folder, imap_login

from migrate.archive.browse import fts_expression

INVOICE = (b"Message-ID: <inv@browse.test>\r\nFrom: Alice Example <alice@example.org>\r\n"
           b"To: bob@example.org\r\nSubject: Invoice 2024-01 for Projekt\r\n"
           b"Date: Mon, 15 Jan 2024 10:00:00 +0100\r\n\r\n"
           b"Please pay the invoice by Friday.\r\nFrom now on we bill monthly.\r\n")
REPORT = (b"Message-ID: <rep@browse.test>\r\nFrom: Bob <bob@example.org>\r\n"
          b"To: Carol <carol@example.net>\r\nSubject: numbers\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
          b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
          b"quarterly numbers attached\r\n"
          b"--XYZ\r\nContent-Type: application/pdf; name=report.pdf\r\n"
          b"Content-Disposition: attachment; filename=report.pdf\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--XYZ--\r\n")
ROOMS = (b"Message-ID: <rooms@browse.test>\r\nFrom: alice@example.org\r\nTo: team@example.org\r\n"
         b"Subject: =?utf-8?q?R=C3=A4ume_buchen?=\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: text/html; charset=utf-8\r\n\r\n"
         b"<html><body><p>Meeting <b>room</b> booking</p></body></html>\r\n")
# Raw 8-bit Latin-1 headers, the German case version 1 indexed as U+FFFD.
KOELN = ("Message-ID: <koeln@browse.test>\r\nFrom: Jürgen Müller <j@example.de>\r\n"
         "To: Empfänger <e@example.de>\r\nSubject: Grüße aus Köln\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
         "\r\nDas Straßenfest ist abgesagt.\r\n").encode("latin-1")
JAN = datetime(2024, 1, 15, 9, 0, tzinfo=UTC)
JUN = datetime(2023, 6, 1, 12, 0, tzinfo=UTC)
MAR = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def archives(dovecot, tmp_path_factory) -> dict[str, Path]:
    """One account backed up into a SQLite archive and an mbox tree."""
    user = dovecot.add_user()
    client = imap_login(dovecot, user)
    try:
        for name in ("Work/2024", "Archive"):
            create_folder(client, name, parents=True)
        append(client, "INBOX", INVOICE, ("\\Seen",), JAN)
        append(client, "INBOX", REPORT, ("\\Flagged",), JUN)
        append(client, "Work/2024", ROOMS, (), MAR)
        append(client, "Archive", INVOICE, ("\\Seen", "$Forwarded"), JAN)
        append(client, "Archive", KOELN, (), MAR)
    finally:
        client.logout()
    base = tmp_path_factory.mktemp("browse")
    out = {"sqlite": base / "mail.sqlite", "tree": base / "tree"}
    for path in out.values():
        result = run_cli(*backup_args(dovecot, user, path), password=user.password)
        assert result.code == 0, result.err
    return out


def search(archive: Path, *args: str) -> list[dict]:
    result = run_cli("search", str(archive), *args, "--json")
    assert result.code == 0, result.err
    payload = result.json()
    assert payload["count"] == len(payload["results"])
    return payload["results"]


def test_search_words_columns_folders_and_dates(archives):
    db = archives["sqlite"]
    hits = search(db, "invoice")
    # The same message in two folders: two placements, two IDs.
    assert sorted(h["folder"] for h in hits) == ["Archive", "INBOX"]
    assert len({h["id"] for h in hits}) == 2
    assert all(h["msgid"] == "<inv@browse.test>" for h in hits)
    assert [h["folder"] for h in search(db, "invoice", "--folder", "Archive")] == ["Archive"]
    # Words with FTS5 punctuation are taken literally; every word must occur.
    assert {h["folder"] for h in search(db, "invoice 2024-01")} == {"INBOX", "Archive"}
    assert search(db, "invoice quarterly") == []
    assert [h["msgid"] for h in search(db, "quarter*")] == ["<rep@browse.test>"]
    # HTML body text is indexed without its tags; the subject decoded.
    assert [h["subject"] for h in search(db, "room booking")] == ["Räume buchen"]
    assert [h["msgid"] for h in search(db, "", "--from", "bob@")] == ["<rep@browse.test>"]
    assert [h["msgid"] for h in search(db, "", "--to", "carol")] == ["<rep@browse.test>"]
    assert [h["folder"] for h in search(db, "", "--subject", "Räume")] == ["Work/2024"]
    assert [h["folder"] for h in search(db, "", "--folder", "Work")] == ["Work/2024"]
    # Dates are the INTERNALDATE day, as IMAP SEARCH SINCE/BEFORE.
    assert {h["msgid"] for h in search(db, "", "--before", "2024-01-01")} == {"<rep@browse.test>"}
    since = search(db, "", "--since", "2024-01-15", "--before", "2024-03-01")
    assert sorted(h["folder"] for h in since) == ["Archive", "INBOX"]
    flags = {h["folder"]: h["flags"] for h in search(db, "invoice")}
    assert flags == {"INBOX": ["\\Seen"], "Archive": ["$Forwarded", "\\Seen"]}
    # --fts passes FTS5 syntax through
    assert {h["msgid"] for h in search(db, "invoice OR quarterly", "--fts")} == \
        {"<inv@browse.test>", "<rep@browse.test>"}


def test_german_raw_8bit_headers_are_searchable_everywhere(archives):
    """search, sqlite-utils search and plain SQL on the mail view find the same message."""
    db = archives["sqlite"]
    for words in ("Köln", "Empfänger", "Jürgen", "Straßenfest", "koln"):
        [hit] = search(db, words)
        assert hit["subject"] == "Grüße aus Köln" and hit["from_addr"] == \
            "Jürgen Müller <j@example.de>", words
    [hit] = search(db, "", "--to", "Empfänger")
    assert hit["to_addrs"] == "Empfänger <e@example.de>"
    done = subprocess.run(["sqlite-utils", "search", str(db), "messages", "Empfänger",
                           "-c", "id", "-c", "subject"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["subject"] == "Grüße aus Köln"
    conn = sqlite3.connect(db)
    try:
        # The mail view's id is the ID search prints; message_id is the content row.
        view = conn.execute('SELECT id, folder, "from", "to", subject, flags, attachments,'
                            " message_id FROM mail WHERE id = ?", (hit["id"],)).fetchone()
    finally:
        conn.close()
    assert view == (hit["id"], "Archive", "Jürgen Müller <j@example.de>",
                    "Empfänger <e@example.de>", "Grüße aus Köln", None, 0, row["id"])
    shown = run_cli("show", str(db), str(hit["id"]))
    assert "Subject: Grüße aus Köln" in shown.out and "To: Empfänger <e@example.de>" in shown.out


def test_search_limit_and_plain_output(archives):
    db = archives["sqlite"]
    limited = run_cli("search", str(db), "", "--limit", "2", "--json").json()
    assert limited["count"] == 2 and limited["truncated"] is True
    plain = run_cli("search", str(db), "invoice")
    assert plain.code == 0
    lines = plain.out.splitlines()
    assert len(lines) == 2 and all("Invoice 2024-01 for Projekt" in line for line in lines)
    none = run_cli("search", str(db), "nosuchwordanywhere")
    assert none.code == 0 and none.out == "" and "no messages match" in none.err


def test_show_by_search_id(archives, dovecot):
    db = archives["sqlite"]
    [hit] = search(db, "quarterly")
    shown = run_cli("show", str(db), str(hit["id"]), "--json")
    assert shown.code == 0, shown.err
    info = shown.json()
    assert info["folder"] == "INBOX" and info["flags"] == ["\\Flagged"]
    assert info["headers"]["From"] == "Bob <bob@example.org>"
    assert info["headers"]["To"] == "Carol <carol@example.net>"
    assert info["body"].strip() == "quarterly numbers attached"
    assert info["id"] == hit["id"] and isinstance(info["id"], int)
    assert info["attachments"] == [{"number": 1, "filename": "report.pdf",
                                    "content_type": "application/pdf", "size": 15}]
    assert datetime.fromisoformat(info["internaldate"]) == JUN
    [rooms] = search(db, "room")
    text = run_cli("show", str(db), str(rooms["id"]))
    assert text.code == 0, text.err
    assert "Subject: Räume buchen" in text.out and "Meeting room booking" in text.out
    assert "<b>" not in text.out
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT m.raw FROM folder_messages fm JOIN messages m"
                              " ON m.id = fm.message_id WHERE fm.id = ?", (hit["id"],)).fetchone()
    finally:
        conn.close()
    assert bytes(stored[0]) == REPORT


def test_show_raw_is_byte_exact(archives):
    db = archives["sqlite"]
    [hit] = search(db, "quarterly")
    done = subprocess.run([sys.executable, "-m", "migrate", "show", str(db), str(hit["id"]),
                           "--raw"], capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout == REPORT


def test_mbox_tree_show_works_search_says_what_to_do(archives):
    from migrate.model import Folder
    from migrate.stores.mbox_archive import MboxArchive

    tree = archives["tree"]
    refused = run_cli("search", str(tree), "invoice")
    assert refused.code == 2
    assert "needs a SQLite archive" in refused.err and "mailmigrate backup" in refused.err
    store = MboxArchive(tree, readonly=True)
    try:
        [ref] = list(store.message_refs(Folder("Work/2024")))
    finally:
        store.close()
    shown = run_cli("show", str(tree), ref.key, "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["folder"] == "Work/2024"
    assert shown.json()["headers"]["Subject"] == "Räume buchen"


def test_bad_input_exits_2(archives):
    db = archives["sqlite"]
    for args in (("show", str(db), "999999"), ("show", str(db), "abc"),
                 ("search", str(db), "AND OR (", "--fts"), ("search", str(db), "", "--since", "x"),
                 ("search", str(db), "", "--limit", "-1")):
        result = run_cli(*args)
        assert result.code == 2, (args, result.out, result.err)
        assert result.err.startswith("mailmigrate: error:") and "Traceback" not in result.err


def test_fts_expression_quotes_words():
    assert fts_expression('a-b "c" d*') == '"a-b" """c""" "d"*'
    assert fts_expression("  ") == ""
    assert fts_expression("x OR y", raw=True) == "x OR y"


def test_show_never_fails_on_real_world_messages(corpus):
    """Malformed headers, odd charsets, broken MIME: show still prints what it can."""
    from migrate.archive.browse import describe
    from migrate.model import Folder, Message

    with_body = 0
    for name, raw in corpus:
        shown = describe("1", Folder("INBOX"), Message(key="1", raw=raw))
        assert shown.size == len(raw), name
        with_body += bool(shown.body.strip())
    assert with_body > len(corpus) * 0.8
