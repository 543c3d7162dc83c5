"""Restore and copy with Gmail at either end (issue 13).

To Gmail: each message is appended once and its labels set with STORE X-GM-LABELS, so
the result is the same message in the same labels, with flags and INTERNALDATE, and no
copy per label: Gmail -> archive -> Gmail (SQLite and mbox tree), Gmail -> Gmail with
``copy``, a Takeout mbox -> Gmail. From Gmail to a server without labels (the real
Dovecot): a folder per label, system labels to special-use folders, unlabelled mail in
the archive folder; ``--gmail-labels keywords`` and ``first`` keep one copy.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from fake_gmail import FakeGmail, seed, seed_message
from seeding import fetch_all, imap_login, list_folders

PW, PW2 = "MM_GMAIL_PASSWORD", "MM_GMAIL_DEST_PASSWORD"


def url(gmail: FakeGmail, user) -> str:
    return f"imap://{user.name}@{gmail.host}:{gmail.imap_port}?tls=none"


def env_for(tmp_path: Path, **passwords: str) -> dict[str, str]:
    return cli_env(XDG_STATE_HOME=str(tmp_path / "xdg"), **passwords)


def comparable(account) -> dict[bytes, tuple[tuple[str, ...], tuple[str, ...], str, datetime]]:
    """{bytes: (labels, flags, where, INTERNALDATE as an instant)}: what a Gmail account holds."""
    return {raw: (labels, flags, where, datetime.strptime(date, "%d-%b-%Y %H:%M:%S %z"))
            for raw, (labels, flags, where, date) in account.state().items()}


@pytest.fixture
def two_gmails():
    with FakeGmail() as source, FakeGmail(lang="de", prefix="[Google Mail]") as dest:
        yield source, dest


def backup(gmail, user, archive, env):
    done = run_cli("backup", url(gmail, user), str(archive), "--password-env", PW, "--json",
                   env=env)
    assert done.code == 0, done.err
    return done.json()


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_gmail_archive_gmail_round_trip_keeps_labels_with_one_copy(two_gmails, tmp_path, kind):
    gmail, other = two_gmails
    user, target = gmail.add_user(), other.add_user()
    src, dst = gmail.account(user), other.account(target)
    total = seed(src)
    env = env_for(tmp_path, **{PW: user.password, PW2: target.password})
    archive = tmp_path / kind
    backup(gmail, user, archive, env)
    done = run_cli("restore", str(archive), url(other, target), "--password-env", PW2, "--json",
                   env=env)
    assert done.code == 0, done.err
    summary = done.json()
    # the same messages, labels, flags, dates (German folder names at the destination)
    assert comparable(dst) == comparable(src)
    assert dst.appends == total  # once each, not once per label folder
    assert summary["gmail_labels"] == "labels" and summary["labels_dropped"] == []
    assert summary["downloads_saved"] > 0  # label folders were links, not appends
    assert summary["folder_map"]["[Gmail]/All Mail"] == "[Google Mail]/Alle Nachrichten"
    again = run_cli("restore", str(archive), url(other, target), "--password-env", PW2, "--json",
                    env=env)
    assert again.code == 0 and again.json()["new_messages"] == 0
    assert dst.appends == total and comparable(dst) == comparable(src)


def test_copy_gmail_to_gmail_downloads_and_appends_each_message_once(two_gmails, tmp_path):
    gmail, other = two_gmails
    user, target = gmail.add_user(), other.add_user()
    src, dst = gmail.account(user), other.account(target)
    total = seed(src)
    env = env_for(tmp_path, **{PW: user.password, PW2: target.password})
    args = ["copy", url(gmail, user), url(other, target), "--password-env", PW,
            "--dest-password-env", PW2, "--json", "--max-connections", "3"]
    done = run_cli(*args, env=env)
    assert done.code == 0, done.err
    assert sorted(src.body_fetches.values()) == [1] * total
    assert dst.appends == total
    assert comparable(dst) == comparable(src)
    # label changes at the source reach the destination (CONDSTORE on All Mail)
    by_id = {m.raw: m for m in src.messages.values()}
    first = by_id[seed_message(0)]
    src.add_label(first, "Neu")
    src.remove_label(first, "\\Inbox")
    src.add(seed_message(40), labels=("Work",))
    src.sync_all()
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    assert comparable(dst) == comparable(src)
    assert dst.appends == total + 1
    assert sorted(src.body_fetches.values()) == [1] * (total + 1)


def test_takeout_mbox_to_gmail_uses_the_labels(two_gmails, tmp_path):
    gmail, _ = two_gmails
    target = gmail.add_user()
    dst = gmail.account(target)
    takeout = tmp_path / "All mail Including Spam and Trash.mbox"
    messages = [
        (b"Inbox,Work,Important", seed_message(1, "to")),
        (b'Sent,"Kunden, alt",Opened', seed_message(2, "to")),
        (b"Archived,Unread", seed_message(3, "to")),
        (b"Spam", seed_message(4, "to")),
        (b"Starred,Inbox,Category Updates", seed_message(5, "to")),
    ]
    with open(takeout, "wb") as fp:
        for labels, raw in messages:
            fp.write(b"From 1691412345678901234@xxx Tue Jan 02 10:00:00 +0000 2024\n")
            fp.write(b"X-GM-THRID: 1691412345678901234\nX-Gmail-Labels: " + labels + b"\n")
            fp.write(raw.replace(b"\r\n", b"\n") + b"\n")
    env = env_for(tmp_path, **{PW2: target.password})
    done = run_cli("restore", str(takeout), url(gmail, target), "--password-env", PW2, "--json",
                   env=env)
    assert done.code == 0, done.err
    assert dst.appends == len(messages)
    got = {raw.split(b"\r\n")[2]: (labels, flags, where) for raw, (labels, flags, where, _)
           in dst.state().items()}
    assert got[b"Message-ID: <to1@gmail.test>"] == (("Work", "\\Important", "\\Inbox"), (), "all")
    assert got[b"Message-ID: <to2@gmail.test>"] == (("Kunden, alt", "\\Sent"), ("\\Seen",), "all")
    assert got[b"Message-ID: <to3@gmail.test>"] == ((), (), "all")
    assert got[b"Message-ID: <to4@gmail.test>"][2] == "spam"
    assert got[b"Message-ID: <to5@gmail.test>"] == (("\\Inbox", "\\Starred"), ("\\Flagged",), "all")


# -- Gmail to a server without labels (Dovecot) ------------------------------------------
def dovecot_folders(server, user) -> dict[str, dict[bytes, tuple[str, ...]]]:
    """{folder: {Message-ID line: flags}} of a Dovecot account."""
    client = imap_login(server, user)
    try:
        out = {}
        for name, attrs in list_folders(client).items():
            if b"\\Noselect" in attrs:
                continue
            box = {}
            for raw, flags, _ in fetch_all(client, name).values():
                key = raw.split(b"\r\n")[0]
                assert key not in box, f"{key!r} twice in {name}"
                box[key] = tuple(sorted(f.decode() for f in flags))
            if box:
                out[name] = box
        return out
    finally:
        client.logout()


def mid(i: int) -> bytes:
    return f"Message-ID: <gm{i}@gmail.test>".encode()


FOLDERS_MODE = {
    "INBOX": {0, 1}, "Work": {1, 2, 4, 7}, "Privat/Ünter": {2}, "Muy Importante": {7},
    "Gesendet": {3, 4}, "Entwürfe": {6}, "Archive": {5}, "Spam": {8}, "Papierkorb": {9},
}


@pytest.mark.parametrize("via", ["copy", "restore"])
def test_gmail_to_dovecot_makes_a_folder_per_label(dovecot, tmp_path, via):
    with FakeGmail() as gmail:
        user = gmail.add_user()
        seed(gmail.account(user))
        target = dovecot.add_user()
        env = env_for(tmp_path, **{PW: user.password, PASSWORD_ENV: target.password})
        if via == "copy":
            done = run_cli("copy", url(gmail, user), imap_url(dovecot, target), "--password-env",
                           PW, "--dest-password-env", PASSWORD_ENV, "--json", env=env)
        else:
            archive = tmp_path / "a.sqlite"
            backup(gmail, user, archive, env)
            done = run_cli("restore", str(archive), imap_url(dovecot, target), "--password-env",
                           PASSWORD_ENV, "--json", env=env)
        assert done.code == 0, done.err
    assert done.json()["gmail_labels"] == "folders"
    got = dovecot_folders(dovecot, target)
    assert {name: {k for k in box} for name, box in got.items()} == {
        name: {mid(i) for i in ids} for name, ids in FOLDERS_MODE.items()}
    assert got["Gesendet"][mid(4)] == ("\\Flagged", "\\Seen")
    assert done.json()["folder_map"]["[Gmail]/All Mail"] == "Archive"


@pytest.mark.parametrize("via", ["copy", "restore"])
def test_gmail_labels_keywords_keeps_one_copy_on_dovecot(dovecot, tmp_path, via):
    with FakeGmail() as gmail:
        user = gmail.add_user()
        total = seed(gmail.account(user))
        target = dovecot.add_user()
        env = env_for(tmp_path, **{PW: user.password, PASSWORD_ENV: target.password})
        if via == "copy":
            done = run_cli("copy", url(gmail, user), imap_url(dovecot, target), "--password-env",
                           PW, "--dest-password-env", PASSWORD_ENV, "--gmail-labels", "keywords",
                           "--json", "--max-connections", "3", env=env)
        else:
            archive = tmp_path / "tree"
            backup(gmail, user, archive, env)
            done = run_cli("restore", str(archive), imap_url(dovecot, target), "--password-env",
                           PASSWORD_ENV, "--gmail-labels", "keywords", "--json", env=env)
        assert done.code == 0, done.err
    got = dovecot_folders(dovecot, target)
    assert sum(len(box) for box in got.values()) == total  # one copy each
    assert {name: set(box) for name, box in got.items()} == {
        "INBOX": {mid(0), mid(1)}, "Gesendet": {mid(3), mid(4)}, "Entwürfe": {mid(6)},
        "Archive": {mid(2), mid(5), mid(7)}, "Spam": {mid(8)}, "Papierkorb": {mid(9)}}
    assert got["INBOX"][mid(1)] == ("Work", "\\Seen")
    assert got["Archive"][mid(2)] == ("$Forwarded", "$Important", "Privat/&ANw-nter", "Work",
                                      "\\Seen")
    assert got["Archive"][mid(7)] == ("Muy_Importante", "Work", "\\Answered", "\\Seen")
    assert got["Gesendet"][mid(4)] == ("Work", "\\Flagged", "\\Seen")


def test_gmail_labels_first_puts_each_message_in_its_first_label(dovecot, tmp_path):
    with FakeGmail() as gmail:
        user = gmail.add_user()
        total = seed(gmail.account(user))
        target = dovecot.add_user()
        env = env_for(tmp_path, **{PW: user.password, PASSWORD_ENV: target.password})
        done = run_cli("copy", url(gmail, user), imap_url(dovecot, target), "--password-env",
                       PW, "--dest-password-env", PASSWORD_ENV, "--gmail-labels", "first",
                       "--json", env=env)
        assert done.code == 0, done.err
    got = dovecot_folders(dovecot, target)
    assert sum(len(box) for box in got.values()) == total
    assert {name: set(box) for name, box in got.items()} == {
        "INBOX": {mid(0), mid(1)}, "Work": {mid(2)}, "Muy Importante": {mid(7)},
        "Gesendet": {mid(3), mid(4)}, "Entwürfe": {mid(6)}, "Archive": {mid(5)},
        "Spam": {mid(8)}, "Papierkorb": {mid(9)}}


def test_bad_gmail_labels_value_is_a_usage_error(tmp_path):
    archive = tmp_path / "none.sqlite"
    archive.touch()
    done = run_cli("restore", str(archive), "imap://u@127.0.0.1:1?tls=none", "--password-env",
                   PW2, "--gmail-labels", "tags", env=env_for(tmp_path, **{PW2: "x"}))
    assert done.code == 2
    assert "--gmail-labels 'tags'" in done.err and "folders, keywords, first" in done.err
    assert "Traceback" not in done.err


def test_restore_of_a_plain_archive_to_gmail_labels_each_folder(dovecot, tmp_path):
    """An archive from a server without labels: one Gmail message per source message,
    its folder as its label (no folder is a second copy there)."""
    from seeding import append, create_folder

    source = dovecot.add_user()
    client = imap_login(dovecot, source)
    create_folder(client, "Projekte/2024", parents=True)
    append(client, "INBOX", seed_message(1, "pl"), ("\\Seen",), datetime(2024, 3, 1, 9, 0).astimezone())
    append(client, "Projekte/2024", seed_message(2, "pl"), (), datetime(2024, 3, 2, 9, 0).astimezone())
    append(client, "Gesendet", seed_message(3, "pl"), ("\\Seen",), datetime(2024, 3, 3, 9, 0).astimezone())
    client.logout()
    archive = tmp_path / "plain.sqlite"
    env = env_for(tmp_path, **{PASSWORD_ENV: source.password})
    assert run_cli("backup", imap_url(dovecot, source), str(archive), "--password-env",
                   PASSWORD_ENV, env=env).code == 0
    with FakeGmail() as gmail:
        target = gmail.add_user()
        env[PW2] = target.password
        done = run_cli("restore", str(archive), url(gmail, target), "--password-env", PW2,
                       "--json", env=env)
        assert done.code == 0, done.err
        got = Counter(labels for labels, _, _, _ in gmail.account(target).state().values())
    assert got == Counter({("\\Inbox",): 1, ("Projekte/2024",): 1, ("\\Sent",): 1})


def test_export_mbox_writes_takeout_labels_once_per_message_and_restores_to_gmail(
        two_gmails, tmp_path):
    import mailbox

    from migrate.stores.foreign_mbox import split_labels

    gmail, other = two_gmails
    user, target = gmail.add_user(), other.add_user()
    src, dst = gmail.account(user), other.account(target)
    total = seed(src)
    env = env_for(tmp_path, **{PW: user.password, PW2: target.password})
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive, env)
    out = tmp_path / "export.mbox"
    done = run_cli("export", str(archive), str(out), "--json", env=env)
    assert done.code == 0, done.err
    # as Takeout: each message once, its labels in X-Gmail-Labels (readable by any mbox tool)
    box = mailbox.mbox(str(out))
    try:
        found = {m["Message-ID"]: split_labels(m["X-Gmail-Labels"]) for m in box}
    finally:
        box.close()
    assert len(found) == total
    assert found["<gm4@gmail.test>"] == ["Sent", "Work", "Starred", "Opened"]
    assert found["<gm2@gmail.test>"] == ["Work", "Important", "Privat/Ünter", "Opened"]
    assert found["<gm8@gmail.test>"] == ["Spam", "Unread"]
    assert found["<gm0@gmail.test>"] == ["Inbox", "Unread"]
    restored = run_cli("restore", str(out), url(other, target), "--password-env", PW2, "--json",
                       env=env)
    assert restored.code == 0, restored.err
    assert dst.appends == total
    assert comparable(dst) == comparable(src)


def test_in_doubt_appends_to_gmail_are_found_by_message_id_and_get_their_labels(two_gmails,
                                                                                tmp_path):
    """Killed after APPEND, before its labels and its "done": the rerun finds the message
    in All Mail with Gmail's search (X-GM-RAW rfc822msgid:, no listing of the account),
    appends nothing, and sets the labels then."""
    import sqlite3

    gmail, other = two_gmails
    user, target = gmail.add_user(), other.add_user()
    src, dst = gmail.account(user), other.account(target)
    total = seed(src)
    env = env_for(tmp_path, **{PW: user.password, PW2: target.password})
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive, env)
    state = tmp_path / "state.sqlite"
    args = ["restore", str(archive), url(other, target), "--password-env", PW2, "--json",
            "--state", str(state)]
    assert run_cli(*args, env=env).code == 0
    conn = sqlite3.connect(state)
    with conn:  # the carriers back in doubt, the label folders not reached yet
        conn.execute("DELETE FROM placements WHERE rowid NOT IN (SELECT MIN(rowid) FROM"
                     " placements GROUP BY dest_folder, dest_uid)")
        doubted = conn.execute("UPDATE placements SET state = 'doubt', dest_uid = NULL").rowcount
    conn.close()
    for msg in dst.messages.values():  # and their labels were never set
        for label in [x for x in msg.labels if x not in ("\\Sent", "\\Draft", "\\Starred")]:
            dst.remove_label(msg, label)
    dst.sync_all()
    assert doubted == total
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    assert again.json()["in_doubt_resolved"] >= doubted
    assert dst.appends == total
    assert len([q for q in dst.raw_searches if q.startswith("rfc822msgid:")]) == doubted
    got, want = comparable(dst), comparable(src)
    assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_labels_that_read_as_numbers_or_nil_round_trip(two_gmails, tmp_path):
    """Labels sent as atoms (Google's example answer has ``Important`` bare) that a
    generic IMAP parser reads as a number (``2019``, ``007``) or as NIL come back as
    the same labels, in the archive and at the destination."""
    gmail, other = two_gmails
    user, target = gmail.add_user(), other.add_user()
    src, dst = gmail.account(user), other.account(target)
    odd = ("2019", "007", "NIL", "Projekt 2019")
    src.add(seed_message(1, "odd"), labels=("\\Inbox", *odd), flags={"\\Seen"},
            date="01-Mar-2024 10:00:00 +0000", where="all")
    env = env_for(tmp_path, **{PW: user.password, PW2: target.password})
    archive = tmp_path / "a.sqlite"
    backup(gmail, user, archive, env)
    done = run_cli("restore", str(archive), url(other, target), "--password-env", PW2, "--json",
                   env=env)
    assert done.code == 0, done.err
    assert comparable(dst) == comparable(src)
    [(labels, _flags, _where, _date)] = dst.state().values()
    assert set(odd) <= set(labels)
