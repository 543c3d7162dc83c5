"""`mailmigrate restore` against each real server: fidelity, idempotence, pre-existing mail."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from seeding import append, create_folder, imap_login
from test_backup import ARCHIVE_KINDS, DATES, seed_rich_account, server_state


def restore_args(archive: Path | str, server, user, *extra: str) -> list[str]:
    return ["restore", str(archive), imap_url(server, user), "--password-env", PASSWORD_ENV, *extra]


def state_env(tmp_path: Path, password: str) -> dict[str, str]:
    """The CLI's environment with its state directory inside the test's tmp dir."""
    return cli_env(password, XDG_STATE_HOME=str(tmp_path / "xdg-state"))


def placed(state: dict) -> dict[str, Counter]:
    """{folder: multiset of (bytes, flags, INTERNALDATE)}: what a folder holds, UIDs aside."""
    return {name: Counter(box.values()) for name, box in state.items() if box}


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_backup_then_restore_is_exact_and_idempotent(server, tmp_path, kind):
    a, b = server.add_user(), server.add_user()
    total = seed_rich_account(server, a)
    archive = tmp_path / kind
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    env = state_env(tmp_path, b.password)
    first = run_cli(*restore_args(archive, server, b, "--json"), env=env)
    assert first.code == 0, first.err
    summary = first.json()
    assert summary["new_messages"] == total and summary["message_errors"] == []
    assert set(summary["folders_created"]) >= {"A/B/C", "Forschung & Entwicklung", "日本語"}
    before = server_state(server, a)
    after = server_state(server, b)
    # Every folder: the same BODY[] bytes, flags (keywords too) and INTERNALDATE instants.
    assert placed(after) == placed(before)
    assert any(len(raw) > 3_000_000 for box in after.values() for raw, _, _ in box.values())
    # A second run appends nothing and changes nothing.
    again = run_cli(*restore_args(archive, server, b, "--json"), env=env)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0 and again.json()["found_on_destination"] == 0
    assert server_state(server, b) == after
    # verify agrees: archive vs B, and A vs B
    assert run_cli("verify", str(archive), imap_url(server, b), "--password-env", PASSWORD_ENV,
                   env=env).code == 0
    both = run_cli("verify", imap_url(server, a), imap_url(server, b), "--password-env", "PW_A",
                   "--dest-password-env", PASSWORD_ENV, env={**env, "PW_A": a.password})
    assert both.code == 0, both.out + both.err


def test_restore_skips_what_is_already_there_but_not_impostors(server, tmp_path):
    a, b = server.add_user(), server.add_user()
    msgs = [f"Message-ID: <m{i}@t>\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode() for i in range(6)]
    nomsgid = b"Subject: no id\r\nFrom: x@y\r\n\r\nno message-id here\r\n"
    client = imap_login(server, a)
    create_folder(client, "Work")
    for raw in msgs:
        append(client, "Work", raw, ("\\Seen",), DATES[1])
    append(client, "Work", nomsgid, (), DATES[2])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    # B got part of it by hand earlier, plus a different message that reuses <m5@t>.
    client = imap_login(server, b)
    create_folder(client, "Work")
    for raw in msgs[:3]:
        append(client, "Work", raw, ("\\Seen",), DATES[1])
    append(client, "Work", nomsgid, (), DATES[2])
    impostor = b"Message-ID: <m5@t>\r\nSubject: m5\r\n\r\nbody 5 but not the same\r\n"
    assert len(impostor) != len(msgs[5])
    same_size = b"Message-ID: <m4@t>\r\nSubject: m4\r\n\r\nbody X\r\n"
    assert len(same_size) == len(msgs[4])
    append(client, "Work", impostor, (), DATES[1])
    append(client, "Work", same_size, (), DATES[1])
    client.logout()
    result = run_cli(*restore_args(archive, server, b, "--json"), env=state_env(tmp_path, b.password))
    assert result.code == 0, result.err
    assert result.json()["found_on_destination"] == 4
    assert result.json()["new_messages"] == 3
    work = Counter(raw for raw, _, _ in server_state(server, b, ["Work"])["Work"].values())
    assert work == Counter([*msgs, nomsgid, impostor, same_size])


def test_dry_run_lists_folders_and_counts_and_changes_nothing(server, tmp_path):
    a, b = server.add_user(), server.add_user()
    client = imap_login(server, a)
    create_folder(client, "Projects/2024", parents=True)
    for i in range(3):
        append(client, "Projects/2024", f"Subject: p{i}\r\n\r\nx\r\n".encode(), (), DATES[1])
    append(client, "INBOX", b"Subject: i\r\n\r\nx\r\n", (), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    env = state_env(tmp_path, b.password)
    dry = run_cli(*restore_args(archive, server, b, "--dry-run"), env=env)
    assert dry.code == 0, dry.err
    assert "create folder Projects/2024" in dry.out
    assert "append 3 messages" in dry.out and "total: 4 messages" in dry.out
    as_json = run_cli(*restore_args(archive, server, b, "--dry-run", "--json"), env=env).json()
    assert as_json["dry_run"] and as_json["new_messages"] == 4
    assert "Projects/2024" in as_json["folders_to_create"]
    assert "Projects/2024" not in server_state(server, b)
    assert not (tmp_path / "xdg-state").exists() or not any((tmp_path / "xdg-state").rglob("*.sqlite"))


def test_state_file_is_private_and_holds_no_secret(server, tmp_path):
    a, b = server.add_user(), server.add_user()
    client = imap_login(server, a)
    append(client, "INBOX", b"Message-ID: <s@t>\r\nSubject: s\r\n\r\nx\r\n", (), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    state = tmp_path / "job" / "state.sqlite"
    result = run_cli(*restore_args(archive, server, b, "--state", str(state)),
                     env=state_env(tmp_path, b.password))
    assert result.code == 0, result.err
    assert state.stat().st_mode & 0o777 == 0o600
    assert state.parent.stat().st_mode & 0o777 == 0o700
    assert b.password.encode() not in state.read_bytes()
    conn = sqlite3.connect(state)
    assert conn.execute("SELECT state, COUNT(*) FROM placements GROUP BY state").fetchall() == [("done", 1)]


def _grow_archive(path: Path, folders: list[str], start: int, n: int, rng) -> int:
    """Add n synthetic messages per folder straight into a SQLite archive (fast)."""
    from seeding import seed_date, seed_message

    from migrate.model import Folder, FolderStatus, Message
    from migrate.stores.sqlite_archive import SqliteArchive

    store = SqliteArchive(path)
    try:
        for name in folders:
            folder = Folder(name=name, server_name=name)
            store.checkpoint(folder, FolderStatus(uidvalidity=7, uidnext=None, messages=0))
            msgs = [Message(key=str(start + i), uid=start + i,
                            raw=seed_message(start + i, rng.choice([600, 5_000, 40_000]), tag=name[:4]),
                            flags=("\\Seen",) if i % 3 else ("$Label1",),
                            internaldate=seed_date(start + i)) for i in range(n)]
            store.add_messages(folder, msgs)
            start += n
    finally:
        store.close()
    return start


@pytest.mark.slow
def test_restore_kill9_loop_ends_exactly_once(server, tmp_path):
    from cli_helpers import sqlite_folder_contents
    from killloop import FOLDERS, kill_loop, kill_seed, via
    from proxy import TcpProxy

    seed, rng = kill_seed()
    b = server.add_user()
    folders = FOLDERS
    archive = tmp_path / "big.sqlite"

    def archived_bytes() -> int:
        return sum(len(raw) for box in sqlite_folder_contents(archive).values()
                   for raw, _, _ in box.values())

    next_number = [_grow_archive(archive, folders, 1, 300, rng)]
    first = archived_bytes()

    def grow() -> int:
        before = archived_bytes()
        next_number[0] = _grow_archive(archive, folders, next_number[0], 60, rng)
        return archived_bytes() - before

    env = state_env(tmp_path, b.password)
    with TcpProxy(server.host, server.imap_port, record=False) as proxy:
        # restore sends the mail: the hold counts what the CLI writes to the server
        kill_loop(restore_args(archive, via(proxy, server), b, "--quiet"), env, rng, seed, grow,
                  proxy, first, to_server=True)
    counter = next_number[0]
    final = run_cli(*restore_args(archive, server, b, "--json"), env=env)
    assert final.code == 0, f"seed {seed}: {final.err}"
    archived = sqlite_folder_contents(archive)
    dest = server_state(server, b, folders)
    assert sum(len(v) for v in archived.values()) == counter - 1
    for name in folders:
        want = Counter((raw, tuple(sorted(flags)), idate) for raw, flags, idate in archived[name].values())
        assert Counter(dest[name].values()) == want, f"seed {seed}: {name}"


def test_in_doubt_appends_are_looked_up_not_repeated(server, tmp_path):
    """The two crash windows, made deterministic by editing the state file between runs."""
    a, b = server.add_user(), server.add_user()
    client = imap_login(server, a)
    msgs = [f"Message-ID: <d{i}@t>\r\nSubject: d{i}\r\n\r\nbody {i}\r\n".encode() for i in range(5)]
    twins = [b"Subject: twin\r\n\r\nsame bytes twice\r\n"] * 2  # no Message-ID, identical
    for raw in [*msgs, *twins]:
        append(client, "INBOX", raw, ("\\Seen",), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    state = tmp_path / "state.sqlite"
    env = state_env(tmp_path, b.password)
    args = restore_args(archive, server, b, "--state", str(state), "--json")
    assert run_cli(*args, env=env).json()["new_messages"] == 7
    # Window 1: APPENDed but killed before "done" was recorded.
    conn = sqlite3.connect(state)
    with conn:
        conn.execute("UPDATE placements SET state = 'doubt', dest_uid = NULL")
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0 and again.json()["in_doubt_resolved"] == 7
    inbox = server_state(server, b, ["INBOX"])["INBOX"]
    assert Counter(raw for raw, _, _ in inbox.values()) == Counter([*msgs, *twins])
    assert conn.execute("SELECT COUNT(DISTINCT dest_uid) FROM placements WHERE state = 'done'"
                        ).fetchone()[0] == 7
    # Window 2: "in doubt" committed, killed before the APPEND reached the server.
    client = imap_login(server, b)
    client.select_folder("INBOX")
    gone = sorted(client.search(["ALL"]))[:2]
    client.delete_messages(gone)
    client.expunge()
    client.logout()
    with conn:
        conn.execute("UPDATE placements SET state = 'doubt', dest_uid = NULL WHERE dest_uid IN (?, ?)",
                      gone)
    conn.close()
    # The doubt is fresh, so this run waits for a late copy of the APPEND it repeats
    # (tests/faults/test_fault_late_append.py): that wait is --timeout plus the batch's
    # time on the wire, kept short here.
    third = run_cli(*args, "--timeout", "5", env=env)
    assert third.code == 0, third.err
    assert third.json()["new_messages"] == 2
    inbox = server_state(server, b, ["INBOX"])["INBOX"]
    assert Counter(raw for raw, _, _ in inbox.values()) == Counter([*msgs, *twins])
