"""Exactly once under kill -9, and memory that does not grow with the mailbox."""

from __future__ import annotations

import mailbox
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import archive_contents, backup_args, cli_env
from killloop import FOLDERS, GrowingMailbox, kill_loop, kill_seed, via
from proxy import TcpProxy
from seeding import bulk_append, create_folder, imap_login, seed_message
from test_backup import assert_archive_matches_server, server_state

pytestmark = pytest.mark.slow


def start_backup(server, user, archive: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrate", *backup_args(server, user, archive, "--quiet")],
        env=cli_env(user.password), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(("server", "kind", "connections"),
                         [("dovecot", "archive.sqlite", 1), ("dovecot", "tree", 1),
                          ("dovecot", "archive.sqlite", 3), ("cyrus", "archive.sqlite", 1),
                          ("cyrus", "tree", 1)], indirect=["server"])
def test_kill9_loop_ends_exactly_once(server, account, tmp_path, kind, connections):
    """Also with three folders read at once: kills land while several connections fetch."""
    seed, rng = kill_seed()
    folders = FOLDERS
    client = imap_login(server, account)
    growing = GrowingMailbox(client, rng)
    first = growing.add(250)
    archive = tmp_path / kind
    with TcpProxy(server.host, server.imap_port, record=False) as proxy:
        kill_loop(backup_args(via(proxy, server), account, archive, "--quiet", "--max-connections",
                              str(connections)),
                  cli_env(account.password), rng, seed, lambda: growing.add(60), proxy, first)
    client.logout()
    counter = growing.count
    final = start_backup(server, account, archive)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode() if final.stderr else ""
    state = server_state(server, account, folders)
    assert sum(len(v) for v in state.values()) == counter
    assert_archive_matches_server(archive, state)  # every uid once, bytes/flags/dates equal
    if kind == "tree":
        # no frame left over from a killed run: each mbox holds exactly its indexed messages
        contents = archive_contents(archive)
        for name in folders:
            box = mailbox.mbox(str(archive / f"{name}.mbox"), create=False)
            assert len(box) == len(contents[name]), f"seed {seed}: stray frames in {name}"


def peak_rss_kb(args: list[str], env: dict[str, str]) -> int:
    """Peak RSS of one CLI run, as the process itself saw it (see tests/rss_probe.py)."""
    probe = Path(__file__).with_name("rss_probe.py")
    out = Path(env.get("TMPDIR", "/tmp")) / f"mm-rss-{os.getpid()}-{random.randrange(1 << 30)}"
    done = subprocess.run([sys.executable, str(probe), *args], env={**env, "MM_RSS_FILE": str(out)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode()
    try:
        return int(out.read_text())
    finally:
        out.unlink()


# 200 messages of 60 KB already fill more than one 6 MB fetch batch, so both
# runs reach the steady state (one batch being fetched, one being stored); what
# a leak per message would add on top shows as the difference.
MEMORY_MESSAGE_SIZE = 60_000


def seed_for_memory(dovecot, count: int):
    user = dovecot.add_user()
    client = imap_login(dovecot, user)
    for start in range(0, count, 500):
        bulk_append(client, "INBOX", [seed_message(i, MEMORY_MESSAGE_SIZE)
                                      for i in range(start, min(count, start + 500))])
    client.logout()
    return user


def test_memory_does_not_grow_with_message_count(dovecot, tmp_path):
    peaks: dict[tuple[str, int], int] = {}
    for count in (200, 2000):
        user = seed_for_memory(dovecot, count)
        for kind in ("archive.sqlite", "tree"):
            archive = tmp_path / f"{count}-{kind}"
            peaks[kind, count] = peak_rss_kb(backup_args(dovecot, user, archive, "--quiet"),
                                             cli_env(user.password))
    print(f"backup peak RSS (KiB): {peaks}")
    assert_flat(peaks)


def test_memory_with_parallel_connections_grows_per_connection_not_per_message(dovecot, tmp_path):
    """Three folders of 42 MB each (126 MB): each extra connection may add what one
    connection holds (the batch being stored, the next one fetched, and the read buffer
    of that fetch: about three batches), never memory in proportion to the mailbox
    (a worker waits for the writer before it fetches further)."""
    from migrate.engine.transfer import DEFAULT_BATCH_BYTES

    user = dovecot.add_user()
    client = imap_login(dovecot, user)
    for name in ("A", "B", "C"):
        create_folder(client, name)
        for start in range(0, 700, 350):
            bulk_append(client, name, [seed_message(i, MEMORY_MESSAGE_SIZE, tag=name)
                                       for i in range(start, start + 350)])
    client.logout()
    peaks = {n: peak_rss_kb(backup_args(dovecot, user, tmp_path / f"{n}.sqlite", "--quiet",
                                        "--max-connections", str(n)), cli_env(user.password))
             for n in (1, 3)}
    print(f"backup peak RSS (KiB) by connections: {peaks}")
    batch_kb = DEFAULT_BATCH_BYTES // 1024
    assert peaks[3] - peaks[1] < 2 * 3 * batch_kb + 12 * 1024, peaks  # two more connections
    assert peaks[3] - peaks[1] < 3 * 700 * MEMORY_MESSAGE_SIZE // 1024 // 2, peaks


def assert_flat(peaks: dict[tuple[str, int], int]) -> None:
    """Ten times the mail (120 MB instead of 12 MB) may add at most what the engine's
    two in-flight batches can hold, never memory in proportion to the mailbox."""
    from migrate.engine.transfer import DEFAULT_BATCH_BYTES

    allowed_kb = 2 * DEFAULT_BATCH_BYTES // 1024
    for kind in ("archive.sqlite", "tree"):
        growth = peaks[kind, 2000] - peaks[kind, 200]
        assert growth < allowed_kb, (kind, growth, peaks)
        assert growth < (2000 - 200) * MEMORY_MESSAGE_SIZE // 1024 // 5, (kind, growth, peaks)
