"""Reconnect and continue: a real TCP proxy between the CLI and Dovecot cuts, resets and
stalls the connection several times in one run; the run still finishes with every
message exactly once. A server that stays away ends the run with exit 4, and the
next run resumes from what was committed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, imap_url, run_cli
from proxy import TcpProxy
from seeding import bulk_append, create_folder, fetch_all, imap_login, seed_message

FOLDERS = ["INBOX", "Work", "Lists"]
PER_FOLDER = 50
SIZE = 30_000
FAST_RETRY = ["--retries", "8", "--retry-delay", "0.05", "--timeout", "1.5"]
SOURCE_PW = "MM_SOURCE_PASSWORD"


def seed(dovecot, user) -> dict[str, list[bytes]]:
    """Three folders of 50 x 30 KB (4.5 MB): each folder is one fetch batch."""
    client = imap_login(dovecot, user)
    out: dict[str, list[bytes]] = {}
    try:
        for n, folder in enumerate(FOLDERS):
            if folder != "INBOX":
                create_folder(client, folder)
            msgs = [seed_message(n * 1000 + i, SIZE, tag=f"rc-{folder}") for i in range(PER_FOLDER)]
            bulk_append(client, folder, msgs)
            out[folder] = msgs
    finally:
        client.logout()
    return out


def proxied_url(proxy: TcpProxy, user) -> str:
    return f"imap://{user.name}@127.0.0.1:{proxy.port}?tls=none"


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


class FaultDriver(threading.Thread):
    """Runs a list of faults one after another, each once the previous one forced a reconnect."""

    def __init__(self, proxy: TcpProxy, faults: list[Callable[[TcpProxy], None]],
                 proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proxy, self.faults, self.proc = proxy, faults, proc
        self.fired = 0

    def run(self) -> None:
        for fault in self.faults:
            before = self.proxy.connections_accepted
            fault(self.proxy)
            # The fault has hit once the client came back with a new connection.
            if not wait_for(lambda b=before: self.proxy.connections_accepted > b
                            or self.proc.poll() is not None):
                return
            if self.proc.poll() is not None:
                return
            self.fired += 1


def after_server_bytes(n: int, action: Callable[[TcpProxy], None]) -> Callable[[TcpProxy], None]:
    """Fire ``action`` once ``n`` more bytes have come from the server."""
    def fault(proxy: TcpProxy) -> None:
        start = proxy.bytes_from_server
        wait_for(lambda: proxy.bytes_from_server >= start + n)
        action(proxy)
    return fault


def after_client_bytes(n: int, action: Callable[[TcpProxy], None]) -> Callable[[TcpProxy], None]:
    """Fire ``action`` once ``n`` more bytes went to the server (mid-APPEND on a destination)."""
    def fault(proxy: TcpProxy) -> None:
        start = proxy.bytes_to_server
        wait_for(lambda: proxy.bytes_to_server >= start + n)
        action(proxy)
    return fault


def run_with_faults(args: list[str], env: dict[str, str],
                    drivers: list[tuple[TcpProxy, list[Callable[[TcpProxy], None]]]],
                    ) -> tuple[int, str, str, list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threads = [FaultDriver(p, f, proc) for p, f in drivers]
    for t in threads:
        t.start()
    out, err = proc.communicate(timeout=180)
    for t in threads:
        t.join(timeout=5)
    return proc.returncode, out, err, [t.fired for t in threads]


def test_backup_survives_cuts_resets_and_stalls(dovecot, account, imap_proxy, tmp_path: Path):
    seeded = seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    # Spaced so that they hit several folders and several commands of one run.
    faults = [
        after_server_bytes(300_000, lambda p: p.close_all()),            # FIN mid-FETCH
        lambda p: p.cut_after(1_800_000, rst=True),                      # RST after N bytes
        lambda p: p.stall(5.0, after=900_000),                           # stall > --timeout
        after_server_bytes(700_000, lambda p: p.reset()),                # RST mid-FETCH
    ]
    code, out, err, fired = run_with_faults(
        ["backup", proxied_url(imap_proxy, account), str(archive), "--password-env", PASSWORD_ENV,
         "--json", *FAST_RETRY], cli_env(account.password), [(imap_proxy, faults)])
    assert code == 0, err
    assert fired == [len(faults)], (fired, err)
    # Faults that land close together may share one reconnect; at least three drops happened.
    assert err.count("reconnecting in") >= 3, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["new_messages"] == PER_FOLDER * len(FOLDERS)
    got = archive_contents(archive)  # asserts no UID twice per folder
    client = imap_login(dovecot, account)
    server = {f: fetch_all(client, f) for f in FOLDERS}
    client.logout()
    for folder in FOLDERS:
        assert {uid: raw for uid, (raw, _, _) in got[folder].items()} == \
            {uid: raw for uid, (raw, _, _) in server[folder].items()}, folder
        assert sorted(raw for raw, _, _ in got[folder].values()) == sorted(seeded[folder])


def test_backup_gives_up_with_exit_4_and_next_run_resumes(dovecot, account, tmp_path: Path):
    seed(dovecot, account)
    archive = tmp_path / "a.sqlite"
    proxy = TcpProxy(dovecot.host, dovecot.imap_port)
    try:
        args = ["backup", proxied_url(proxy, account), str(archive), "--password-env", PASSWORD_ENV,
                "--retries", "3", "--retry-delay", "0.05", "--timeout", "2"]
        # After the first folder (1.5 MB) is stored, the server goes away for good.
        code, _, err, _ = run_with_faults(
            args, cli_env(account.password),
            [(proxy, [after_server_bytes(2_200_000, lambda p: p.stop())])])
    finally:
        proxy.stop()
    assert code == 4, err
    lines = [ln for ln in err.splitlines() if ln.startswith("mailmigrate: error:")]
    assert len(lines) == 1 and "gave up after 3 reconnect attempts" in lines[0], err
    assert "run the same command again" in lines[0]
    assert "Traceback" not in err
    kept = archive_contents(archive)
    held = sum(len(v) for v in kept.values())
    assert 0 < held < PER_FOLDER * len(FOLDERS)
    # The next run (the server is back) fetches only the rest.
    with TcpProxy(dovecot.host, dovecot.imap_port) as again_proxy:
        again = run_cli("backup", proxied_url(again_proxy, account), str(archive), "--password-env",
                        PASSWORD_ENV, "--json", password=account.password)
        assert again.code == 0, again.err
        assert again.json()["new_messages"] == PER_FOLDER * len(FOLDERS) - held
        assert again_proxy.bytes_from_server < (PER_FOLDER * len(FOLDERS) - held + 5) * SIZE
    got = archive_contents(archive)
    assert {f: len(v) for f, v in got.items() if f in FOLDERS} == {f: PER_FOLDER for f in FOLDERS}


def test_retries_zero_stops_at_first_drop(dovecot, account, imap_proxy, tmp_path: Path):
    seed(dovecot, account)
    code, _, err, _ = run_with_faults(
        ["backup", proxied_url(imap_proxy, account), str(tmp_path / "a.sqlite"), "--password-env",
         PASSWORD_ENV, "--retries", "0"], cli_env(account.password),
        [(imap_proxy, [after_server_bytes(300_000, lambda p: p.reset())])])
    assert code == 4, err
    assert "lost while" in err and "Traceback" not in err


def _dest_contents(dovecot, user) -> Counter[tuple[str, bytes]]:
    client = imap_login(dovecot, user)
    try:
        return Counter((f, raw) for f in FOLDERS for raw, _, _ in fetch_all(client, f).values())
    finally:
        client.logout()


def test_copy_survives_faults_on_both_sides_exactly_once(dovecot, tmp_path: Path):
    a, c = dovecot.add_user(), dovecot.add_user()
    seeded = seed(dovecot, a)
    env = cli_env(c.password, **{SOURCE_PW: a.password, "XDG_STATE_HOME": str(tmp_path / "xdg")})
    with TcpProxy(dovecot.host, dovecot.imap_port) as src, \
            TcpProxy(dovecot.host, dovecot.imap_port) as dst:
        src_faults = [after_server_bytes(400_000, lambda p: p.reset()),
                      lambda p: p.stall(5.0, after=600_000)]
        # Cut the destination while APPEND data flows: some cut APPENDs have landed
        # (in doubt), some not; neither may be lost or doubled.
        dst_faults = [after_client_bytes(500_000, lambda p: p.reset()),
                      after_client_bytes(700_000, lambda p: p.close_all()),
                      after_client_bytes(600_000, lambda p: p.reset())]
        code, _, err, fired = run_with_faults(
            ["copy", proxied_url(src, a), proxied_url(dst, c), "--password-env", SOURCE_PW,
             "--dest-password-env", PASSWORD_ENV, "--json", *FAST_RETRY],
            env, [(src, src_faults), (dst, dst_faults)])
    assert code == 0, err
    assert fired == [len(src_faults), len(dst_faults)], (fired, err)
    assert "Traceback" not in err
    want = Counter((f, raw) for f, msgs in seeded.items() for raw in msgs)
    assert _dest_contents(dovecot, c) == want


def test_restore_survives_resets_mid_append_exactly_once(dovecot, tmp_path: Path):
    a, c = dovecot.add_user(), dovecot.add_user()
    seeded = seed(dovecot, a)
    archive = tmp_path / "a.sqlite"
    done = run_cli("backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
                   password=a.password)
    assert done.code == 0, done.err
    env = cli_env(c.password, XDG_STATE_HOME=str(tmp_path / "xdg"))
    with TcpProxy(dovecot.host, dovecot.imap_port) as dst:
        faults = [after_client_bytes(300_000, lambda p: p.reset()),
                  after_client_bytes(800_000, lambda p: p.reset()),
                  after_client_bytes(400_000, lambda p: p.close_all()),
                  lambda p: p.stall(5.0, after=200)]
        code, _, err, fired = run_with_faults(
            ["restore", str(archive), proxied_url(dst, c), "--password-env", PASSWORD_ENV,
             *FAST_RETRY], env, [(dst, faults)])
    assert code == 0, err
    assert fired[0] >= 3, (fired, err)
    assert "Traceback" not in err
    want = Counter((f, raw) for f, msgs in seeded.items() for raw in msgs)
    assert _dest_contents(dovecot, c) == want


def test_drain_survives_resets_mid_retr_then_deletes_exactly_what_it_archived(
        dovecot, account, tmp_path: Path):
    seeded = seed(dovecot, account)  # POP3 sees INBOX only: 50 x 30 KB
    archive = tmp_path / "a.sqlite"
    with TcpProxy(dovecot.host, dovecot.pop3_port) as proxy:
        # Every session dies after 400 KB: the 1.5 MB maildrop needs several, and
        # what one session downloaded is never downloaded again.
        proxy.cut_after(400_000, per_connection=True, rst=True)
        code, out, err, _ = run_with_faults(
            ["drain", f"pop3://{account.name}@127.0.0.1:{proxy.port}?tls=none", str(archive),
             "--password-env", PASSWORD_ENV, "--delete", "--json", *FAST_RETRY],
            cli_env(account.password), [])
        sessions = proxy.connections_accepted
        carried = proxy.bytes_from_server
    assert code == 0, err
    assert sessions >= 4, err
    # Each cut can waste what was in flight in the RETR pipeline (a few messages);
    # downloading what was already archived again would carry 2x or more.
    assert carried < 1.7 * PER_FOLDER * SIZE, "messages were downloaded twice"
    assert "Traceback" not in err
    assert json.loads(out)["new_messages"] == PER_FOLDER
    conn = sqlite3.connect(archive)
    try:
        raws = sorted(bytes(r) for (r,) in conn.execute("SELECT raw FROM messages"))
    finally:
        conn.close()
    assert raws == sorted(seeded["INBOX"])
    # Deleted from the server only now that it is archived, and all of it.
    client = imap_login(dovecot, account)
    try:
        assert fetch_all(client, "INBOX") == {}
    finally:
        client.logout()


def test_backup_over_a_link_that_drops_every_megabyte(dovecot, account, imap_proxy, tmp_path: Path):
    """No connection ever carries a whole 1.5 MB batch: the batch is fetched in halves."""
    seed(dovecot, account)
    archive = tmp_path / "a.tree"
    imap_proxy.cut_after(1_000_000, per_connection=True)
    code, out, err, _ = run_with_faults(
        ["backup", proxied_url(imap_proxy, account), str(archive), "--password-env", PASSWORD_ENV,
         "--json", *FAST_RETRY], cli_env(account.password), [])
    assert code == 0, err
    assert imap_proxy.connections_accepted >= 6, err
    assert json.loads(out)["new_messages"] == PER_FOLDER * len(FOLDERS)
    got = archive_contents(archive)
    assert {f: len(got[f]) for f in FOLDERS} == {f: PER_FOLDER for f in FOLDERS}
