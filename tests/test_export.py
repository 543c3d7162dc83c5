"""`mailmigrate export` to .eml files, one .mbox file and a Maildir, and back with restore."""

from __future__ import annotations

import email
import mailbox
import sqlite3
from collections import Counter

import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from test_backup import seed_rich_account, server_state
from test_restore import restore_args, state_env

from migrate.model import Folder
from migrate.stores.export_stores import (
    EmlDirDestination,
    MaildirStore,
    maildir_dirname,
    maildir_folder_name,
    maildir_info,
)

SYSTEM_FLAGS = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}


@pytest.fixture(scope="module")
def rich(dovecot, tmp_path_factory) -> dict:
    """A seeded account (corpus, nested and non-ASCII folders, 3 MB message) and its backups."""
    user = dovecot.add_user()
    total = seed_rich_account(dovecot, user)
    base = tmp_path_factory.mktemp("export")
    out = {"user": user, "total": total, "sqlite": base / "a.sqlite", "tree": base / "tree",
           "state": server_state(dovecot, user)}
    for kind in ("sqlite", "tree"):
        result = run_cli(*backup_args(dovecot, user, out[kind]), password=user.password)
        assert result.code == 0, result.err
    return out


def all_bodies(state: dict) -> Counter:
    return Counter(raw for box in state.values() for raw, _, _ in box.values())


def export(*args: str) -> dict:
    result = run_cli("export", *args, "--json")
    assert result.code == 0, result.err
    return result.json()


def everything(state: dict) -> Counter:
    """Multiset of (BODY[], FLAGS, INTERNALDATE) over all folders: what one .mbox can hold."""
    return Counter(item for box in state.values() for item in box.values())


def test_export_mbox_then_restore_is_byte_exact_with_flags_and_dates(dovecot, rich, tmp_path):
    out = tmp_path / "all.mbox"
    summary = export(str(rich["sqlite"]), str(out))
    assert summary["new_messages"] == rich["total"] and summary["errors"] == []
    assert not out.with_name("all.mbox.part").exists()
    # Any mbox reader can read it: the stdlib's finds every message and its headers
    # (except in corpus messages whose first line is a 'From ' line: framing quotes it;
    # a first line that is a continuation continues our X-Keywords line in front of it),
    # and the flags as mutt's Status/X-Status letters.
    box = mailbox.mbox(out)
    try:
        assert len(box) == rich["total"]
        seen = Counter(m["Message-ID"] for m in box)
        expected = Counter(email.message_from_bytes(b"X-Keywords:\r\n" + raw)["Message-ID"]
                           for raw in all_bodies(rich["state"]).elements()
                           if not raw.startswith(b"From "))
        del seen[None], expected[None]
        assert seen == expected and len(expected) > 100
        letters = {"\\Seen": "R", "\\Answered": "A", "\\Flagged": "F", "\\Draft": "T",
                   "\\Deleted": "D"}
        assert Counter(frozenset(m.get_flags()) for m in box) == Counter(
            frozenset({"O"} | {letters[f] for f in flags if f in letters})
            for _, flags, _ in everything(rich["state"]).elements())
    finally:
        box.close()
    # restore recognises its own export (no --mbox-format) and gives back every message
    # byte for byte, with its flags (keywords too) and INTERNALDATE, into a fresh account.
    fresh = dovecot.add_user()
    restored = run_cli(*restore_args(out, dovecot, fresh, "--json"),
                       env=state_env(tmp_path, fresh.password))
    assert restored.code == 0, restored.err
    assert restored.json()["new_messages"] == rich["total"]
    assert "mailmigrate export" in restored.json()["source_format"]
    assert "mboxrd framing" in restored.json()["source_format"]
    before = everything(rich["state"])
    assert any(not raw.endswith(b"\n") for raw, _, _ in before)
    assert any(b"\n>From " in raw or b"\nFrom " in raw for raw, _, _ in before)
    assert any(kw in flags for _, flags, _ in before for kw in ("$Forwarded", "Projekt-X"))
    after = server_state(dovecot, fresh)
    assert [name for name, box in after.items() if box] == ["all"]
    assert everything(after) == before
    # verify reads the export the same way and finds the account matching it.
    check = run_cli("verify", str(out), imap_url(dovecot, fresh), "--password-env", PASSWORD_ENV,
                    env=state_env(tmp_path, fresh.password))
    assert check.code == 0, check.out + check.err
    # The file is written whole: exporting onto it again is refused, nothing changes.
    size = out.stat().st_size
    again = run_cli("export", str(rich["sqlite"]), str(out))
    assert again.code == 2 and "already exists" in again.err
    assert out.stat().st_size == size


def test_export_maildir_then_restore_keeps_bytes_flags_dates(dovecot, rich, tmp_path):
    dest = f"maildir:{tmp_path / 'md'}"
    summary = export(str(rich["sqlite"]), dest)
    assert summary["new_messages"] == rich["total"]
    # A re-run finds everything there (the ID is in each file name): nothing written twice.
    assert export(str(rich["sqlite"]), dest)["new_messages"] == 0
    root = tmp_path / "md"
    assert (root / "cur").is_dir() and (root / ".A.B.C" / "maildirfolder").is_file()
    assert (root / maildir_dirname("日本語") / "cur").is_dir()
    fresh = dovecot.add_user()
    restored = run_cli(*restore_args(dest, dovecot, fresh, "--json", "--no-special-use"),
                       env=state_env(tmp_path, fresh.password))
    assert restored.code == 0, restored.err
    assert restored.json()["new_messages"] == rich["total"]
    after = server_state(dovecot, fresh)

    def comparable(state: dict) -> dict[str, Counter]:
        # Maildir keeps system flags only; keywords are documented as lost.
        return {name: Counter((raw, tuple(f for f in flags if f in SYSTEM_FLAGS), idate)
                              for raw, flags, idate in box.values())
                for name, box in state.items() if box}

    assert comparable(after) == comparable(rich["state"])


def test_export_eml_by_folder_and_search_resumes_and_stays_per_archive(rich, tmp_path):
    db, tree = str(rich["sqlite"]), str(rich["tree"])
    dest = tmp_path / "eml"
    summary = export(db, f"eml:{dest}", "--folder", "A*")
    assert [f["folder"] for f in summary["per_folder"] if f["new_messages"]] == ["A/B/C"]
    files = sorted((dest / "A" / "B" / "C").glob("*.eml"))
    assert len(files) == len(rich["state"]["A/B/C"]) and summary["new_messages"] == len(files)
    # File names are the IDs search prints; the bytes are the archived bytes.
    conn = sqlite3.connect(db)
    try:
        for path in files:
            raw = conn.execute("SELECT m.raw FROM folder_messages fm JOIN messages m"
                               " ON m.id = fm.message_id WHERE fm.id = ?", (int(path.stem),)
                               ).fetchone()[0]
            assert path.read_bytes() == bytes(raw)
    finally:
        conn.close()
    assert {p.read_bytes() for p in files} == {raw for raw, _, _ in rich["state"]["A/B/C"].values()}
    # A search filter: only what search finds, into the same directory; then --id.
    hits = run_cli("search", db, "", "--subject", "big attachment", "--json").json()["results"]
    assert len(hits) == 1
    found = export(db, f"eml:{dest}", "--subject", "big attachment")
    assert found["new_messages"] == 0  # already exported with A/B/C
    only = tmp_path / "one"
    assert export(db, f"eml:{only}", "--id", str(hits[0]["id"]))["new_messages"] == 1
    assert [p.name for p in only.rglob("*.eml")] == [f"{hits[0]['id']}.eml"]
    # Everything else, resumed into the same directory: only the rest is written.
    rest = export(db, f"eml:{dest}")
    assert rest["new_messages"] == rich["total"] - len(files)
    assert len(list(dest.rglob("*.eml"))) == rich["total"]
    assert (dest / "Forschung & Entwicklung").is_dir() and (dest / "日本語").is_dir()
    # Another archive's IDs would clash with these file names: refused.
    other = run_cli("export", tree, f"eml:{dest}")
    assert other.code == 2 and "export each archive into a directory of its own" in other.err


def test_export_from_mbox_tree_dry_run_and_errors(rich, tmp_path):
    tree = str(rich["tree"])
    dry = export(tree, f"eml:{tmp_path / 'dry'}", "--dry-run", "--folder", "INBOX")
    assert dry["dry_run"] and dry["new_messages"] == len(rich["state"]["INBOX"])
    assert not (tmp_path / "dry").exists()
    out = tmp_path / "inbox.mbox"
    assert export(tree, str(out), "--folder", "INBOX")["new_messages"] == len(rich["state"]["INBOX"])
    box = mailbox.mbox(out)
    try:
        assert len(box) == len(rich["state"]["INBOX"])
    finally:
        box.close()
    # A single mbox file is a source too (by folder and --since): mbox -> Maildir.
    # Our own export is recognised by its marker: exact bytes and system flags, no option.
    md = tmp_path / "from-mbox"
    summary = export(str(out), f"maildir:{md}")
    assert summary["new_messages"] == len(rich["state"]["INBOX"])
    inbox = Counter((raw, maildir_info(flags)) for raw, flags, _ in rich["state"]["INBOX"].values())
    assert any(raw.startswith(b"From ") for raw, _ in inbox)  # quoted in the file
    assert Counter((p.read_bytes(), p.name.partition(":2,")[2]) for p in (md / "cur").iterdir()) == inbox
    refused = run_cli("export", str(out), f"eml:{tmp_path / 'no'}", "--query", "x")
    assert refused.code == 2 and "single mbox file" in refused.err
    # Words and header filters need the SQLite archive's index: exit 2 naming the fix.
    words = run_cli("export", tree, str(tmp_path / "x.mbox"), "--query", "invoice")
    assert words.code == 2 and "needs a SQLite archive" in words.err
    assert not (tmp_path / "x.mbox").exists() and not (tmp_path / "x.mbox.part").exists()
    for bad in (str(tmp_path / "somewhere"), "eml:", "maildir:"):
        result = run_cli("export", tree, bad)
        assert result.code == 2, (bad, result.err)
        assert "names no" in result.err


def test_export_paths_cannot_leave_the_directory(tmp_path):
    dest = EmlDirDestination(tmp_path / "eml", "archive:x")
    for name in ("..", "../../etc", "a/../../b", ".hidden", "x.eml/y", "CON", "a\\b"):
        where = dest.folder_dir(Folder(name)).resolve()
        assert where.is_relative_to((tmp_path / "eml").resolve()) and where != tmp_path / "eml"
    assert len({dest.folder_dir(Folder(n)) for n in ("a:b", "a_b", "A_B")}) == 3
    assert dest.folder_dir(Folder("mailmigrate-export")).name != "mailmigrate-export"
    for name in ("..", "a/..", "日本語/v1.2", "Forschung & Entwicklung", "x/y/z"):
        dirname = maildir_dirname(name)
        assert dirname.startswith(".") and "/" not in dirname and dirname not in (".", "..")
        assert maildir_folder_name(dirname) == name
    assert maildir_dirname("INBOX") == ""
    assert maildir_info(("\\Seen", "\\Flagged", "$Forwarded", "\\Draft")) == "DFS"


def test_maildir_reader_lists_and_reads_what_it_wrote(tmp_path):
    from datetime import UTC, datetime

    from migrate.model import Message

    store = MaildirStore(tmp_path / "md", "archive:x")
    when = datetime(2020, 5, 6, 7, 8, 9, tzinfo=UTC)
    msgs = [Message(key=str(i), raw=f"Subject: {i}\r\n\r\nbody\r\n".encode(),
                    flags=("\\Seen", "Keyword") if i else (), internaldate=when) for i in range(3)]
    assert store.add_messages(Folder("INBOX"), msgs[:2]) == 2
    assert store.add_messages(Folder("Sub/Deeper"), msgs[2:]) == 1
    reader = MaildirStore(tmp_path / "md", readonly=True)
    summary = {f.name: n for f, n, _ in reader.folder_summary()}
    assert summary == {"INBOX": 2, "Sub/Deeper": 1}
    got = list(reader.iter_messages(Folder("INBOX")))
    assert [(m.raw, m.flags, m.internaldate) for m in got] == [
        (msgs[0].raw, (), when), (msgs[1].raw, ("\\Seen",), when)]


def test_formats_are_accepted_only_where_they_can_work(tmp_path):
    """backup never writes a Maildir or eml tree; restore never reads an eml tree."""
    env = {"MM_X": "pw"}
    url = "imap://u@127.0.0.1:9?tls=none"
    cases = [(2, ("backup", url, f"maildir:{tmp_path / 'm'}", "--password-env", "MM_X")),
             (2, ("backup", url, f"eml:{tmp_path / 'e'}", "--password-env", "MM_X")),
             (2, ("restore", f"eml:{tmp_path}", url, "--password-env", "MM_X")),
             (5, ("ls", f"maildir:{tmp_path / 'none'}"))]
    for code, args in cases:
        result = run_cli(*args, env={**cli_env(), **env})
        assert result.code == code, (args, result.err)
        assert result.err.startswith("mailmigrate: error:") and "Traceback" not in result.err
    assert not (tmp_path / "m").exists() and not (tmp_path / "e").exists()
