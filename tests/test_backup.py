"""`mailmigrate backup` against each real server (Dovecot, Cyrus): fidelity, incremental
runs, dedup."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, backup_args, run_cli
from proxy import TcpProxy
from seeding import (
    append,
    corpus_messages,
    create_folder,
    fetch_all,
    imap_login,
    list_folders,
    server_name,
)
from servers import stored

ARCHIVE_KINDS = ["archive.sqlite", "tree"]

FOLDERS = ["INBOX", "A/B/C", "Forschung & Entwicklung", "日本語", "Entwürfe", "Gesendet"]
KEYWORDS = [(), ("\\Seen",), ("\\Seen", "$Forwarded"), ("\\Flagged", "\\Answered", "Projekt-X"),
            ("\\Draft",), ("\\Seen", "\\Deleted")]
DATES = [datetime(1994, 7, 1, 8, 30, tzinfo=timezone(timedelta(hours=-7))),
         datetime(2003, 12, 31, 23, 59, 59, tzinfo=UTC),
         datetime(2012, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         datetime(2024, 6, 15, 6, 1, 2, tzinfo=timezone(timedelta(hours=2)))]


def big_message(megabytes: int = 3) -> bytes:
    blob = base64.encodebytes(os.urandom(megabytes * 1024 * 1024)).replace(b"\n", b"\r\n")
    return (b"Message-ID: <big@mailmigrate.test>\r\nSubject: big attachment\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--XX--\r\n")


EMPTY_BODY = b"Message-ID: <empty@mailmigrate.test>\r\nSubject: nothing here\r\n\r\n"


def seed_rich_account(server, user) -> int:
    """Nested, non-ASCII and special-use folders; the corpus (what the server keeps of it);
    an empty body; a big one."""
    client = imap_login(server, user)
    try:
        for name in ("A/B/C", "Forschung & Entwicklung", "日本語"):
            create_folder(client, name)  # Dovecot makes A and A/B \Noselect parents
        count = 0
        for i, (_, raw) in enumerate(corpus_messages()):
            if stored(server.kind, raw) is None:
                continue  # refused by this server (Cyrus: NUL, invalid header lines)
            append(client, FOLDERS[i % len(FOLDERS)], raw, KEYWORDS[i % len(KEYWORDS)],
                   DATES[i % len(DATES)])
            count += 1
        append(client, "INBOX", EMPTY_BODY, ("\\Seen",), DATES[0])
        append(client, "A/B/C", big_message(), ("$Forwarded",), DATES[1])
        return count + 2
    finally:
        client.logout()


def server_state(server, user, folders=None):
    """{folder: {uid: (raw, flags, internaldate)}} as the server has it right now."""
    client = imap_login(server, user)
    try:
        names = folders or [n for n, attrs in list_folders(client).items()
                            if b"\\Noselect" not in attrs]
        out = {}
        for name in names:
            out[name] = {uid: (raw, tuple(sorted(f.decode() for f in flags)), idate)
                         for uid, (raw, flags, idate) in fetch_all(client, name).items()}
        return out
    finally:
        client.logout()


def assert_archive_matches_server(archive: Path, server: dict) -> None:
    archived = archive_contents(archive)
    for folder, messages in server.items():
        got = archived.get(folder, {})
        assert set(got) == set(messages), f"{folder}: uids differ"
        for uid, (raw, flags, idate) in messages.items():
            a_raw, a_flags, a_date = got[uid]
            assert a_raw == raw, f"{folder} uid {uid}: bytes differ"
            assert tuple(sorted(a_flags)) == flags, f"{folder} uid {uid}: flags differ"
            assert a_date == idate, f"{folder} uid {uid}: INTERNALDATE differs"
            assert a_date is not None and a_date.tzinfo is not None


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_backup_is_byte_exact_with_flags_and_dates(server, account, tmp_path, kind):
    total = seed_rich_account(server, account)
    before = server_state(server, account)
    archive = tmp_path / kind
    result = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["new_messages"] == total
    assert summary["errors"] == []
    # BODY.PEEK[] from an EXAMINEd folder: the source's flags (\Seen!) are untouched.
    assert server_state(server, account) == before
    assert_archive_matches_server(archive, before)
    assert any(len(raw) > 3_000_000 for box in before.values() for raw, _, _ in box.values())
    assert any(raw == EMPTY_BODY for raw, _, _ in before["INBOX"].values())


def test_sqlite_schema_records_folder_tree(server, account, tmp_path):
    seed_rich_account(server, account)
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    conn = sqlite3.connect(archive)
    rows = {name: (delim, special, selectable, uidvalidity) for name, delim, special, selectable,
            uidvalidity in conn.execute(
                "SELECT name, delimiter, special_use, selectable, uidvalidity FROM folders")}
    placeholder = 0 if server.noselect_parents else 1  # Cyrus makes real parents
    assert rows["A"][2] == placeholder and rows["A/B"][2] == placeholder, "parents are recorded"
    assert rows["A/B/C"][2] == 1 and rows["A/B/C"][3] > 0
    assert rows["Gesendet"][1] == "\\Sent"
    assert rows["Entwürfe"][1] == "\\Drafts"
    assert rows["Papierkorb"][1] == "\\Trash"
    assert {"日本語", "Forschung & Entwicklung"} <= set(rows)
    assert all(delim == server.separator for delim, *_ in rows.values())
    # the index columns and the FTS are filled
    subject_hits = conn.execute(
        "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'attachment'").fetchone()[0]
    assert subject_hits >= 1
    sha_ok = conn.execute("SELECT COUNT(*) FROM messages WHERE size = length(raw)").fetchone()[0]
    assert sha_ok == conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    conn.close()


def test_same_message_in_two_folders_is_stored_once(server, account, tmp_path):
    raw = b"Message-ID: <twice@mailmigrate.test>\r\nSubject: twice\r\n\r\nhello\r\n"
    client = imap_login(server, account)
    create_folder(client, "Other")
    append(client, "INBOX", raw, ("\\Seen",), DATES[1])
    append(client, "Other", raw, ("\\Flagged",), DATES[2])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    conn = sqlite3.connect(archive)
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    placements = conn.execute(
        "SELECT f.name, fm.flags FROM folder_messages fm JOIN folders f ON f.id = fm.folder_id"
        " ORDER BY f.name").fetchall()
    assert placements == [("INBOX", '["\\\\Seen"]'), ("Other", '["\\\\Flagged"]')]


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_incremental_runs(server, account, tmp_path, kind):
    client = imap_login(server, account)
    create_folder(client, "Work")
    uids = [append(client, "INBOX", f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode(), (), DATES[1])
            for i in range(5)]
    append(client, "Work", b"Subject: w\r\n\r\nwork\r\n", ("\\Seen",), DATES[2])
    archive = tmp_path / kind
    first = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert first.code == 0 and first.json()["new_messages"] == 6
    second = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert second.code == 0
    assert second.json()["new_messages"] == 0 and second.json()["flags_updated"] == 0

    # new mail and a flag change are picked up
    append(client, "INBOX", b"Subject: new\r\n\r\nnew one\r\n", ("$Label1",), DATES[3])
    client.select_folder("INBOX")
    client.add_flags([uids[0]], ["\\Flagged", "$Important"])
    client.remove_flags([uids[0]], [])
    client.logout()
    third = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert third.code == 0, third.err
    assert third.json()["new_messages"] == 1
    assert third.json()["flags_updated"] == 1
    assert_archive_matches_server(archive, server_state(server, account))


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_noop_run_moves_no_message_bodies(server, account, tmp_path, kind):
    client = imap_login(server, account)
    for name in ("F1", "F2", "F3"):
        create_folder(client, name)
        for i in range(20):
            append(client, name, f"Subject: {name}-{i}\r\n\r\n{'x' * 2000}\r\n".encode(), (),
                   DATES[1])
    client.logout()
    archive = tmp_path / kind
    with TcpProxy(server.host, server.imap_port) as proxy:
        url = f"imap://{account.name}@127.0.0.1:{proxy.port}?tls=none"
        args = ["backup", url, str(archive), "--password-env", PASSWORD_ENV, "--json"]
        assert run_cli(*args, password=account.password).code == 0
        first_bytes = proxy.bytes_from_server
        assert first_bytes > 60 * 2000
        proxy.reset_counters()
        again = run_cli(*args, password=account.password)
        assert again.code == 0 and again.json()["new_messages"] == 0
        transcript = proxy.transcript_from_server
        assert b"BODY[" not in transcript and b"FETCH" not in transcript
        folders = again.json()["folders"]
        # greeting + capabilities + login + LIST + one STATUS per folder + logout
        assert proxy.bytes_from_server < 1500 + 250 * folders, proxy.bytes_from_server


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_uidvalidity_change_rescans_without_duplicates(server, account, tmp_path, kind):
    messages = [f"Subject: v{i}\r\nMessage-ID: <v{i}@t>\r\n\r\nbody {i}\r\n".encode()
                for i in range(6)]
    client = imap_login(server, account)
    create_folder(client, "Box")
    for raw in messages:
        append(client, "Box", raw, ("\\Seen",), DATES[1])
    archive = tmp_path / kind
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    # Recreate the folder: same messages, new UIDVALIDITY, plus one new message.
    client.delete_folder(server_name(client, "Box"))
    create_folder(client, "Box")
    for raw in [*messages, b"Subject: extra\r\n\r\nextra\r\n"]:
        append(client, "Box", raw, ("\\Flagged",), DATES[2])
    client.logout()
    result = run_cli(*backup_args(server, account, archive, "--json"),
                     password=account.password)
    assert result.code == 0, result.err
    state = server_state(server, account, ["Box"])
    assert_archive_matches_server(archive, state)
    if kind.endswith(".sqlite"):
        conn = sqlite3.connect(archive)
        assert conn.execute("SELECT COUNT(*) FROM folder_messages").fetchone()[0] == 7
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 7


def test_folder_filters_since_and_dry_run(server, account, tmp_path):
    client = imap_login(server, account)
    for name in ("Work", "Work/Old", "Private"):
        create_folder(client, name, parents=True)
    append(client, "Work", b"Subject: new\r\n\r\nx\r\n", (), DATES[3])
    append(client, "Work", b"Subject: old\r\n\r\nx\r\n", (), DATES[0])
    append(client, "Work/Old", b"Subject: o\r\n\r\nx\r\n", (), DATES[3])
    append(client, "Private", b"Subject: p\r\n\r\nx\r\n", (), DATES[3])
    client.logout()
    archive = tmp_path / "a.sqlite"

    dry = run_cli(*backup_args(server, account, archive, "--dry-run", "--json"),
                  password=account.password)
    assert dry.code == 0 and dry.json()["dry_run"] is True
    assert dry.json()["new_messages"] == 4
    assert not archive.exists(), "a dry run must not create the archive"

    some = run_cli(*backup_args(server, account, archive, "--folder", "Work", "--exclude",
                                "Work/Old", "--since", "2020-01-01", "--json"),
                   password=account.password)
    assert some.code == 0, some.err
    assert {f["folder"] for f in some.json()["per_folder"]} == {"Work"}
    contents = archive_contents(archive)
    assert [raw for raw, _, _ in contents["Work"].values()] == [b"Subject: new\r\n\r\nx\r\n"]
    # The next unfiltered run must still fetch what --since left out (the folder is partial).
    full = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert full.json()["new_messages"] == 3
    assert len(archive_contents(archive)["Work"]) == 2


def test_ls_lists_folders_counts_and_sizes(server, account, tmp_path):
    client = imap_login(server, account)
    create_folder(client, "日本語")
    pair = [b"Subject: a\r\n\r\n" + b"y" * 1000 + b"\r\n", b"Subject: b\r\n\r\nz\r\n"]
    for raw in pair:
        append(client, "日本語", raw, (), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    listing = run_cli("ls", str(archive), "--json")
    assert listing.code == 0
    rows = {r["folder"]: r for r in json.loads(listing.out)["folders"]}
    assert rows["日本語"]["messages"] == 2
    assert rows["日本語"]["bytes"] == sum(len(raw) for raw in pair)
    assert rows["Gesendet"]["special_use"] == "\\Sent"
    text = run_cli("ls", str(archive))
    assert "日本語" in text.out and "total" in text.out


def test_flag_changes_without_condstore_use_a_flags_only_fetch(server, account, tmp_path):
    """Servers without CONDSTORE: flags are compared by a FLAGS fetch, never by bodies."""
    from migrate.config.endpoints import PasswordSource, parse_endpoint
    from migrate.engine.transfer import transfer
    from migrate.stores.imap import ImapSource
    from migrate.stores.sqlite_archive import SqliteArchive

    client = imap_login(server, account)
    uids = [append(client, "INBOX", f"Subject: c{i}\r\n\r\nx\r\n".encode(), (), DATES[1])
            for i in range(4)]
    with TcpProxy(server.host, server.imap_port) as proxy:
        endpoint = parse_endpoint(f"imap://{account.name}@127.0.0.1:{proxy.port}?tls=none")

        def run_once() -> int:
            source = ImapSource(endpoint, PasswordSource.literal(account.password))
            source.condstore = False  # behave like a server without CONDSTORE
            archive = SqliteArchive(tmp_path / "a.sqlite")
            try:
                return transfer(source, archive).flags_updated
            finally:
                source.close()
                archive.close()

        assert run_once() == 0
        client.select_folder("INBOX")
        client.add_flags([uids[2]], ["\\Answered", "$Done"])
        proxy.reset_counters()
        assert run_once() == 1
        assert b"BODY[" not in proxy.transcript_from_server
    client.logout()
    assert_archive_matches_server(tmp_path / "a.sqlite", server_state(server, account, ["INBOX"]))


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_dry_run_on_an_existing_archive_counts_only_new_mail(server, account, tmp_path, kind):
    client = imap_login(server, account)
    create_folder(client, "Later")
    append(client, "INBOX", b"Subject: one\r\n\r\n1\r\n", (), DATES[1])
    archive = tmp_path / kind
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    append(client, "INBOX", b"Subject: two\r\n\r\n2\r\n", (), DATES[1])
    append(client, "Later", b"Subject: three\r\n\r\n3\r\n", (), DATES[1])
    client.logout()
    before = archive_contents(archive)
    dry = run_cli(*backup_args(server, account, archive, "--dry-run", "--json"),
                  password=account.password)
    assert dry.code == 0, dry.err
    assert dry.json()["new_messages"] == 2
    assert archive_contents(archive) == before, "a dry run must not write"


def test_new_mail_alone_is_an_incremental_run(server, account, tmp_path):
    """The nightly case: new mail, no flag changed. The CONDSTORE flag check then matches
    nothing, which Cyrus answers as ``* SEARCH (MODSEQ n)`` (a shape imapclient refuses):
    the run still ends well and fetches only the new message."""
    client = imap_login(server, account)
    for i in range(3):
        append(client, "INBOX", f"Subject: n{i}\r\n\r\nx\r\n".encode(), ("\\Seen",), DATES[1])
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, account, archive), password=account.password).code == 0
    append(client, "INBOX", b"Subject: tonight\r\n\r\nnew\r\n", (), DATES[2])
    client.logout()
    night = run_cli(*backup_args(server, account, archive, "--json"), password=account.password)
    assert "Traceback" not in night.err, night.err
    assert night.code == 0, night.err
    assert night.json()["new_messages"] == 1 and night.json()["flags_updated"] == 0
    assert_archive_matches_server(archive, server_state(server, account, ["INBOX"]))
