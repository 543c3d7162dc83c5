"""Backup of a Gmail account (issue 13): every message downloaded once, counted at the
server; label folders recorded as memberships of the message already held; labels
(system ones too) and thread ids kept; label changes picked up by the next run through
CONDSTORE; a no-op run is one STATUS per folder; localised folder names.

The server is tests/fake_gmail.py (no server here speaks X-GM-EXT-1)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fake_gmail import SEED, FakeGmail, seed, seed_message

from migrate.model import Folder
from migrate.stores.mbox_archive import MboxArchive

PW = "MM_GMAIL_PASSWORD"


def url(gmail: FakeGmail, user) -> str:
    return f"imap://{user.name}@{gmail.host}:{gmail.imap_port}?tls=none"


def backup(gmail: FakeGmail, user, archive: Path, *extra: str):
    result = run_cli("backup", url(gmail, user), str(archive), "--password-env", PW, "--json",
                     *extra, env=cli_env(**{PW: user.password}))
    assert result.code == 0, result.err
    return result.json()


@pytest.fixture
def gmail():
    with FakeGmail() as server:
        yield server


def archived_labels(archive: Path) -> dict[str, tuple[str, ...]]:
    """{Message-ID: labels} from the archive, whatever its kind."""
    if archive.suffix == ".sqlite":
        conn = sqlite3.connect(archive)
        try:
            rows = conn.execute("SELECT DISTINCT msgid, labels FROM mail WHERE labels IS NOT NULL")
            return {m: tuple(sorted(json.loads(labels))) for m, labels in rows}
        finally:
            conn.close()
    tree = MboxArchive(archive, readonly=True)
    try:
        out = {}
        for folder in tree.list_folders():
            for msg in tree.read_messages(folder, [r.key for r in tree.message_refs(folder)]):
                mid = msg.raw.split(b"\r\n", 1)[0].split(b" ", 1)[1].decode()
                out[mid] = tuple(sorted(msg.labels or ()))
        return out
    finally:
        tree.close()


def placements(archive: Path) -> dict[str, set[str]]:
    """{folder: {Message-ID}}."""
    if archive.suffix == ".sqlite":
        conn = sqlite3.connect(archive)
        try:
            out: dict[str, set[str]] = {}
            for folder, mid in conn.execute("SELECT folder, msgid FROM mail"):
                out.setdefault(folder, set()).add(mid)
            return out
        finally:
            conn.close()
    tree = MboxArchive(archive, readonly=True)
    try:
        result: dict[str, set[str]] = {}
        for folder in tree.list_folders():
            for msg in tree.iter_messages(folder):
                mid = msg.raw.split(b"\r\n", 1)[0].split(b" ", 1)[1].decode()
                result.setdefault(folder.name, set()).add(mid)
        return result
    finally:
        tree.close()


@pytest.mark.parametrize(("kind", "connections"), [("sqlite", "1"), ("sqlite", "3"), ("mbox", "1")])
def test_first_backup_downloads_each_message_once_and_keeps_labels(gmail, tmp_path, kind,
                                                                   connections):
    user = gmail.add_user()
    account = gmail.account(user)
    total = seed(account)
    archive = tmp_path / ("a.sqlite" if kind == "sqlite" else "tree")
    summary = backup(gmail, user, archive, "--max-connections", connections)
    # counted at the server: one BODY[] per message, whatever number of label folders
    assert sorted(account.body_fetches.values()) == [1] * total
    shown = placements(archive)
    memberships = sum(len(v) for v in shown.values())
    assert summary["new_messages"] == memberships
    assert summary["downloads_saved"] == memberships - total
    assert summary["downloads_saved"] > total  # INBOX, Sent, labels, Important, Starred...
    # every folder holds what Gmail shows in it
    assert shown["Work"] == {"<gm1@gmail.test>", "<gm2@gmail.test>", "<gm4@gmail.test>",
                             "<gm7@gmail.test>"}
    assert shown["[Gmail]/All Mail"] == {f"<gm{i}@gmail.test>" for i in range(8)}
    assert shown["[Gmail]/Spam"] == {"<gm8@gmail.test>"}
    assert shown["[Gmail]/Trash"] == {"<gm9@gmail.test>"}
    assert shown["Privat/Ünter"] == {"<gm2@gmail.test>"}
    # every message's labels, system labels included
    labels = archived_labels(archive)
    for i, (want, _, _) in enumerate(SEED):
        assert labels[f"<gm{i}@gmail.test>"] == tuple(sorted(want)), i


def test_thread_ids_and_labels_are_in_the_public_schema(gmail, tmp_path):
    user = gmail.add_user()
    account = gmail.account(user)
    seed(account)
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive)
    conn = sqlite3.connect(archive)
    try:
        rows = dict(conn.execute("SELECT msgid, thread FROM mail"
                                 " WHERE folder = '[Gmail]/All Mail'").fetchall())
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        gm = {m.raw.split(b"\r\n", 1)[0].split(b" ")[1].decode(): m for m in account.messages.values()}
        stored = {str(msgid): thrid for msgid, thrid in conn.execute(
            "SELECT msgid, thrid FROM gmail_messages")}
    finally:
        conn.close()
    assert version == "3"
    assert rows["<gm1@gmail.test>"] == rows["<gm0@gmail.test>"] == str(gm["<gm0@gmail.test>"].thrid)
    assert rows["<gm2@gmail.test>"] != rows["<gm0@gmail.test>"]
    assert stored == {str(m.msgid): str(m.thrid) for m in account.messages.values()}


def test_no_op_run_is_one_status_per_folder_and_no_download(gmail, tmp_path):
    user = gmail.add_user()
    account = gmail.account(user)
    seed(account)
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive)
    account.commands.clear()
    again = backup(gmail, user, archive)
    folders = [name for name, _ in account.folder_names()]
    assert all(f["unchanged"] for f in again["per_folder"] if f["folder"] != "[Gmail]")
    assert account.commands["STATUS"] == len(folders)
    assert not {"SELECT", "EXAMINE", "UID FETCH", "UID SEARCH"} & set(account.commands)


def test_label_changes_and_new_mail_are_picked_up_incrementally(gmail, tmp_path):
    user = gmail.add_user()
    account = gmail.account(user)
    seed(account)
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive)
    by_id = {m.raw.split(b"\r\n", 1)[0].split(b" ")[1].decode(): m for m in account.messages.values()}
    # a label added, a label taken off (archived from the inbox), a new label, new mail
    account.add_label(by_id["<gm0@gmail.test>"], "Work")
    account.remove_label(by_id["<gm1@gmail.test>"], "\\Inbox")
    account.add_label(by_id["<gm5@gmail.test>"], "Neu")
    account.add(seed_message(20), labels=("\\Inbox", "Neu"))
    account.sync_all()
    summary = backup(gmail, user, archive)
    # the new one in All Mail, INBOX and Neu; gm0 in Work; gm5 in Neu
    assert summary["new_messages"] == 5 and summary["downloads_saved"] == 4
    assert summary["flags_updated"] >= 3  # the labels of three messages, through CONDSTORE
    labels = archived_labels(archive)
    assert labels["<gm0@gmail.test>"] == ("Work", "\\Inbox")
    assert labels["<gm1@gmail.test>"] == ("Work",)
    assert labels["<gm5@gmail.test>"] == ("Neu",)
    assert labels["<gm20@gmail.test>"] == ("Neu", "\\Inbox")
    shown = placements(archive)
    assert "<gm0@gmail.test>" in shown["Work"] and shown["Neu"] == {"<gm5@gmail.test>",
                                                                    "<gm20@gmail.test>"}
    assert sorted(account.body_fetches.values()) == [1] * len(account.messages)


def test_localised_google_mail_names(tmp_path):
    with FakeGmail(lang="de", prefix="[Google Mail]") as gmail:
        user = gmail.add_user()
        account = gmail.account(user)
        total = seed(account)
        archive = tmp_path / "a.sqlite"
        summary = backup(gmail, user, archive)
    assert sorted(account.body_fetches.values()) == [1] * total
    shown = placements(archive)
    assert len(shown["[Google Mail]/Alle Nachrichten"]) == 8
    assert shown["[Google Mail]/Gesendet"] == {"<gm3@gmail.test>", "<gm4@gmail.test>"}
    assert summary["downloads_saved"] == sum(len(v) for v in shown.values()) - total
    labels = archived_labels(archive)
    assert labels["<gm4@gmail.test>"] == ("Work", "\\Sent", "\\Starred")


def test_preset_skips_the_views_and_still_downloads_once(gmail, tmp_path):
    """With the Gmail preset (--provider gmail) Important and Starred are skipped as the
    views they are; their labels stay on the messages."""
    user = gmail.add_user()
    account = gmail.account(user)
    total = seed(account)
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive, "--provider", "gmail", "--max-connections", "2",
           "--rate", "100MB")
    shown = placements(archive)
    assert "[Gmail]/Important" not in shown and "[Gmail]/Starred" not in shown
    assert archived_labels(archive)["<gm2@gmail.test>"] == ("Privat/Ünter", "Work", "\\Important")
    assert sorted(account.body_fetches.values()) == [1] * total


def test_mbox_tree_index_of_an_older_version_is_upgraded_and_keeps_labels(gmail, tmp_path):
    user = gmail.add_user()
    account = gmail.account(user)
    seed(account)
    tree = tmp_path / "tree"
    backup(gmail, user, tree)
    index = tree / ".mailmigrate" / "index.sqlite"
    conn = sqlite3.connect(index)
    with conn:  # back to version 1, as an older mailmigrate left it
        conn.execute("DROP TABLE gmail_messages")
        conn.execute("DROP INDEX messages_gm")
        conn.execute("ALTER TABLE messages DROP COLUMN gm_msgid")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    old = MboxArchive(tree, readonly=True)  # read as it is: no labels, no error
    try:
        inbox = Folder(name="INBOX", server_name="INBOX")
        assert all(r.labels is None for r in old.message_refs(inbox))
    finally:
        old.close()
    account.add(seed_message(30), labels=("\\Inbox", "Work"))
    account.sync_all()
    backup(gmail, user, tree)
    conn = sqlite3.connect(index)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    finally:
        conn.close()
    assert archived_labels(tree)["<gm30@gmail.test>"] == ("Work", "\\Inbox")
