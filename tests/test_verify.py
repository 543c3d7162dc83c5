"""`mailmigrate verify`: per-folder counts and content hashes, archive vs server and server vs server."""

from __future__ import annotations

import sqlite3

from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from seeding import append, create_folder, imap_login
from test_backup import DATES


def msg(i: int) -> bytes:
    return f"Message-ID: <v{i}@t>\r\nSubject: v{i}\r\n\r\nbody {i}\r\n".encode()


def test_verify_archive_against_server_reports_missing_and_extra(server, tmp_path):
    a = server.add_user()
    client = imap_login(server, a)
    create_folder(client, "Work")
    uids = [append(client, "INBOX", msg(i), (), DATES[1]) for i in range(3)]
    append(client, "Work", msg(9), (), DATES[1])
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    args = ["verify", str(archive), imap_url(server, a), "--password-env", PASSWORD_ENV]
    same = run_cli(*args, password=a.password)
    assert same.code == 0, same.out + same.err
    assert "OK    INBOX: 3 messages" in same.out and "all folders match" in same.out
    # The server loses one message and gains another (and a duplicate of an existing one).
    client.select_folder("INBOX")
    client.delete_messages([uids[0]])
    client.expunge()
    append(client, "INBOX", msg(5), (), DATES[2])
    append(client, "Work", msg(9), (), DATES[2])
    client.logout()
    diff = run_cli(*args, password=a.password)
    assert diff.code == 1, diff.out + diff.err
    assert "DIFF  INBOX: 3 vs 3 messages, 1 missing, 1 extra" in diff.out
    assert "missing: Message-ID <v0@t>" in diff.out and "extra:   Message-ID <v5@t>" in diff.out
    assert "DIFF  Work: 1 vs 2 messages, 0 missing, 1 extra" in diff.out
    as_json = run_cli(*args, "--json", password=a.password)
    assert as_json.code == 1
    data = as_json.json()
    assert data["equal"] is False and data["folders_differing"] == 2


def test_verify_two_servers_reports_extra_folder(server, tmp_path):
    a, b = server.add_user(), server.add_user()
    for user in (a, b):
        client = imap_login(server, user)
        append(client, "INBOX", msg(1), ("\\Seen",), DATES[1])
        client.logout()
    env = cli_env(b.password, PW_A=a.password)
    args = ["verify", imap_url(server, a), imap_url(server, b), "--password-env", "PW_A",
            "--dest-password-env", PASSWORD_ENV]
    assert run_cli(*args, env=env).code == 0
    client = imap_login(server, b)
    create_folder(client, "Stray")
    append(client, "Stray", msg(2), (), DATES[1])
    client.logout()
    diff = run_cli(*args, env=env)
    assert diff.code == 1 and "EXTRA Stray: 1 messages only on the second side" in diff.out


def test_verify_archive_alone_checks_every_hash(server, tmp_path):
    a = server.add_user()
    client = imap_login(server, a)
    for i in range(4):
        append(client, "INBOX", msg(i), (), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    ok = run_cli("verify", str(archive))
    assert ok.code == 0 and "4 messages read" in ok.out
    conn = sqlite3.connect(archive)
    with conn:
        conn.execute("UPDATE messages SET raw = CAST(replace(CAST(raw AS TEXT), 'body 2', 'body X')"
                     " AS BLOB) WHERE msgid = '<v2@t>'")
    conn.close()
    bad = run_cli("verify", str(archive))
    assert bad.code == 5 and "sha256" in bad.err
