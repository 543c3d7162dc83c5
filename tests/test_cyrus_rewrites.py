"""What a destination that changes messages on APPEND does to restore, copy and verify.

Cyrus replaces 8-bit header bytes with 'X' and refuses bare-LF messages (see
docs/servers.md). These tests state what mailmigrate must still guarantee there, on
Dovecot (which keeps what it is given) and on Cyrus: rewritten messages are recognised
by their rewrite-tolerant form (migrate/formats/rewrites.py), verify names what the
destination changed, and APPEND sends CRLF line ends.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from seeding import append, imap_login
from test_backup import DATES, server_state
from test_copy import SOURCE_PW, copy_args
from test_restore import restore_args, state_env

DESTINATIONS = [pytest.param("dovecot", id="dovecot"), pytest.param("cyrus", id="cyrus")]

EIGHT_BIT = ["Message-ID: <umlaut@rw>\r\nSubject: Grüße aus Köln\r\n\r\nÄÖÜ\r\n".encode(),
             "Message-ID: <latin@rw>\r\nFrom: Jörg <j@x>\r\n\r\nplain\r\n".encode("latin-1")]
PLAIN = [f"Message-ID: <plain{i}@rw>\r\nSubject: plain {i}\r\n\r\nx\r\n".encode()
         for i in range(3)]


def seed_source(dovecot) -> object:
    a = dovecot.add_user()
    client = imap_login(dovecot, a)
    for raw in [*PLAIN, *EIGHT_BIT]:
        append(client, "INBOX", raw, ("\\Seen",), DATES[1])
    client.logout()
    return a


def inbox(server, user) -> Counter[bytes]:
    return Counter(raw for raw, _, _ in server_state(server, user, ["INBOX"])["INBOX"].values())


@pytest.mark.parametrize("server", DESTINATIONS, indirect=True)
def test_a_rerun_with_a_fresh_state_file_adds_no_second_copy(dovecot, server, tmp_path):
    a, b = seed_source(dovecot), server.add_user()
    env = cli_env(b.password, **{SOURCE_PW: a.password})
    first = run_cli(*copy_args(dovecot, a, server, b, "--state", str(tmp_path / "one.sqlite")),
                    env=env)
    assert first.code == 0, first.err
    again = run_cli(*copy_args(dovecot, a, server, b, "--state", str(tmp_path / "two.sqlite"),
                               "--json"), env=env)
    assert again.code == 0, again.err
    assert sum(inbox(server, b).values()) == len(PLAIN) + len(EIGHT_BIT), inbox(server, b)


@pytest.mark.parametrize("server", DESTINATIONS, indirect=True)
def test_an_append_left_in_doubt_is_found_not_repeated(dovecot, server, tmp_path):
    """The crash window between APPEND and "done", made deterministic by the state file."""
    a, b = seed_source(dovecot), server.add_user()
    state = tmp_path / "state.sqlite"
    env = cli_env(b.password, **{SOURCE_PW: a.password})
    args = copy_args(dovecot, a, server, b, "--state", str(state), "--json")
    assert run_cli(*args, env=env).code == 0
    conn = sqlite3.connect(state)
    with conn:
        conn.execute("UPDATE placements SET state = 'doubt', dest_uid = NULL")
    conn.close()
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0
    conn = sqlite3.connect(state)
    assert conn.execute("SELECT state, COUNT(*) FROM placements GROUP BY state").fetchall() == [
        ("done", len(PLAIN) + len(EIGHT_BIT))], "every doubt settled as found"
    conn.close()
    # New mail makes the next run look at the folder again: still one copy of each.
    client = imap_login(dovecot, a)
    append(client, "INBOX", b"Message-ID: <new@rw>\r\nSubject: new\r\n\r\nx\r\n", (), DATES[2])
    client.logout()
    third = run_cli(*args, env=env)
    assert third.code == 0, third.err
    assert sum(inbox(server, b).values()) == len(PLAIN) + len(EIGHT_BIT) + 1, inbox(server, b)


@pytest.mark.parametrize("server", DESTINATIONS, indirect=True)
def test_verify_after_copy_is_clean_or_names_what_the_destination_changed(dovecot, server,
                                                                         tmp_path):
    a, b = seed_source(dovecot), server.add_user()
    env = cli_env(b.password, **{SOURCE_PW: a.password, "XDG_STATE_HOME": str(tmp_path / "x")})
    assert run_cli(*copy_args(dovecot, a, server, b), env=env).code == 0
    check = run_cli("verify", imap_url(dovecot, a), imap_url(server, b), "--password-env",
                    SOURCE_PW, "--dest-password-env", PASSWORD_ENV, env=env)
    # Nothing is missing: what differs is what the destination changed, and verify says so.
    assert "missing: " not in check.out, check.out
    assert check.code == 0 or "changed" in check.out, check.out


@pytest.mark.parametrize("server", DESTINATIONS, indirect=True)
def test_restore_of_an_lf_mbox_lands_whole(server, tmp_path):
    """A Thunderbird-style mbox has LF line ends; the destination must get every message."""
    mbox = tmp_path / "Old.mbox"
    mbox.write_bytes(b"".join(
        b"From a@b Mon Jan  1 00:00:00 2001\nMessage-ID: <lf%d@rw>\nSubject: lf %d\n\nbody\n\n"
        % (i, i) for i in range(3)))
    b = server.add_user()
    env = state_env(tmp_path, b.password)
    state_file = tmp_path / "state.sqlite"
    args = restore_args(mbox, server, b, "--json", "--state", str(state_file))
    done = run_cli(*args, env=env)
    assert done.code == 0, done.out + done.err
    assert sum(inbox(server, b).values()) == 0  # the file's folder is "Old", not INBOX
    state = server_state(server, b, ["Old"])["Old"]
    assert len(state) == 3
    # APPEND sent CRLF line ends; every byte else is the file's.
    assert sorted(raw for raw, _, _ in state.values()) == [
        b"Message-ID: <lf%d@rw>\r\nSubject: lf %d\r\n\r\nbody\r\n" % (i, i) for i in range(3)]
    # The CRLF copies are the LF messages to the exactly-once look-up: an APPEND left
    # in doubt is found, and so is every message by a run with a fresh state file ...
    conn = sqlite3.connect(state_file)
    with conn:
        conn.execute("UPDATE placements SET state = 'doubt', dest_uid = NULL")
    conn.close()
    settled = run_cli(*args, env=env)
    assert settled.code == 0, settled.out + settled.err
    assert settled.json()["new_messages"] == 0 and settled.json()["in_doubt_resolved"] == 3
    fresh = run_cli(*restore_args(mbox, server, b, "--json", "--state",
                                  str(tmp_path / "fresh.sqlite")), env=env)
    assert fresh.code == 0, fresh.out + fresh.err
    assert fresh.json()["new_messages"] == 0 and fresh.json()["found_on_destination"] == 3
    assert len(server_state(server, b, ["Old"])["Old"]) == 3
    # ... and to verify, which compares the file with the server.
    check = run_cli("verify", str(mbox), imap_url(server, b), "--password-env", PASSWORD_ENV,
                    env=env)
    assert check.code == 0, check.out + check.err
