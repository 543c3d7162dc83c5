"""Foreign mbox files (Thunderbird mboxo, Google Takeout, mboxrd, mboxcl2): detection,
byte recovery, flags and labels; then restored into the real Dovecot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cli_helpers import imap_url, run_cli
from seeding import DATA_DIR
from test_backup import server_state
from test_restore import restore_args, state_env

from migrate.model import FolderCheckpoint
from migrate.stores.foreign_mbox import ForeignMbox, split_labels, takeout_placement

MBOX_DIR = DATA_DIR / "mbox"


def messages(path: Path, framing: str = "auto") -> tuple[ForeignMbox, dict[str, list]]:
    box = ForeignMbox(path, framing)
    out = {}
    for folder in box.list_folders():
        refs = list(box.list_new(folder, FolderCheckpoint()))
        out[folder.name] = list(box.fetch(folder, refs))
    return box, out


def test_thunderbird_mboxo_detected_and_read():
    box, got = messages(MBOX_DIR / "thunderbird.mbox")
    assert box.framing == "mboxo" and "'>From ' lines" in box.description
    assert "1 messages marked expunged skipped" in box.description
    msgs = got["thunderbird"]
    assert len(msgs) == 3
    first, second, third = msgs
    assert b"\n>From the start it was mboxo.\n" in first.raw  # mboxo quoting is kept
    assert first.raw.startswith(b"X-Mozilla-Status: 0001\n") and first.raw.endswith(b"Ann\n")
    assert first.flags == ("$label1", "\\Seen", "todo")
    assert first.internaldate == datetime(2019, 3, 5, 10, 15, tzinfo=UTC)
    assert second.flags == ("\\Flagged", "\\Seen")
    assert second.internaldate == datetime(1998, 6, 10, 8, 0, tzinfo=UTC)
    assert b"\n\n>From here on, a blank line came before.\n" in third.raw
    assert third.flags == ("bad(kw",)
    box.close()


def test_mboxrd_unquotes_one_level():
    box, got = messages(MBOX_DIR / "mboxrd.mbox")
    assert box.framing == "mboxrd"
    one, two = got["mboxrd"]
    assert one.raw == b"Subject: rd\n\nFrom quoted once\n>From was quoted in the original\n"
    assert two.raw == b"Subject: rd2\n\nplain\n"
    box.close()


def test_mboxcl2_uses_content_length():
    box, got = messages(MBOX_DIR / "mboxcl2.mbox")
    assert box.framing == "mboxcl2"
    one, two = got["mboxcl2"]
    assert one.raw.endswith(b"\n\nFrom the top, unquoted\n\nFrom a line after a blank\n")
    assert two.raw.endswith(b"\n\nsecond\n")
    box.close()
    # Forced mboxo, the same file also splits at both unquoted "From " lines after blank lines.
    box, got = messages(MBOX_DIR / "mboxcl2.mbox", "mboxo")
    assert len(got["mboxcl2"]) == 4
    box.close()


def test_takeout_labels_to_folders_and_flags():
    box, got = messages(MBOX_DIR / "takeout.mbox")
    assert box.takeout and "Google Takeout" in box.description
    subjects = {name: sorted(m.raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in msgs)
                for name, msgs in got.items()}
    assert subjects == {
        "INBOX": ["in the inbox", "two labels"],
        "Sent": ["I sent this"],
        "Work/Projects": ["work"],
        "Archive": ["archived only"],
        "Family, close": ["two labels"],
        "Spam": ["buy now"],
        "Reisen Übersee": ["travel"],
    }
    uses = {f.name: f.special_use for f in box.list_folders()}
    assert uses["Sent"] == "\\Sent" and uses["Spam"] == "\\Junk" and uses["Archive"] == "\\Archive"
    flags = {m.raw.split(b"Subject: ")[1].split(b"\r\n")[0]: m.flags for ms in got.values() for m in ms}
    assert flags[b"in the inbox"] == ("\\Seen",)
    assert flags[b"work"] == ()
    assert flags[b"two labels"] == ("\\Flagged", "\\Seen")
    inbox = got["INBOX"][0]
    assert inbox.raw.startswith(b"X-GM-THRID: ") and inbox.raw.endswith(b"hi\r\n")
    assert inbox.internaldate == datetime(2024, 1, 3, 12, 0, tzinfo=UTC)
    box.close()


def test_label_splitting():
    assert split_labels('Inbox,"A, B",=?UTF-8?Q?=C3=9Cber?=, x/y ') == ["Inbox", "A, B", "Über", "x/y"]
    assert takeout_placement(["Archived", "Opened", "Category Updates"]) == (["Archive"], {"\\Seen"}, set())
    assert takeout_placement(["Inbox", "Unread", "Inbox"])[0] == ["INBOX"]


def test_restore_thunderbird_mbox(dovecot, tmp_path):
    b = dovecot.add_user()
    result = run_cli(*restore_args(MBOX_DIR / "thunderbird.mbox", dovecot, b, "--json",
                                   "--map", "thunderbird=Old Mail"), env=state_env(tmp_path, b.password))
    assert result.code == 0, result.err
    summary = result.json()
    assert "mboxo framing" in summary["source_format"]
    assert summary["new_messages"] == 3
    assert [k["keywords"] for k in summary["keywords_dropped"]] == ["bad(kw"]
    box = server_state(dovecot, b, ["Old Mail"])["Old Mail"]
    by_subject = {raw.split(b"Subject: ")[1].split(b"\r\n")[0]: (raw, flags, date)
                  for raw, flags, date in box.values()}
    raw, flags, date = by_subject[b"read and tagged"]
    assert b"\r\n>From the start it was mboxo.\r\n" in raw
    assert flags == ("$label1", "\\Seen", "todo")
    assert date == datetime(2019, 3, 5, 10, 15, tzinfo=UTC)
    assert by_subject[b"flagged, 1998"][2] == datetime(1998, 6, 10, 8, 0, tzinfo=UTC)
    assert by_subject[b"unread, no Message-ID"][1] == ()
    again = run_cli(*restore_args(MBOX_DIR / "thunderbird.mbox", dovecot, b, "--json",
                                  "--map", "thunderbird=Old Mail"), env=state_env(tmp_path, b.password))
    assert again.json()["new_messages"] == 0


def test_restore_takeout_mbox(dovecot, tmp_path):
    b = dovecot.add_user()
    result = run_cli(*restore_args(MBOX_DIR / "takeout.mbox", dovecot, b, "--json"),
                     env=state_env(tmp_path, b.password))
    assert result.code == 0, result.err
    assert result.json()["new_messages"] == 8  # 7 messages, one of them under two labels
    # Sent/Spam/Archive land in this server's folders of that use (Gesendet, Spam, Archive).
    assert result.json()["folder_map"]["Sent"] == "Gesendet"
    state = server_state(dovecot, b)
    subjects = {name: sorted(raw.split(b"Subject: ")[1].split(b"\r\n")[0] for raw, _, _ in box.values())
                for name, box in state.items() if box}
    assert subjects == {
        "INBOX": [b"in the inbox", b"two labels"],
        "Gesendet": [b"I sent this"],
        "Work/Projects": [b"work"],
        "Archive": [b"archived only"],
        "Family, close": [b"two labels"],
        "Spam": [b"buy now"],
        "Reisen Übersee": [b"travel"],
    }
    seen = {raw.split(b"Subject: ")[1].split(b"\r\n")[0]: flags
            for box in state.values() for raw, flags, _ in box.values()}
    assert seen[b"two labels"] == ("\\Flagged", "\\Seen") and seen[b"work"] == ()
    check = run_cli("verify", str(MBOX_DIR / "takeout.mbox"), imap_url(dovecot, b),
                    "--password-env", "MM_TEST_PASSWORD", env=state_env(tmp_path, b.password))
    assert check.code == 0, check.out + check.err


def test_refused_message_is_reported_and_run_goes_on(dovecot, tmp_path):
    b = dovecot.add_user()
    mbox = tmp_path / "mixed.mbox"
    mbox.write_bytes(b"From a@b Mon Jan  2 15:04:05 2006\nSubject: before\n\nok\n\n"
                     b"From a@b Mon Jan  2 15:04:06 2006\n\n"  # an empty message: refused
                     b"From a@b Mon Jan  2 15:04:07 2006\nSubject: after\n\nok too\n")
    env = state_env(tmp_path, b.password)
    result = run_cli(*restore_args(mbox, dovecot, b, "--json"), env=env)
    assert result.code == 1, result.err
    errors = result.json()["message_errors"]
    assert len(errors) == 1 and errors[0]["folder"] == "mixed" and "rejected" in errors[0]["error"]
    assert result.json()["new_messages"] == 2
    assert len(server_state(dovecot, b, ["mixed"])["mixed"]) == 2
    # The refusal is retried next time (and refused again), never duplicating the others.
    again = run_cli(*restore_args(mbox, dovecot, b, "--json"), env=env)
    assert again.code == 1 and again.json()["new_messages"] == 0
    assert len(server_state(dovecot, b, ["mixed"])["mixed"]) == 2
