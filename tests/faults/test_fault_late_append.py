"""Exactly once when the bytes of an old APPEND arrive late (issue 16).

A real TCP proxy sits between the CLI and Dovecot and, like a real network, keeps
delivering what the client had already sent after the client is gone
(``keep_delivering``). It holds those bytes at a chosen byte or pattern and lets them
go at a chosen byte of the *next* run, so "the old APPEND lands after the rerun
appended the message again" happens at an exact instant, every time:

* kill -9 with the last literal of a MULTIAPPEND on the wire, immediate rerun, and
  the old APPEND lands while the rerun works: the rerun removes the copy it made;
* the same, the old APPEND landing after the rerun ended: the next run removes it;
* a stall mid-APPEND in one run (reconnect, re-append), the old one landing late;
* many randomised kill and landing instants, restore and copy.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from killloop import kill_seed
from proxy import TcpProxy
from seeding import (
    append,
    bulk_append,
    create_folder,
    folder_multiset,
    imap_login,
    seed_message,
)

TAIL = b"LATE-TAIL-OF-THE-BIG-ONE"
FOLDERS = ("INBOX", "Big")
SRC_PW = "MM_SRC_PW"
FAST = ["--retries", "4", "--retry-delay", "0.05", "--timeout", "2", "--json"]


def big_message() -> bytes:
    return seed_message(9000, 600_000, tag="big")[:-2] + b"\r\n" + TAIL + b"\r\n"


@pytest.fixture(scope="module")
def source(dovecot, tmp_path_factory):
    """Account A: INBOX with 20 x 20 KB, and "Big" with one 600 KB message ending in TAIL;
    and its backup, for restore."""
    a = dovecot.add_user()
    client = imap_login(dovecot, a)
    try:
        create_folder(client, "Big")
        bulk_append(client, "INBOX", [seed_message(i, 20_000, tag="late") for i in range(20)])
        bulk_append(client, "Big", [big_message()])
    finally:
        client.logout()
    archive = tmp_path_factory.mktemp("late") / "a.sqlite"
    done = run_cli("backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
                   password=a.password)
    assert done.code == 0, done.err
    return a, archive


class Job:
    """One restore or copy job to a fresh account B, through ``proxy`` to B's server."""

    def __init__(self, command: str, dovecot, source, proxy: TcpProxy, state: Path) -> None:
        self.command, self.dovecot, self.proxy = command, dovecot, proxy
        self.a, archive = source
        self.b = dovecot.add_user()
        dest = f"imap://{self.b.name}@127.0.0.1:{proxy.port}?tls=none"
        if command == "restore":
            head = ["restore", str(archive), dest, "--password-env", PASSWORD_ENV]
        else:
            head = ["copy", imap_url(dovecot, self.a), dest, "--password-env", SRC_PW,
                    "--dest-password-env", PASSWORD_ENV]
        self.args = [*head, "--state", str(state), *FAST]
        self.env = cli_env(self.b.password, **{SRC_PW: self.a.password})

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "migrate", *self.args], env=self.env,
                                text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def run(self) -> tuple[int, dict, str]:
        proc = self.start()
        out, err = proc.communicate(timeout=240)
        return proc.returncode, json.loads(out) if out.strip() else {}, err

    def want(self) -> Counter[tuple[str, bytes]]:
        return folder_multiset(self.dovecot, self.a, FOLDERS)

    def have(self) -> Counter[tuple[str, bytes]]:
        return folder_multiset(self.dovecot, self.b, FOLDERS)


def late_proxy(dovecot) -> TcpProxy:
    proxy = TcpProxy(dovecot.host, dovecot.imap_port, buffer_limit=16 << 20)
    proxy.keep_delivering = True
    return proxy


def kill_with_the_last_literal_on_the_wire(job: Job) -> None:
    """Run 1: the client sends all of Big's APPEND; the proxy holds it right before TAIL
    (on the wire, not at the server) and the client is killed once it has sent it all."""
    job.proxy.hold(pattern=TAIL)
    first = job.start()
    job.proxy.when_read(lambda: first.send_signal(signal.SIGKILL), pattern=TAIL + b"\r\n\r\n")
    first.communicate(timeout=120)
    assert first.returncode == -signal.SIGKILL


def land_old_append(proxy: TcpProxy) -> None:
    """Let the old connection's bytes go, and wait until the server is done with it."""
    proxy.release(index=0)
    assert proxy.wait_connection_closed(0, 60)


@pytest.mark.parametrize("command", ["restore", "copy"])
def test_old_append_lands_while_the_rerun_works(dovecot, source, tmp_path, command):
    with late_proxy(dovecot) as proxy:
        job = Job(command, dovecot, source, proxy, tmp_path / "state.sqlite")
        kill_with_the_last_literal_on_the_wire(job)
        # The rerun finds Big missing and appends it again; once its own copy has passed
        # TAIL, the old APPEND lands (and the rerun waits for that, on the wire).
        proxy.when_bytes(0, lambda: land_old_append(proxy), pattern=TAIL, min_index=1)
        code, summary, err = job.run()
    assert code == 0, err
    assert "Traceback" not in err
    assert [d["folder"] for d in summary["late_duplicates_removed"]] == ["Big"], err
    assert summary["duplicates_left"] == []
    assert "removed the second copy mailmigrate had made" in err
    assert job.have() == job.want()


@pytest.mark.parametrize("command", ["restore", "copy"])
def test_old_append_lands_after_the_rerun_and_the_next_run_removes_our_copy(
        dovecot, source, tmp_path, command):
    state = tmp_path / "state.sqlite"
    with late_proxy(dovecot) as proxy:
        job = Job(command, dovecot, source, proxy, state)
        kill_with_the_last_literal_on_the_wire(job)
        code, summary, err = job.run()  # the old bytes stay on the wire all along
        assert code == 0, err
        assert "waiting up to" in err  # it gave the old APPEND its chance first
        assert job.have() == job.want()
        with sqlite3.connect(state) as conn:
            watched = conn.execute("SELECT src_folder, reappend_uid FROM reappends").fetchall()
        assert [f for f, uid in watched if uid is not None] == ["Big"]
        land_old_append(proxy)
        assert job.have()[("Big", big_message())] == 2  # now it is there twice
        code, summary, err = job.run()
        assert code == 0, err
        assert [d["folder"] for d in summary["late_duplicates_removed"]] == ["Big"], err
        assert job.have() == job.want()
        with sqlite3.connect(state) as conn:
            assert conn.execute("SELECT COUNT(*) FROM reappends").fetchone() == (0,)
        # and the state points at the copy that stayed: one more run changes nothing
        code, summary, err = job.run()
    assert code == 0 and summary["new_messages"] == 0 and summary["found_on_destination"] == 0
    assert job.have() == job.want()


def test_a_stall_mid_append_then_the_old_append_lands_late(dovecot, source, tmp_path):
    """One run: Big's APPEND stalls on the wire (--timeout 2 of silence), the run
    reconnects, finds it missing, appends it again, and then the old one lands."""
    with late_proxy(dovecot) as proxy:
        job = Job("restore", dovecot, source, proxy, tmp_path / "state.sqlite")
        proxy.hold(pattern=TAIL)
        proxy.when_bytes(0, lambda: land_old_append(proxy), pattern=TAIL, min_index=1)
        code, summary, err = job.run()
    assert code == 0, err
    assert "reconnecting in" in err and "no byte moved for 2 s" in err, err
    assert [d["folder"] for d in summary["late_duplicates_removed"]] == ["Big"], err
    assert job.have() == job.want()


def test_an_old_append_that_never_lands_is_watched_then_forgotten(dovecot, source, tmp_path):
    """The cut APPEND never completes; the re-append is the only copy; the watch ends at
    its window (MAILMIGRATE_NOW moves the clock two hours on)."""
    state = tmp_path / "state.sqlite"
    with late_proxy(dovecot) as proxy:
        proxy.keep_delivering = False
        job = Job("restore", dovecot, source, proxy, state)
        proxy.cut_on(TAIL, rst=True)
        code, summary, err = job.run()
        assert code == 0, err
        assert job.have() == job.want() and summary["late_duplicates_removed"] == []
        with sqlite3.connect(state) as conn:
            assert conn.execute("SELECT COUNT(*) FROM reappends").fetchone() == (1,)
        # Another client's message arrives in the folder: the next look lists it once;
        # after that, while nothing arrives, a look is one UID SEARCH and no listing.
        other = seed_message(777, 2000, tag="other")
        client = imap_login(dovecot, job.b)
        append(client, "Big", other)
        client.logout()
        for listed in (True, False):
            proxy.reset_counters()
            code, summary, err = job.run()
            assert code == 0 and summary["new_messages"] == 0, err
            sent = proxy.transcript_to_server
            assert b"UID SEARCH UID " in sent  # the look itself
            assert (b"HEADER.FIELDS" in sent) is listed, sent[-2000:]
        job.env["MAILMIGRATE_NOW"] = "2099-01-01T00:00:00+00:00"
        code, summary, err = job.run()
    assert code == 0, err
    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reappends").fetchone() == (0,)
    assert job.have() == job.want() + Counter({("Big", other): 1})


@pytest.mark.slow
@pytest.mark.parametrize("command", ["restore", "copy"])
def test_kill9_mid_append_at_random_instants_then_immediate_rerun(dovecot, source, tmp_path,
                                                                  command):
    """kill -9 at a random counted byte of the destination stream (the bytes after it stay
    on the wire), an immediate rerun, the old bytes landing at a random byte of the
    rerun (or after it, then one more run): each message exactly once, every time."""
    seed, rng = kill_seed()
    total = sum(len(raw) for raw in (big_message(), *[seed_message(i, 20_000, tag="late")
                                                      for i in range(20)]))
    landed_late = 0
    for trial in range(6):
        with late_proxy(dovecot) as proxy:
            job = Job(command, dovecot, source, proxy, tmp_path / f"state-{trial}.sqlite")
            kill_at = rng.randrange(200, total + 4000)
            proxy.hold(after=kill_at)
            first = job.start()
            proxy.when_bytes(kill_at, lambda p=first: p.send_signal(signal.SIGKILL))
            first.communicate(timeout=120)
            land_at = rng.randrange(0, total + 4000)
            proxy.when_bytes(land_at, lambda p=proxy: land_old_append(p), min_index=1)
            code, summary, err = job.run()
            assert code == 0, f"seed {seed} trial {trial}: {err}"
            removed = len(summary["late_duplicates_removed"])
            # Whatever is still on the wire lands now (after every check of the rerun,
            # if it had not yet): the next run still recognises our copy and removes it.
            land_old_append(proxy)
            code, summary, err = job.run()
            assert code == 0, f"seed {seed} trial {trial}: {err}"
            removed += len(summary["late_duplicates_removed"])
            landed_late += removed
            assert job.have() == job.want(), f"seed {seed} trial {trial} ({kill_at}, {land_at})"
            assert summary["duplicates_left"] == [], f"seed {seed} trial {trial}"
    print(f"seed {seed}: {landed_late} late copies removed in 6 trials")

