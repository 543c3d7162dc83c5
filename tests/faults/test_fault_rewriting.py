"""Servers that change what they store (issue 11): a destination that rewrites 8-bit
header bytes (Cyrus's munge8bit), one that writes '?' per character, one that refuses
them (reject8bit) or bare newlines. mailmigrate must still know its own message there
(no second copy after a rerun with a fresh state file, or after kill -9 at any point),
``verify`` must say which messages the destination changed, and refusals are reported
one line each with the server's reason (exit 1).

The source is the real Dovecot; the destination is ``RewritingImap`` (see its module
for which server does what), behind the real TCP proxy where faults are needed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from killloop import kill_seed
from proxy import TcpProxy
from rewriting_imap import RewritingImap
from seeding import append, bulk_append, imap_login, seed_message

from migrate.formats.rewrites import loose_hash
from migrate.stores.imap_writer import wire_form

TAIL = b"REWRITE-TAIL-OF-THE-LAST-ONE"


def eight_bit(i: int, size: int = 0) -> bytes:
    head = (f"Message-ID: <8bit-{i}@mailmigrate.test>\r\n".encode()
            + b"From: J\xc3\xb6rg M\xc3\xbcller <j@example.org>\r\n"
            + f"Subject: Gr\u00fc\u00dfe aus K\u00f6ln {i}\r\n".encode()
            + b"Date: Mon, 01 Mar 2021 10:00:00 +0000\r\n\r\n")
    return head + b"Body " + str(i).encode() + b" is plain.\r\n" + b"x" * size + b"\r\n"


def no_id_eight_bit() -> bytes:
    return (b"From: Ren\xc3\xa9 <r@example.org>\r\nSubject: Caf\xc3\xa9 ohne Message-ID\r\n"
            b"Date: Tue, 02 Mar 2021 10:00:00 +0000\r\n\r\nno id here\r\n")


def last_big() -> bytes:
    return eight_bit(99, 300_000) + TAIL + b"\r\n"


@pytest.fixture(scope="module")
def source(dovecot, tmp_path_factory):
    """Account A: INBOX with 8-bit-header messages, ASCII ones, one without Message-ID,
    and last a big 8-bit one ending in TAIL; its backup for restore."""
    a = dovecot.add_user()
    client = imap_login(dovecot, a)
    try:
        bulk_append(client, "INBOX", [seed_message(i, 3000, tag="rw") for i in range(8)])
        for i in range(6):
            append(client, "INBOX", eight_bit(i), ("\\Seen",), None)
        append(client, "INBOX", no_id_eight_bit(), (), None)
        append(client, "INBOX", last_big(), (), None)
    finally:
        client.logout()
    archive = tmp_path_factory.mktemp("rw") / "a.sqlite"
    done = run_cli("backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
                   password=a.password)
    assert done.code == 0, done.err
    return a, archive


def source_messages(dovecot, a) -> list[bytes]:
    client = imap_login(dovecot, a)
    try:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
        return [bytes(v[b"BODY[]"]) for _, v in sorted(data.items())]
    finally:
        client.logout()


def restore(archive: Path, port: int, state: Path, *extra: str, env: dict | None = None):
    return run_cli("restore", str(archive), f"imap://u@127.0.0.1:{port}?tls=none",
                   "--password-env", PASSWORD_ENV, "--state", str(state), "--json",
                   "--retries", "4", "--retry-delay", "0.05", "--timeout", "2", *extra,
                   env=env or cli_env("pw"))


def assert_each_once(server: RewritingImap, want: list[bytes]) -> None:
    """Every source message is there exactly once, in the form the server keeps."""
    kept = server.contents("INBOX")
    assert sorted(kept) == sorted(server.stored_form(raw) for raw in want)
    assert sorted(loose_hash(wire_form(k)) for k in kept) == \
        sorted(loose_hash(wire_form(w)) for w in want)


@pytest.mark.parametrize("mode", ["munge8bit", "question"])
def test_a_rerun_with_a_fresh_state_file_finds_the_rewritten_messages(dovecot, source, tmp_path,
                                                                      mode):
    a, archive = source
    want = source_messages(dovecot, a)
    with RewritingImap({mode}) as server:
        first = restore(archive, server.port, tmp_path / "one.sqlite")
        assert first.code == 0, first.err
        assert first.json()["new_messages"] == len(want)
        assert server.contents("INBOX") != want  # the server did rewrite some
        again = restore(archive, server.port, tmp_path / "fresh.sqlite")
        assert again.code == 0, again.err
        assert again.json()["new_messages"] == 0
        assert again.json()["found_on_destination"] == len(want)
        assert_each_once(server, want)


def test_kill9_at_any_point_leaves_no_second_copy_on_a_rewriting_server(dovecot, source,
                                                                        tmp_path):
    """kill -9 at random counted bytes of the APPEND stream (with what was sent still
    delivered), rerun after rerun with the same state, then once with a fresh one."""
    seed, rng = kill_seed()
    a, archive = source
    want = source_messages(dovecot, a)
    total = sum(len(m) for m in want)
    state = tmp_path / "state.sqlite"
    with RewritingImap({"munge8bit"}) as server, TcpProxy("127.0.0.1", server.port) as proxy:
        proxy.keep_delivering = True
        for _ in range(6):
            proc = subprocess.Popen(
                [sys.executable, "-m", "migrate", "restore", str(archive),
                 f"imap://u@127.0.0.1:{proxy.port}?tls=none", "--password-env", PASSWORD_ENV,
                 "--state", str(state), "--quiet"], env=cli_env("pw"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            proxy.when_bytes(rng.randrange(100, total), lambda p=proc: p.send_signal(signal.SIGKILL))
            _, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}: {err.decode()}"
            proxy.clear_faults()
            assert proxy.wait_closed(30)
        done = restore(archive, proxy.port, state)
        assert done.code == 0, f"seed {seed}: {done.err}"
        assert_each_once(server, want)
        fresh = restore(archive, proxy.port, tmp_path / "fresh.sqlite")
        assert fresh.code == 0 and fresh.json()["new_messages"] == 0, f"seed {seed}: {fresh.err}"
        assert_each_once(server, want)


def test_a_late_copy_on_a_rewriting_server_is_recognised_and_ours_removed(dovecot, source,
                                                                          tmp_path):
    a, archive = source
    want = source_messages(dovecot, a)
    state = tmp_path / "state.sqlite"
    with RewritingImap({"munge8bit"}) as server, TcpProxy("127.0.0.1", server.port) as proxy:
        proxy.keep_delivering = True
        proxy.hold(pattern=TAIL)
        first = subprocess.Popen(
            [sys.executable, "-m", "migrate", "restore", str(archive),
             f"imap://u@127.0.0.1:{proxy.port}?tls=none", "--password-env", PASSWORD_ENV,
             "--state", str(state), "--quiet"], env=cli_env("pw"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proxy.when_read(lambda: first.send_signal(signal.SIGKILL), pattern=TAIL + b"\r\n\r\n")
        first.communicate(timeout=120)

        def land() -> None:
            proxy.release(index=0)
            assert proxy.wait_connection_closed(0, 30)

        proxy.when_bytes(0, land, pattern=TAIL, min_index=1)
        done = restore(archive, proxy.port, state)
    assert done.code == 0, done.err
    assert len(done.json()["late_duplicates_removed"]) == 1, done.err
    assert_each_once(server, want)


def test_without_uidplus_a_late_copy_is_reported_not_deleted(source, tmp_path):
    _, archive = source
    state = tmp_path / "state.sqlite"
    with RewritingImap({"munge8bit"}, uidplus=False) as server, \
            TcpProxy("127.0.0.1", server.port) as proxy:
        proxy.keep_delivering = True
        proxy.hold(pattern=TAIL)
        first = subprocess.Popen(
            [sys.executable, "-m", "migrate", "restore", str(archive),
             f"imap://u@127.0.0.1:{proxy.port}?tls=none", "--password-env", PASSWORD_ENV,
             "--state", str(state), "--quiet"], env=cli_env("pw"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proxy.when_read(lambda: first.send_signal(signal.SIGKILL), pattern=TAIL + b"\r\n\r\n")
        first.communicate(timeout=120)

        def land() -> None:
            proxy.release(index=0)
            assert proxy.wait_connection_closed(0, 30)

        proxy.when_bytes(0, land, pattern=TAIL, min_index=1)
        done = restore(archive, proxy.port, state)
        kept = server.contents("INBOX")
    assert done.code == 1, done.err
    lines = [ln for ln in done.err.splitlines() if "twice" in ln]
    assert len(lines) == 1 and "remove one copy by hand" in lines[0], done.err
    assert "APPENDUID" in lines[0]
    assert kept.count(server.stored_form(last_big())) == 2  # nothing was deleted
    assert done.json()["duplicates_left"] and done.json()["late_duplicates_removed"] == []


def test_refused_messages_are_one_line_each_and_the_run_goes_on(dovecot, source, tmp_path):
    a, archive = source
    want = source_messages(dovecot, a)
    eight = [m for m in want if any(b >= 0x80 for b in m[:m.find(b"\r\n\r\n")])]
    with RewritingImap({"reject8bit"}) as server:
        done = restore(archive, server.port, tmp_path / "s.sqlite")
        kept = server.contents("INBOX")
        again = restore(archive, server.port, tmp_path / "s.sqlite")
    assert done.code == 1, done.err
    refused = [ln for ln in done.err.splitlines() if "not copied" in ln]
    assert len(refused) == len(eight), done.err
    assert all("non-ASCII characters in headers" in ln for ln in refused), done.err
    assert "Traceback" not in done.err
    assert sorted(kept) == sorted(m for m in want if m not in eight)
    # the refused ones are tried again next time (still refused), the rest not twice
    assert again.code == 1 and again.json()["new_messages"] == 0
    assert len(again.json()["message_errors"]) == len(eight)


def test_bare_newlines_are_sent_as_crlf(tmp_path):
    """An LF mbox lands on a server that refuses bare LFs (as Cyrus does) and on one that
    stores them as CRLF, byte for byte the same: APPEND sends every bare LF as CRLF. A
    rerun with a fresh state file finds it (the look-up compares CRLF forms)."""
    lf = b"Message-ID: <lf@t>\nSubject: bare lf\n\nline one\nline two\n"
    box = tmp_path / "lf.mbox"
    box.write_bytes(b"From x@y Mon Mar  1 10:00:00 2021\n" + lf + b"\n")
    for mode in ("rejectlf", "crlf"):
        with RewritingImap({mode}) as server:
            done = restore(box, server.port, tmp_path / f"{mode}.sqlite")
            assert done.code == 0, done.err
            assert server.refused == 0
            again = restore(box, server.port, tmp_path / f"{mode}-fresh.sqlite")
            assert again.code == 0 and again.json()["new_messages"] == 0, again.err
            (kept,) = [m for name in server.folders for m in server.contents(name)]
            assert kept == lf.replace(b"\n", b"\r\n"), kept


def test_verify_names_the_messages_the_destination_changed(dovecot, source, tmp_path):
    a, archive = source
    want = source_messages(dovecot, a)
    eight = [m for m in want if any(b >= 0x80 for b in m[:m.find(b"\r\n\r\n")])]
    with RewritingImap({"munge8bit"}) as server:
        assert restore(archive, server.port, tmp_path / "s.sqlite").code == 0
        url = f"imap://u@127.0.0.1:{server.port}?tls=none"
        text = run_cli("verify", str(archive), url, "--password-env", PASSWORD_ENV,
                       env=cli_env("pw"))
        as_json = run_cli("verify", str(archive), url, "--password-env", PASSWORD_ENV, "--json",
                          env=cli_env("pw"))
        server.folders["INBOX"].messages.pop(max(server.folders["INBOX"].messages))  # lose one
        lost = run_cli("verify", str(archive), url, "--password-env", PASSWORD_ENV, "--json",
                       env=cli_env("pw"))
    assert text.code == 0, text.out + text.err
    assert f"{len(eight)} changed by the destination" in text.out
    assert text.out.count("changed: ") == len(eight)
    assert "missing" not in text.out
    inbox = next(f for f in json.loads(as_json.out)["per_folder"] if f["folder"] == "INBOX")
    assert inbox["changed_by_destination"] == len(eight)
    assert inbox["missing"] == 0 and inbox["extra"] == 0
    # a message really gone is still "missing", not "changed"
    inbox = next(f for f in json.loads(lost.out)["per_folder"] if f["folder"] == "INBOX")
    assert lost.code == 1 and inbox["missing"] == 1
    assert inbox["changed_by_destination"] == len(eight) - 1

