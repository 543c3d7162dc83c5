"""A slow link that never stops moving is not a stall (issue 16, mechanism 2).

``--timeout`` means "no byte moved for N seconds": a restore over a link that stays
at 200 KB/s, with messages that take several timeouts each to upload, finishes in
one invocation on one connection, exits 0, and leaves no duplicate. A link that
really stops still ends the connection (the stall half of the same rule)."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from proxy import TcpProxy
from seeding import bulk_append, fetch_all, imap_login, seed_message

from migrate.stores import imap_io


def test_restore_over_a_link_that_stays_at_200_kb_per_second(dovecot, tmp_path):
    a, b = dovecot.add_user(), dovecot.add_user()
    # 2.2 MB: two messages of 900 KB take 4.5 s each at 200 KB/s, --timeout is 3 s
    msgs = [seed_message(i, 900_000, tag="slow") for i in range(2)] + \
        [seed_message(100 + i, 40_000, tag="slow") for i in range(10)]
    client = imap_login(dovecot, a)
    bulk_append(client, "INBOX", msgs)
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli("backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
                   password=a.password).code == 0
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        proxy.drip(200_000, "both")
        done = run_cli("restore", str(archive), f"imap://{b.name}@127.0.0.1:{proxy.port}?tls=none",
                       "--password-env", PASSWORD_ENV, "--timeout", "3", "--retry-delay", "0.05",
                       "--json", env=cli_env(b.password, XDG_STATE_HOME=str(tmp_path / "xdg")))
        accepted = proxy.connections_accepted
        appends = proxy.transcript_to_server.count(b" APPEND ")
    assert done.code == 0, done.err
    assert "reconnecting" not in done.err and "Traceback" not in done.err
    assert accepted == 1, "the slow link was taken for a dead one"
    assert json.loads(done.out)["new_messages"] == len(msgs)
    # Batches bounded by bytes at the measured rate: a reply every few seconds, not
    # one 2.2 MB MULTIAPPEND answered after eleven.
    assert appends >= 4, appends
    client = imap_login(dovecot, b)
    try:
        assert Counter(raw for raw, _, _ in fetch_all(client, "INBOX").values()) == Counter(msgs)
    finally:
        client.logout()


@pytest.fixture
def tcp_pair():
    """A connected pair of real loopback TCP sockets (client, server)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield client, server
    client.close()
    server.close()


def test_a_peer_that_takes_nothing_is_a_stall(tcp_pair):
    client, _server = tcp_pair  # the server never reads: the buffers fill, then nothing moves
    progress = imap_io.Progress(client, 0.5)
    client.settimeout(progress.slice)
    with pytest.raises(TimeoutError, match=r"no byte moved for 0\.5 s"):
        imap_io.send_all(client, b"x" * (64 << 20), progress)


def test_a_silent_peer_is_a_stall_and_a_trickle_is_not(tcp_pair):
    client, server = tcp_pair
    progress = imap_io.Progress(client, 2.0)
    client.settimeout(progress.slice)
    reader = imap_io.ProgressReader(client, progress)
    with pytest.raises(TimeoutError, match="no byte moved"):
        reader.readinto(bytearray(10))
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.1 s, for longer than the 2 s timeout
        for _ in range(30):
            if stop.wait(0.1):
                return
            server.sendall(b"y")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    got = bytearray()
    buf = bytearray(30)
    while len(got) < 30:
        n = reader.readinto(buf)
        assert n, "EOF"
        got += buf[:n]
    stop.set()
    t.join()
    assert bytes(got) == b"y" * 30


def test_a_draining_send_queue_is_progress_while_waiting_for_the_answer():
    """All bytes are written into our kernel's send queue; the peer takes them at 200 KB/s
    and answers only at the end. The wait for the answer sees the queue shrink, which is
    progress, for longer than the timeout."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # a small window
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 512 * 1024)
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    payload = b"z" * (600 * 1024)

    def drain() -> None:
        got = 0
        while got < len(payload):
            got += len(server.recv(20_000))
            threading.Event().wait(0.1)
        server.sendall(b"OK\r\n")

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        progress = imap_io.Progress(client, 2.0)
        client.settimeout(progress.slice)
        imap_io.send_all(client, payload, progress)
        queued = imap_io.unacked(client)
        assert queued is not None and queued > 400_000, queued  # > 2 s at 200 KB/s
        buf = bytearray(4)
        assert imap_io.ProgressReader(client, progress).readinto(buf) > 0
        assert bytes(buf).startswith(b"O")
    finally:
        t.join(30)
        client.close()
        server.close()
