"""``--max-connections``: several folders read at once, never more connections than
asked, a provider's cap costs speed and nothing else, faults on any one connection
are survived, and every message still lands exactly once.

Connections are counted by the real TCP proxy between the CLI and Dovecot
(``TcpProxy.peak_connections``); the cap is Dovecot's own
``mail_max_userip_connections``, the setting providers use for theirs.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, run_cli
from dovecot import DovecotServer
from proxy import TcpProxy
from seeding import bulk_append, create_folder, fetch_all, imap_login, seed_message

FOLDERS = ["INBOX", "Work", "Lists", "Travel", "Receipts", "Family"]
PER_FOLDER = 40
SIZE = 20_000


def seed(server, user) -> None:
    client = imap_login(server, user)
    try:
        for n, folder in enumerate(FOLDERS):
            if folder != "INBOX":
                create_folder(client, folder)
            bulk_append(client, folder, [seed_message(n * 1000 + i, SIZE, tag=f"mc-{folder}")
                                         for i in range(PER_FOLDER)])
    finally:
        client.logout()


def assert_exactly_once(server, user, archive) -> None:
    """Every server message once in the archive, bytes and flags equal."""
    got = archive_contents(archive)
    client = imap_login(server, user)
    try:
        for folder in FOLDERS:
            want = fetch_all(client, folder)
            have = got[folder]
            assert sorted(have) == sorted(want), f"{folder}: uids differ"
            for uid, (body, flags, _date) in want.items():
                assert have[uid][0] == body, f"{folder} uid {uid}: bytes differ"
                assert set(have[uid][1]) == set(flags), f"{folder} uid {uid}: flags differ"
    finally:
        client.logout()


def backup(proxy: TcpProxy, user, archive, *extra: str):
    return run_cli("backup", f"imap://{user.name}@127.0.0.1:{proxy.port}?tls=none", str(archive),
                   "--password-env", PASSWORD_ENV, "--json", *extra, env=cli_env(user.password))


def test_folders_are_read_in_parallel_up_to_the_limit(dovecot, account, tmp_path):
    seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        plan = backup(proxy, account, archive, "--dry-run")
        done = backup(proxy, account, archive, "--max-connections", "3")
        peak = proxy.peak_connections
        again = backup(proxy, account, archive, "--max-connections", "3")
    assert done.code == 0, done.err
    assert peak == 3, peak  # three folders at once, never a fourth connection
    summary = json.loads(done.out)
    assert summary["new_messages"] == len(FOLDERS) * PER_FOLDER
    # the per-folder summary keeps the listing order, whatever order workers finished in
    order = [f["folder"] for f in json.loads(plan.out)["per_folder"]]
    assert [f["folder"] for f in summary["per_folder"]] == order
    assert again.code == 0 and json.loads(again.out)["new_messages"] == 0
    assert_exactly_once(dovecot, account, archive)


def test_one_connection_is_the_default(dovecot, account, tmp_path):
    seed(dovecot, account)
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        done = backup(proxy, account, tmp_path / "a.sqlite")
        assert done.code == 0, done.err
        assert proxy.peak_connections == 1


def test_a_server_cap_costs_speed_not_mail(tmp_path):
    """Dovecot allows 2 connections per user+IP; asking for 5 still archives everything,
    and the user is told that the run went on with fewer.

    Which connections the cap refuses is made certain, not raced: the proxy lets the
    logins through one at a time (so Dovecot counts each before the next), and holds
    every FETCH answer until all five connections had their login answered, so the
    two admitted ones are still open when the other three ask."""
    with DovecotServer(max_userip_connections=2) as server:
        user = server.add_user()
        seed(server, user)
        archive = tmp_path / "tree"
        with TcpProxy("127.0.0.1", server.imap_port) as proxy:
            proxy.admit_serially(rb"Logged in|\[LIMIT\]")
            proxy.hold_responses(rb"\* \d+ FETCH", until=lambda: proxy.settled_connections >= 5)
            done = backup(proxy, user, archive, "--max-connections", "5", "--retry-delay", "0.05")
            accepted = proxy.connections_accepted
        assert done.code == 0, done.err
        assert "Traceback" not in done.err
        assert accepted == 5, accepted  # one connection per worker, none retried
        assert done.err.count("not opened") == 3, done.err  # the cap's three refusals
        assert done.err.count("going on with fewer") == 3, done.err
        assert "Maximum number of connections" in done.err
        assert json.loads(done.out)["new_messages"] == len(FOLDERS) * PER_FOLDER
        assert_exactly_once(server, user, archive)


def test_drops_on_parallel_connections_are_survived(dovecot, account, tmp_path):
    """Each connection is cut after 150 KB, again and again: every worker reconnects
    on its own and the run still ends with every message exactly once."""
    seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        proxy.cut_after(150_000, per_connection=True)
        done = backup(proxy, account, archive, "--max-connections", "3", "--retries", "8",
                      "--retry-delay", "0.05", "--timeout", "2")
        accepted = proxy.connections_accepted
    assert done.code == 0, done.err
    assert accepted >= 3 + 5, accepted  # the cuts really forced reconnects
    assert done.err.count("reconnecting in") >= 5
    assert_exactly_once(dovecot, account, archive)


def test_a_server_that_stays_away_stops_all_workers_and_the_next_run_resumes(
        dovecot, account, tmp_path):
    seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        def vanish() -> None:  # the server goes away mid-run: every connection, for good
            while proxy.bytes_from_server < 300_000:
                time.sleep(0.005)
            proxy.stop()
        killer = threading.Thread(target=vanish, daemon=True)
        killer.start()
        done = backup(proxy, account, archive, "--max-connections", "3", "--retries", "2",
                      "--retry-delay", "0.05", "--timeout", "2")
        killer.join(5)
    assert done.code == 4, done.err
    assert "gave up" in done.err
    assert "Traceback" not in done.err
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        resumed = backup(proxy, account, archive, "--max-connections", "3")
    assert resumed.code == 0, resumed.err
    assert_exactly_once(dovecot, account, archive)


def test_rate_is_shared_by_all_connections(dovecot, account, tmp_path):
    client = imap_login(dovecot, account)
    for name in ("A", "B", "C"):
        create_folder(client, name)
        bulk_append(client, name, [seed_message(i, 5_000, tag=f"r{name}") for i in range(10)])
    client.logout()
    start = time.monotonic()
    with TcpProxy("127.0.0.1", dovecot.imap_port) as proxy:
        done = backup(proxy, account, tmp_path / "a.sqlite", "--max-connections", "3",
                      "--rate", "20")
        peak = proxy.peak_connections
    took = time.monotonic() - start
    assert done.code == 0, done.err
    assert peak == 3
    assert took >= 1.4, took  # 30 messages at 20/s in all, not 20/s per connection


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_bad_max_connections_is_a_usage_error(tmp_path, bad):
    done = run_cli("backup", "imap://u@127.0.0.1:1?tls=none", str(tmp_path / "a.sqlite"),
                   "--max-connections", bad, env=cli_env("pw"))
    assert done.code == 2, done.err
    assert "--max-connections" in done.err and "Traceback" not in done.err


def test_copy_reads_with_several_connections_and_writes_with_one(dovecot, tmp_path):
    """copy: up to N source connections, one destination connection (the exactly-once
    state of the destination has one writer); the copy is exact, a re-run adds nothing."""
    a, b = dovecot.add_user(), dovecot.add_user()
    seed(dovecot, a)
    env = cli_env(b.password, MM_SRC_PW=a.password, XDG_STATE_HOME=str(tmp_path / "xdg"))
    with TcpProxy("127.0.0.1", dovecot.imap_port) as src, \
            TcpProxy("127.0.0.1", dovecot.imap_port) as dst:
        def copy():
            return run_cli("copy", f"imap://{a.name}@127.0.0.1:{src.port}?tls=none",
                           f"imap://{b.name}@127.0.0.1:{dst.port}?tls=none",
                           "--password-env", "MM_SRC_PW", "--dest-password-env", PASSWORD_ENV,
                           "--max-connections", "3", "--json", env=env)
        done = copy()
        peaks = (src.peak_connections, dst.peak_connections)
        again = copy()
    assert done.code == 0, done.err
    assert peaks == (3, 1), peaks
    assert json.loads(done.out)["new_messages"] == len(FOLDERS) * PER_FOLDER
    assert again.code == 0 and json.loads(again.out)["new_messages"] == 0
    src_client, dst_client = imap_login(dovecot, a), imap_login(dovecot, b)
    try:
        for folder in FOLDERS:
            want = sorted((body, tuple(sorted(flags))) for body, flags, _ in
                          fetch_all(src_client, folder).values())
            have = sorted((body, tuple(sorted(flags))) for body, flags, _ in
                          fetch_all(dst_client, folder).values())
            assert have == want, folder
    finally:
        src_client.logout()
        dst_client.logout()
