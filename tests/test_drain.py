"""`mailmigrate drain` against each server's POP3 (Dovecot, Cyrus): fidelity, re-runs, retention,
faults, kill -9."""

from __future__ import annotations

import base64
import os
import poplib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, run_cli
from proxy import TcpProxy
from seeding import bulk_append, corpus_messages, fetch_all, imap_login, seed_message
from servers import stored

ARCHIVE_KINDS = ["archive.sqlite", "tree"]
DOTS = (b"Message-ID: <dots@mailmigrate.test>\r\nSubject: dots\r\n\r\n.\r\nline\r\n.\r\n"
        b"..\r\n.leading\r\n. \r\n.\r\n")
NO_FINAL_NEWLINE = b"Message-ID: <nofinal@mailmigrate.test>\r\nSubject: x\r\n\r\nno newline"
BARE_LF = b"Message-ID: <lf@mailmigrate.test>\nSubject: lf\n\nbare\n.\nlf\n"


def big_message(tag: int, megabytes: int) -> bytes:
    blob = base64.encodebytes(random.Random(tag).randbytes(megabytes << 20)).replace(b"\n", b"\r\n")
    return (f"Message-ID: <big{tag}@mailmigrate.test>\r\nSubject: big {tag}\r\n".encode()
            + b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + blob)


def url(server, user, port: int | None = None) -> str:
    return f"pop3://{user.name}@127.0.0.1:{port or server.pop3_port}?tls=none"


def drain_args(server, user, archive, *extra: str, port: int | None = None) -> list[str]:
    return ["drain", url(server, user, port), str(archive), "--password-env", PASSWORD_ENV,
            *extra]


def drain(server, user, archive, *extra: str, port: int | None = None, env=None):
    result = run_cli(*drain_args(server, user, archive, "--json", *extra, port=port),
                     env=env or cli_env(user.password))
    assert "Traceback" not in result.err, result.err
    return result


def retr_all(server, user) -> dict[str, bytes]:
    """{UIDL: RETR bytes, dot-unstuffed, terminator dropped} fetched with poplib itself."""
    saved = poplib._MAXLINE
    poplib._MAXLINE = 1 << 24  # the corpus has 7 KB lines; only this test client needs more
    try:
        conn = poplib.POP3(server.host, server.pop3_port, timeout=60)
        conn.user(user.name)
        conn.pass_(user.password)
        listing = [line.decode().split() for line in conn.uidl()[1]]
        # Pipelined (RFC 2449 PIPELINING style), as mailmigrate itself reads: Cyrus's
        # pop3d answers a lone RETR only after ~30 ms, which 1,000 RETRs would feel.
        for number, _ in listing:
            conn._putcmd(f"RETR {number}")
        out = {}
        for _, uidl in listing:
            lines = conn._getlongresp()[1]  # poplib unstuffs and strips line ends
            out[uidl] = b"".join(x + b"\r\n" for x in lines)
        conn.quit()
        return out
    finally:
        poplib._MAXLINE = saved


def archived(archive: Path) -> list[tuple[str, bytes]]:
    """[(UIDL, raw)] of the archive's INBOX, every row (duplicates would show)."""
    if archive.suffix == ".sqlite":
        conn = sqlite3.connect(archive)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "folder_messages" not in tables:  # killed before the schema was written
                return []
            return [(k, bytes(raw)) for k, raw in conn.execute(
                "SELECT fm.uidl, m.raw FROM folder_messages fm JOIN messages m"
                " ON m.id = fm.message_id JOIN folders f ON f.id = fm.folder_id"
                " WHERE f.name = 'INBOX'")]
        finally:
            conn.close()
    from migrate.stores.mbox_archive import MboxArchive

    index = archive / ".mailmigrate" / "index.sqlite"
    if not index.exists():
        return []  # killed before the index was created
    conn = sqlite3.connect(index)
    try:
        if "messages" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}:
            return []  # killed before the schema was committed
    finally:
        conn.close()
    store = MboxArchive(archive, readonly=True)
    try:
        folders = {f.name: f for f in store.list_folders()}
        if "INBOX" not in folders:
            return []
        return [(m.key, m.raw) for m in store.iter_messages(folders["INBOX"])]
    finally:
        store.close()


def uidl_of(server, uid: int, uidvalidity: int) -> str:
    if server.kind == "cyrus":
        return f"{uidvalidity}.{uid}"  # Cyrus: UIDVALIDITY.UID in decimal
    return f"{uid:08x}{uidvalidity:08x}"  # Dovecot's pop3_uidl_format %08Xu%08Xv (lower-case)


def server_by_uidl(server, user) -> dict[str, bytes]:
    """{UIDL: IMAP BODY[]} of INBOX, via IMAP."""
    client = imap_login(server, user)
    try:
        uidvalidity = client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        return {uidl_of(server, uid, uidvalidity): raw
                for uid, (raw, _, _) in fetch_all(client, "INBOX").items()}
    finally:
        client.logout()


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_drain_is_byte_exact_for_1000_messages(server, account, tmp_path, kind):
    # bulk_append sends bytes as they are: Cyrus refuses bare LF ones (and a few others).
    corpus = [raw for _, raw in corpus_messages()
              if stored(server.kind, raw, as_sent=True) is not None]
    specials = [DOTS, NO_FINAL_NEWLINE, BARE_LF, big_message(1, 3), big_message(2, 5)]
    specials = [m for m in specials if stored(server.kind, m, as_sent=True) is not None]
    client = imap_login(server, account)
    bulk_append(client, "INBOX", corpus)
    bulk_append(client, "INBOX", specials)
    seeded = max(800, 1000 - len(corpus) - len(specials))
    bulk_append(client, "INBOX", [seed_message(i, 2000 + 37 * i, tag="drain")
                                  for i in range(seeded)])
    client.logout()
    total = len(corpus) + len(specials) + seeded
    assert total >= 1000
    archive = tmp_path / kind
    started = time.monotonic()
    result = drain(server, account, archive)
    took = time.monotonic() - started
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["new_messages"] == total and summary["errors"] == [] and summary["failed"] == []
    assert summary["deleted"] == 0 and summary["left_on_server"] == total
    print(f"drain {kind}: {total} msgs, {summary['new_bytes'] / 1e6:.1f} MB in {took:.2f}s "
          f"(incl. process start): {total / took:.0f} msgs/s, {summary['new_bytes'] / 1e6 / took:.1f} MB/s")

    rows = archived(archive)
    assert len(rows) == total and len({k for k, _ in rows}) == total, "each UIDL once"
    got = dict(rows)
    # 1. exactly what RETR returns (poplib's own unstuffing), for every message ...
    retr = retr_all(server, account)
    imap = server_by_uidl(server, account)
    assert set(got) == set(retr) == set(imap)
    for key, raw in imap.items():
        if raw.endswith(b"\r\n"):
            assert got[key] == retr[key], key
        else:
            # ... except the CRLF the server must add before ".": RETR = BODY[] + CRLF here.
            assert retr[key] == raw + b"\r\n" and got[key] == raw, key
        # 2. and for both servers that is IMAP BODY[] byte for byte (bare LF already CRLF).
        assert got[key] == raw, key
    assert DOTS in got.values() and NO_FINAL_NEWLINE in got.values()
    if BARE_LF in specials:
        assert BARE_LF.replace(b"\n", b"\r\n") in got.values()
    assert sum(len(r) > 5_000_000 for r in got.values()) == 1
    assert any(max(map(len, r.split(b"\r\n"))) > 7_000 for r in got.values()), "long lines"
    # everything stays on the server by default
    assert len(retr) == total

    again = drain(server, account, archive)
    assert again.code == 0 and again.json()["new_messages"] == 0
    client = imap_login(server, account)
    bulk_append(client, "INBOX", [seed_message(5000, tag="later")])
    client.logout()
    third = drain(server, account, archive)
    assert third.json()["new_messages"] == 1 and third.json()["new_bytes"] == len(
        seed_message(5000, tag="later"))
    assert len(archived(archive)) == total + 1


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_dry_run_then_delete(server, account, tmp_path, kind):
    client = imap_login(server, account)
    bulk_append(client, "INBOX", [seed_message(i, 3000) for i in range(30)])
    client.logout()
    archive = tmp_path / kind
    dry = drain(server, account, archive, "--delete", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.json()["dry_run"] is True
    assert dry.json()["new_messages"] == 30 and dry.json()["delete_planned"] == 30
    assert "would delete 30" in dry.err
    assert not archive.exists(), "a dry run creates nothing"
    assert len(server_by_uidl(server, account)) == 30

    keep = drain(server, account, archive)  # archive 30, delete nothing
    assert keep.code == 0 and keep.json()["new_messages"] == 30
    client = imap_login(server, account)
    bulk_append(client, "INBOX", [seed_message(100 + i, 3000) for i in range(5)])
    client.logout()
    dry2 = drain(server, account, archive, "--delete", "--dry-run")
    assert dry2.json()["new_messages"] == 5 and dry2.json()["delete_planned"] == 35
    assert len(archived(archive)) == 30, "the dry run wrote nothing"

    real = drain(server, account, archive, "--delete")
    assert real.code == 0, real.err
    assert real.json()["new_messages"] == 5 and real.json()["deleted"] == 35
    assert real.json()["quit_confirmed"] is True
    assert server_by_uidl(server, account) == {}
    assert len(archived(archive)) == 35


def test_delete_older_than_with_controlled_clock(server, account, tmp_path):
    archive = tmp_path / "a.sqlite"
    client = imap_login(server, account)
    bulk_append(client, "INBOX", [seed_message(i, tag="old") for i in range(4)])
    day1 = cli_env(account.password, MAILMIGRATE_NOW="2030-01-01T08:00:00+00:00")
    first = drain(server, account, archive, "--delete-older-than", "14", env=day1)
    assert first.json()["new_messages"] == 4 and first.json()["deleted"] == 0
    bulk_append(client, "INBOX", [seed_message(10 + i, tag="new") for i in range(3)])
    day10 = cli_env(account.password, MAILMIGRATE_NOW="2030-01-10T08:00:00+00:00")
    second = drain(server, account, archive, "--delete-older-than", "14", env=day10)
    assert second.json()["new_messages"] == 3 and second.json()["deleted"] == 0
    # one second short of 14 days for the first four: still kept
    almost = cli_env(account.password, MAILMIGRATE_NOW="2030-01-15T07:59:59+00:00")
    third = drain(server, account, archive, "--delete-older-than", "14", env=almost)
    assert third.json()["deleted"] == 0
    day15 = cli_env(account.password, MAILMIGRATE_NOW="2030-01-15T08:00:00+00:00")
    dry = drain(server, account, archive, "--delete-older-than", "14", "--dry-run", env=day15)
    assert dry.json()["delete_planned"] == 4 and len(server_by_uidl(server, account)) == 7
    fourth = drain(server, account, archive, "--delete-older-than", "14", env=day15)
    assert fourth.json()["deleted"] == 4 and fourth.json()["left_on_server"] == 3
    left = server_by_uidl(server, account).values()
    assert sorted(left) == sorted(seed_message(10 + i, tag="new") for i in range(3))
    day24 = cli_env(account.password, MAILMIGRATE_NOW="2030-01-24T08:00:00+00:00")
    fifth = drain(server, account, archive, "--delete-older-than", "14", env=day24)
    assert fifth.json()["deleted"] == 3 and fifth.json()["new_messages"] == 0
    assert server_by_uidl(server, account) == {}
    assert len(archived(archive)) == 7
    client.logout()


class QuitCutter(TcpProxy):
    """The loopback proxy, cutting the connection (RST) the moment the client sends QUIT.

    The QUIT never reaches the server: the connection dies before QUIT, as
    with a network drop at the worst moment.
    """

    def _count_to_server(self, conn, data: bytes) -> None:  # type: ignore[override]
        super()._count_to_server(conn, data)
        if self.armed and b"QUIT" in data:
            conn.abort(rst=True)

    armed = True


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_connection_dropped_before_quit_deletes_nothing(server, account, tmp_path, kind):
    client = imap_login(server, account)
    bulk_append(client, "INBOX", [seed_message(i, 20_000) for i in range(40)])
    client.logout()
    before = server_by_uidl(server, account)
    archive = tmp_path / kind
    with QuitCutter(server.host, server.pop3_port) as proxy:
        cut = drain(server, account, archive, "--delete", port=proxy.port)
        assert cut.code == 4, cut.err
        assert "before the server confirmed QUIT" in cut.err
        assert cut.json()["deleted"] == 0 and cut.json()["new_messages"] == 40
        assert b"DELE" in proxy.transcript_to_server
        assert server_by_uidl(server, account) == before, "the server kept every message"
        assert sorted(r for _, r in archived(archive)) == sorted(before.values())

        proxy.armed = False
        proxy.reset_counters()
        again = drain(server, account, archive, "--delete", port=proxy.port)
        assert again.code == 0, again.err
        assert again.json()["new_messages"] == 0 and again.json()["deleted"] == 40
        assert b"RETR" not in proxy.transcript_to_server, "deleted without downloading again"
        assert proxy.bytes_from_server < 10_000
    assert server_by_uidl(server, account) == {}
    assert sorted(r for _, r in archived(archive)) == sorted(before.values())


def start_drain(server, user, archive: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrate", *drain_args(server, user, archive, "--quiet", *extra)],
        env=cli_env(user.password), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_kill9_loop_exactly_once_and_nothing_lost(server, account, tmp_path, kind):
    """kill -9 before/during RETR, mid-DELE and after QUIT reached the server, with and
    without --delete. Each kill instant is chosen through the proxy (see tests/killloop.py):
    a random byte of the mail this run must download, the k-th DELE, or the QUIT whose
    answer is held back, so every kill lands and the assertions never race the clock."""
    from killloop import run_until_killed, via
    from proxy import TcpProxy

    seed = int(os.environ.get("MM_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    client = imap_login(server, account)
    sent: dict[bytes, int] = {}
    counter = 0

    def add_mail(n: int) -> tuple[int, int]:
        nonlocal counter
        batch = [seed_message(counter + i, rng.choice([800, 6_000, 60_000]), tag=kind[:4])
                 for i in range(n)]
        counter += n
        bulk_append(client, "INBOX", batch)
        sent.update((raw, 0) for raw in batch)
        return n, sum(len(raw) for raw in batch)

    added = add_mail(300)
    archive = tmp_path / kind
    phases: Counter[str] = Counter()
    with TcpProxy(server.host, server.pop3_port, record=False) as proxy:
        proxied = via(proxy, server)
        for attempt in range(12):
            if attempt:
                added = add_mail(rng.choice([20, 80]))
            delete = attempt % 2 == 1 or rng.random() < 0.3
            extra = ("--delete",) if delete else ()
            phase = rng.choice(["retr", "dele", "quit"]) if delete else "retr"
            phases[phase] += 1
            new_messages, new_bytes = added

            def arm(phase: str = phase, n: int = new_messages, size: int = new_bytes) -> None:
                if phase == "retr":
                    proxy.hold(after=rng.randrange(0, size), direction="s2c", everything=True)
                elif phase == "dele":
                    proxy.hold_after_client_sends(b"DELE ", rng.randint(1, n))
                else:  # the server has QUIT (and so deletes); its answer never arrives
                    proxy.hold_after_client_sends(b"QUIT")

            argv = drain_args(proxied, account, archive, "--quiet", *extra)
            killed, err, code = run_until_killed(argv, cli_env(account.password), proxy, rng, arm,
                                                 (0.0, 0.3))
            assert code in (0, -signal.SIGKILL), f"seed {seed}: {err}"
            assert killed, f"seed {seed}: run {attempt + 1} ({phase}) finished before its kill"
            # after every run: a message gone from the server is in the archive
            on_server = set(server_by_uidl(server, account).values())
            in_archive = Counter(raw for _, raw in archived(archive))
            gone = [raw for raw in sent if raw not in on_server]
            assert all(in_archive[raw] == 1 for raw in gone), f"seed {seed}: lost a deleted message"
            assert max(in_archive.values(), default=1) == 1, f"seed {seed}: duplicate in archive"
    assert phases["retr"] and phases["dele"] + phases["quit"], f"seed {seed}: {phases}"
    client.logout()
    final = start_drain(server, account, archive, "--delete")
    assert final.wait(timeout=300) == 0, final.stderr.read().decode() if final.stderr else ""
    rows = archived(archive)
    assert len(rows) == len({k for k, _ in rows}) == counter, f"seed {seed}"
    assert Counter(raw for _, raw in rows) == Counter(sent.keys()), f"seed {seed}"
    assert server_by_uidl(server, account) == {}


def test_drain_memory_does_not_grow_with_the_maildrop(dovecot, tmp_path):
    """Peak RSS follows the largest message and the batch size, not the maildrop."""
    from test_crash_safety import assert_flat, peak_rss_kb, seed_for_memory

    peaks: dict[tuple[str, int], int] = {}
    for count in (200, 2000):
        user = seed_for_memory(dovecot, count)
        for kind in ("archive.sqlite", "tree"):
            peaks[kind, count] = peak_rss_kb(
                drain_args(dovecot, user, tmp_path / f"{count}-{kind}", "--quiet"),
                cli_env(user.password))
    print(f"drain peak RSS (KiB): {peaks}")
    assert_flat(peaks)
