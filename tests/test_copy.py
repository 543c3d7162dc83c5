"""`mailmigrate copy` IMAP -> IMAP against real servers (Dovecot, and Cyrus where the test
takes `server`): fidelity, '.' separator, special use, incremental re-runs, and exactly once
under kill -9."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dovecot as dovecot_module
import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from killloop import FOLDERS, GrowingMailbox, kill_loop, kill_seed, via
from proxy import TcpProxy
from seeding import append, create_folder, imap_login
from test_backup import DATES, seed_rich_account, server_state
from test_restore import placed

SOURCE_PW = "MM_SOURCE_PASSWORD"


def copy_args(server_a, a, server_b, b, *extra: str) -> list[str]:
    return ["copy", imap_url(server_a, a), imap_url(server_b, b), "--password-env", SOURCE_PW,
            "--dest-password-env", PASSWORD_ENV, *extra]


def copy_env(tmp_path: Path, a, b) -> dict[str, str]:
    return cli_env(b.password, **{SOURCE_PW: a.password, "XDG_STATE_HOME": str(tmp_path / "xdg")})


@pytest.fixture(scope="module")
def dovecot_sent():
    """A Dovecot whose \\Sent folder is called "Sent" (the shared ones call it "Gesendet")."""
    server = dovecot_module.DovecotServer("/", special_use={
        "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
        "Archive": "\\Archive"})
    server.start()
    yield server
    server.stop()


def test_copy_is_exact_then_incremental(server, tmp_path):
    a, c = server.add_user(), server.add_user()
    total = seed_rich_account(server, a)
    env = copy_env(tmp_path, a, c)
    first = run_cli(*copy_args(server, a, server, c, "--json"), env=env)
    assert first.code == 0, first.err
    assert first.json()["new_messages"] == total
    assert placed(server_state(server, c)) == placed(server_state(server, a))
    # A second copy changes nothing, and skips every folder after one STATUS.
    again = run_cli(*copy_args(server, a, server, c, "--json"), env=env)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0
    assert all(f["unchanged"] for f in again.json()["per_folder"])
    # New mail and a flag change at the source are carried over by the next run.
    client = imap_login(server, a)
    append(client, "INBOX", b"Message-ID: <later@t>\r\nSubject: later\r\n\r\nx\r\n",
           ("$Later",), DATES[3])
    client.select_folder("INBOX")
    first_uid = min(client.search(["ALL"]))
    client.add_flags([first_uid], ["\\Flagged", "$Important"])
    client.logout()
    third = run_cli(*copy_args(server, a, server, c, "--json"), env=env)
    assert third.code == 0, third.err
    assert third.json()["new_messages"] == 1 and third.json()["flags_updated"] == 1
    assert placed(server_state(server, c)) == placed(server_state(server, a))


def test_copy_to_dot_separator_server_maps_the_tree(dovecot, dovecot_dot, tmp_path):
    a, d = dovecot.add_user(), dovecot_dot.add_user()
    client = imap_login(dovecot, a)
    for name in ("A/B/C", "v1.2", "v1.2/notes", "日本語/Ünter"):
        create_folder(client, name, parents=True)
    expected: dict[str, list[tuple[bytes, tuple[str, ...]]]] = {}
    for i, name in enumerate(["INBOX", "A/B/C", "v1.2", "v1.2/notes", "日本語/Ünter", "Gesendet"]):
        raw = f"Message-ID: <d{i}@t>\r\nSubject: {name}\r\n\r\nin {name}\r\n".encode()
        flags = ("\\Seen", "$Forwarded") if i % 2 else ("\\Flagged",)
        append(client, name, raw, flags, DATES[i % len(DATES)])
        expected.setdefault(name, []).append((raw, tuple(sorted(flags))))
    client.logout()
    result = run_cli(*copy_args(dovecot, a, dovecot_dot, d, "--json"), env=copy_env(tmp_path, a, d))
    assert result.code == 0, result.err
    renamed = {r["from"]: r["to"] for r in result.json()["folders_renamed"]}
    assert renamed == {"v1.2": "v1_2", "v1.2/notes": "v1_2/notes"}
    source = server_state(dovecot, a)
    dest = server_state(dovecot_dot, d)
    mapping = {"v1.2": "v1_2", "v1.2/notes": "v1_2/notes"}
    for name, box in source.items():
        if box:
            assert Counter(box.values()) == Counter(dest[mapping.get(name, name)].values()), name
    client = imap_login(dovecot_dot, d)
    raw_names = {n for _, _, n in client.list_folders()}
    client.logout()
    assert {"A.B.C", "v1_2.notes", "日本語.Ünter"} <= raw_names


def test_gesendet_lands_in_destination_sent(dovecot, dovecot_sent, tmp_path):
    a, d = dovecot.add_user(), dovecot_sent.add_user()
    client = imap_login(dovecot, a)
    create_folder(client, "Gesendet/2019")
    sent = b"Message-ID: <sent@t>\r\nSubject: sent\r\n\r\nsent mail\r\n"
    old = b"Message-ID: <old@t>\r\nSubject: old\r\n\r\nsent in 2019\r\n"
    draft = b"Message-ID: <draft@t>\r\nSubject: draft\r\n\r\nunfinished\r\n"
    append(client, "Gesendet", sent, ("\\Seen",), DATES[2])
    append(client, "Gesendet/2019", old, ("\\Seen",), DATES[1])
    append(client, "Entwürfe", draft, ("\\Draft",), DATES[3])
    client.logout()
    env = copy_env(tmp_path, a, d)
    dry = run_cli(*copy_args(dovecot, a, dovecot_sent, d, "--dry-run"), env=env)
    assert dry.code == 0, dry.err
    assert "from Gesendet to Sent" in dry.out and "create folder Sent/2019" in dry.out
    result = run_cli(*copy_args(dovecot, a, dovecot_sent, d, "--json"), env=env)
    assert result.code == 0, result.err
    assert result.json()["folder_map"]["Gesendet"] == "Sent"
    state = server_state(dovecot_sent, d)
    assert [raw for raw, _, _ in state["Sent"].values()] == [sent]
    assert [raw for raw, _, _ in state["Sent/2019"].values()] == [old]
    assert [raw for raw, _, _ in state["Drafts"].values()] == [draft]
    assert "Gesendet" not in state and "Entwürfe" not in state
    # verify pairs the folders the same way
    check = run_cli("verify", imap_url(dovecot, a), imap_url(dovecot_sent, d), "--password-env",
                    SOURCE_PW, "--dest-password-env", PASSWORD_ENV, env=env)
    assert check.code == 0, check.out + check.err
    assert "OK    Sent (from Gesendet): 1 messages" in check.out


@pytest.mark.slow
@pytest.mark.parametrize(("server", "connections"), [("dovecot", 1), ("dovecot", 3), ("cyrus", 1)],
                         indirect=["server"])
def test_copy_kill9_loop_ends_exactly_once(server, tmp_path, connections):
    """Also with three source connections reading while the destination is written
    (on Dovecot; Cyrus gets the one-connection loop)."""
    seed, rng = kill_seed()
    a, c = server.add_user(), server.add_user()
    folders = FOLDERS
    client = imap_login(server, a)
    mailbox = GrowingMailbox(client, rng)
    first = mailbox.add(250)
    env = copy_env(tmp_path, a, c)
    with TcpProxy(server.host, server.imap_port, record=False) as proxy:
        proxied = via(proxy, server)  # both accounts through the proxy: a hold stops both sides
        kill_loop(copy_args(proxied, a, proxied, c, "--quiet", "--max-connections", str(connections)),
                  env, rng, seed, lambda: mailbox.add(60), proxy, first)
    client.logout()
    counter = mailbox.count
    final = run_cli(*copy_args(server, a, server, c, "--json"), env=env)
    assert final.code == 0, f"seed {seed}: {final.err}"
    source, dest = server_state(server, a, folders), server_state(server, c, folders)
    assert sum(len(v) for v in source.values()) == counter
    for name in folders:
        assert Counter(dest[name].values()) == Counter(source[name].values()), f"seed {seed}: {name}"
