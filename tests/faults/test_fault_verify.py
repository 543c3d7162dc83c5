"""`mailmigrate verify ARCHIVE` checks integrity like `borg check`; `--repair` fixes what
needs no guessing, says what it did, and the next backup fetches exactly what was lost."""

from __future__ import annotations

import os
import sqlite3

from cli_helpers import archive_contents, backup_args, run_cli
from seeding import bulk_append, create_folder, fetch_all, imap_login, seed_message


def seed(dovecot, user) -> dict[str, list[bytes]]:
    client = imap_login(dovecot, user)
    out = {}
    try:
        create_folder(client, "Work")
        for n, folder in enumerate(["INBOX", "Work"]):
            out[folder] = [seed_message(n * 100 + i, 5000, tag=f"v-{folder}") for i in range(30)]
            bulk_append(client, folder, out[folder])
    finally:
        client.logout()
    return out


def assert_matches_server(dovecot, user, archive) -> None:
    client = imap_login(dovecot, user)
    try:
        got = archive_contents(archive)
        for folder in ("INBOX", "Work"):
            server = {uid: raw for uid, (raw, _, _) in fetch_all(client, folder).items()}
            assert {uid: raw for uid, (raw, _, _) in got[folder].items()} == server, folder
    finally:
        client.logout()


def test_verify_sqlite_finds_damage_repair_fixes_it_and_backup_refetches(dovecot, account, tmp_path):
    seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(dovecot, account, archive), password=account.password).code == 0
    conn = sqlite3.connect(archive)
    with conn:
        victim = conn.execute("SELECT id FROM messages WHERE subject LIKE '%message 7'"
                              " LIMIT 1").fetchone()[0]
        conn.execute("UPDATE messages SET raw = CAST(replace(CAST(raw AS TEXT), 'v-INBOX', 'v-XXXXX')"
                     " AS BLOB) WHERE id = ?", (victim,))
        conn.execute("INSERT INTO messages_fts (rowid, subject, from_addr, to_addrs, body)"
                     " VALUES (999999, 'stale', '', '', '')")
        conn.execute("INSERT INTO folder_messages (folder_id, message_id, uid, archived_at)"
                     " SELECT id, 888888, 999, '2024-01-01' FROM folders WHERE name = 'Work'")
    conn.close()
    check = run_cli("verify", str(archive))
    assert check.code == 5, check
    assert "Traceback" not in check.err
    assert "sha256" in check.out and "full-text index" in check.out
    assert "point at no message" in check.out
    assert "verify --repair" in check.err
    fixed = run_cli("verify", "--repair", str(archive))
    assert fixed.code == 0, fixed
    assert "REPAIRED dropped 1 damaged messages" in fixed.out
    assert "REPAIRED rebuilt the full-text index" in fixed.out
    again = run_cli("verify", str(archive))
    assert again.code == 0 and "every sha256 matches" in again.out, again
    # Searchable again: the FTS index holds every message, nothing stale.
    conn = sqlite3.connect(archive)
    # (the index's own docsize rows: a scan of messages_fts reads its content table)
    fts = {r[0] for r in conn.execute("SELECT id FROM messages_fts_docsize")}
    ids = {r[0] for r in conn.execute("SELECT id FROM messages")}
    conn.close()
    assert fts == ids
    # The next backup fetches exactly the dropped message, and the archive is whole.
    backup = run_cli(*backup_args(dovecot, account, archive, "--json"), password=account.password)
    assert backup.code == 0, backup.err
    assert backup.json()["new_messages"] == 1
    assert_matches_server(dovecot, account, archive)


def test_verify_mbox_tree_truncated_file_repair_then_backup_completes(dovecot, account, tmp_path):
    seed(dovecot, account)
    archive = tmp_path / "tree"
    assert run_cli(*backup_args(dovecot, account, archive), password=account.password).code == 0
    mbox = archive / "Work.mbox"
    os.truncate(mbox, mbox.stat().st_size * 2 // 3 + 17)  # mid-message
    check = run_cli("verify", str(archive))
    assert check.code == 5 and "Traceback" not in check.err, check
    assert "Work" in check.out and "messages lost" in check.out
    fixed = run_cli("verify", "--repair", str(archive), "--json")
    assert fixed.code == 0, fixed
    dropped = fixed.json()["repaired"][0]
    assert "dropped" in dropped and "fetches those messages again" in dropped
    assert run_cli("verify", str(archive)).code == 0
    backup = run_cli(*backup_args(dovecot, account, archive, "--json"), password=account.password)
    assert backup.code == 0, backup.err
    assert 0 < backup.json()["new_messages"] < 30
    assert_matches_server(dovecot, account, archive)
    assert run_cli("verify", str(archive)).code == 0


def test_verify_repair_needs_one_archive(tmp_path):
    bad = run_cli("verify", "--repair", "imap://u@127.0.0.1:1?tls=none", "imap://v@127.0.0.1:2?tls=none")
    assert bad.code == 2 and "--repair works on one archive" in bad.err
