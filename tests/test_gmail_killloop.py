"""Exactly once under kill -9 with Gmail (issue 13), in all three directions: backup of a
Gmail account, restore of its archive to Gmail, and copy Gmail -> Gmail. The CLI is
killed mid-transfer at random instants (tests/killloop.py: the proxy holds the link at a
random byte, then SIGKILL), the source grows between runs, and a final run must leave
every message exactly once with its labels: in the archive one stored message per Gmail
message and one placement per label folder; on the destination Gmail one message (the
fake server fails on two messages with the same bytes) with the source's labels,
flags, place and INTERNALDATE."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fake_gmail import FakeGmail, seed_message
from killloop import kill_loop, kill_seed, via
from proxy import TcpProxy
from test_gmail_restore import comparable

PW, PW2 = "MM_GMAIL_PASSWORD", "MM_GMAIL_DEST_PASSWORD"
LABELSETS = [("\\Inbox",), ("\\Inbox", "Work"), ("Work", "Reisen/2024"), ("\\Sent",),
             ("\\Sent", "Work", "\\Important"), (), ("Reisen/2024",)]


def url(server, user) -> str:
    return f"imap://{user.name}@{server.host}:{server.imap_port}?tls=none"


class GrowingGmail:
    """A Gmail account that gets ``n`` more messages, with random labels, per call."""

    def __init__(self, account, rng: random.Random) -> None:
        self.account, self.rng, self.count = account, rng, 0

    def add(self, n: int) -> int:
        added = 0
        for _ in range(n):
            raw = seed_message(self.count, "kl", self.rng.choice([300, 5_000, 40_000]))
            self.count += 1
            where = "spam" if self.rng.random() < 0.05 else "all"
            self.account.add(raw, labels=self.rng.choice(LABELSETS) if where == "all" else (),
                             flags={"\\Seen"} if self.rng.random() < 0.5 else set(),
                             where=where)
            added += len(raw)
        return added


def archive_is_exact(archive: Path, account) -> None:
    conn = sqlite3.connect(archive)
    try:
        stored = {raw: json.loads(labels) for raw, labels in conn.execute(
            "SELECT m.raw, g.labels FROM gmail_messages g JOIN messages m ON m.id = g.message_id")}
        rows = conn.execute("SELECT folder, msgid FROM mail").fetchall()
    finally:
        conn.close()
    assert {bytes(r): sorted(v) for r, v in stored.items()} == {
        m.raw: sorted(m.labels) for m in account.messages.values()}
    placed: dict[str, list[str]] = {}
    for folder, mid in rows:
        placed.setdefault(folder, []).append(mid)
    for name, _ in account.folder_names():
        box = account.box(name)
        want = sorted(account.messages[m].raw.split(b"\r\n")[0].split(b" ")[1].decode()
                      for m in box.uid_of)
        assert sorted(placed.get(name, [])) == want, name


@pytest.mark.slow
def test_backup_of_gmail_kill9_loop_ends_exactly_once(tmp_path):
    seed, rng = kill_seed()
    with FakeGmail() as gmail:
        user = gmail.add_user()
        account = gmail.account(user)
        grow = GrowingGmail(account, rng)
        first = grow.add(120)
        archive = tmp_path / "a.sqlite"
        env = cli_env(**{PW: user.password})
        with TcpProxy(gmail.host, gmail.imap_port, record=False) as proxy:
            args = ["backup", url(via(proxy, gmail), user), str(archive), "--password-env", PW,
                    "--quiet", "--max-connections", "2"]
            kill_loop(args, env, rng, seed, lambda: grow.add(30), proxy, first, kills_wanted=8)
        final = run_cli("backup", url(gmail, user), str(archive), "--password-env", PW, "--json",
                        env=env)
        assert final.code == 0, f"seed {seed}: {final.err}"
        archive_is_exact(archive, account)


@pytest.mark.slow
def test_restore_to_gmail_kill9_loop_ends_exactly_once(tmp_path):
    seed, rng = kill_seed()
    with FakeGmail() as gmail, FakeGmail() as other:
        user, target = gmail.add_user(), other.add_user()
        grow = GrowingGmail(gmail.account(user), rng)
        archive = tmp_path / "a.sqlite"
        env = cli_env(XDG_STATE_HOME=str(tmp_path / "xdg"),
                      **{PW: user.password, PW2: target.password})

        def backup_more(n: int) -> int:
            added = grow.add(n)
            done = run_cli("backup", url(gmail, user), str(archive), "--password-env", PW,
                           "--quiet", env=env)
            assert done.code == 0, done.err
            return added

        first = backup_more(120)
        with TcpProxy(other.host, other.imap_port, record=False) as proxy:
            args = ["restore", str(archive), url(via(proxy, other), target), "--password-env",
                    PW2, "--quiet"]
            kill_loop(args, env, rng, seed, lambda: backup_more(30), proxy, first,
                      to_server=True, kills_wanted=8)
        final = run_cli("restore", str(archive), url(other, target), "--password-env", PW2,
                        "--json", env=env)
        assert final.code == 0, f"seed {seed}: {final.err}"
        assert final.json()["duplicates_left"] == [], f"seed {seed}"
        assert comparable(other.account(target)) == comparable(gmail.account(user)), f"seed {seed}"


@pytest.mark.slow
def test_copy_gmail_to_gmail_kill9_loop_ends_exactly_once(tmp_path):
    seed, rng = kill_seed()
    with FakeGmail() as gmail:
        user, target = gmail.add_user(), gmail.add_user()
        grow = GrowingGmail(gmail.account(user), rng)
        first = grow.add(120)
        env = cli_env(XDG_STATE_HOME=str(tmp_path / "xdg"),
                      **{PW: user.password, PW2: target.password})
        with TcpProxy(gmail.host, gmail.imap_port, record=False) as proxy:
            proxied = via(proxy, gmail)  # both accounts through the proxy: a hold stops both
            args = ["copy", url(proxied, user), url(proxied, target), "--password-env", PW,
                    "--dest-password-env", PW2, "--quiet", "--max-connections", "2"]
            kill_loop(args, env, rng, seed, lambda: grow.add(30), proxy, first, kills_wanted=8)
        final = run_cli("copy", url(gmail, user), url(gmail, target), "--password-env", PW,
                        "--dest-password-env", PW2, "--json", env=env)
        assert final.code == 0, f"seed {seed}: {final.err}"
        assert final.json()["duplicates_left"] == [], f"seed {seed}"
        assert comparable(gmail.account(target)) == comparable(gmail.account(user)), f"seed {seed}"
