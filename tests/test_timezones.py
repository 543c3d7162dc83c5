"""INTERNALDATE across servers that keep it differently: Dovecot in its own zone (the
offset given at APPEND is lost, the instant kept), Cyrus in UTC only. Backup, restore and
copy keep the instant to the second in every direction, and ``verify`` finds no
difference; the offset a server reports is its own business."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import dovecot as dovecot_module
import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from seeding import append, create_folder, imap_login
from test_backup import server_state
from test_copy import SOURCE_PW, copy_args
from test_restore import restore_args, state_env

DATES = [datetime(2001, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=14))),   # the day before in UTC
         datetime(2012, 2, 29, 23, 59, 59, tzinfo=timezone(timedelta(hours=-11))),
         datetime(2019, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=1))),  # a DST gap in Europe
         datetime(2024, 6, 15, 6, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=45))),
         datetime(2025, 10, 26, 1, 30, tzinfo=UTC)]


@pytest.fixture(scope="module")
def dovecot_la():
    """A Dovecot whose processes live in America/Los_Angeles: its INTERNALDATEs say -0800/-0700."""
    server = dovecot_module.DovecotServer(tz="America/Los_Angeles").start()
    yield server
    server.stop()


def seed(server, user) -> None:
    client = imap_login(server, user)
    create_folder(client, "Zeit")
    for i, when in enumerate(DATES):
        raw = f"Message-ID: <tz{i}@t>\r\nSubject: tz {i}\r\n\r\n{when.isoformat()}\r\n".encode()
        append(client, "Zeit", raw, ("\\Seen",), when)
    client.logout()


def instants(server, user) -> dict[bytes, datetime]:
    """{bytes: INTERNALDATE} of the folder, checked to be aware datetimes."""
    box = server_state(server, user, ["Zeit"])["Zeit"]
    assert all(d is not None and d.tzinfo is not None for _, _, d in box.values())
    return {raw: idate for raw, _, idate in box.values()}


def offsets(server, user) -> set[timedelta | None]:
    return {d.utcoffset() for d in instants(server, user).values()}


def test_instants_round_trip_between_a_local_zone_and_utc(dovecot_la, cyrus, dovecot, tmp_path):
    la, cy, back = dovecot_la.add_user(), cyrus.add_user(), dovecot.add_user()
    seed(dovecot_la, la)
    original = instants(dovecot_la, la)
    assert sorted(original.values()) == sorted(DATES)  # the same instants ...
    assert offsets(dovecot_la, la) <= {timedelta(hours=-8), timedelta(hours=-7)}  # ... in LA time
    # LA -> archive -> Cyrus (UTC)
    archive = tmp_path / "la.sqlite"
    assert run_cli(*backup_args(dovecot_la, la, archive), password=la.password).code == 0
    done = run_cli(*restore_args(archive, cyrus, cy), env=state_env(tmp_path, cy.password))
    assert done.code == 0, done.err
    assert instants(cyrus, cy) == original
    assert offsets(cyrus, cy) == {timedelta(0)}
    env = cli_env(cy.password, **{SOURCE_PW: la.password, "XDG_STATE_HOME": str(tmp_path / "x")})
    check = run_cli("verify", str(archive), imap_url(cyrus, cy), "--password-env", PASSWORD_ENV,
                    env=env)
    assert check.code == 0, check.out + check.err
    check = run_cli("verify", imap_url(dovecot_la, la), imap_url(cyrus, cy), "--password-env",
                    SOURCE_PW, "--dest-password-env", PASSWORD_ENV, env=env)
    assert check.code == 0, check.out + check.err
    # Cyrus -> Dovecot in another zone, by copy, and Cyrus -> archive -> LA again
    env_back = cli_env(back.password, **{SOURCE_PW: cy.password,
                                         "XDG_STATE_HOME": str(tmp_path / "y")})
    copied = run_cli(*copy_args(cyrus, cy, dovecot, back), env=env_back)
    assert copied.code == 0, copied.err
    assert instants(dovecot, back) == original
    utc_archive = tmp_path / "cyrus.sqlite"
    assert run_cli(*backup_args(cyrus, cy, utc_archive), password=cy.password).code == 0
    again = dovecot_la.add_user()
    done = run_cli(*restore_args(utc_archive, dovecot_la, again),
                   env=state_env(tmp_path / "z", again.password))
    assert done.code == 0, done.err
    assert instants(dovecot_la, again) == original
    check = run_cli("verify", str(utc_archive), imap_url(dovecot_la, again), "--password-env",
                    PASSWORD_ENV, password=again.password)
    assert check.code == 0, check.out + check.err
