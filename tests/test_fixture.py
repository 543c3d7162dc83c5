"""Tests that prove the test infrastructure: private Dovecot, seeding, proxy, corpus.

They also pin down what Dovecot does to APPENDed bytes and dates (documented
in the docstring of tests/seeding.py); if Dovecot's behaviour changes, these
tests fail and the documentation must be updated.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dovecot import SPECIAL_USE, DovecotServer
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from proxy import TcpProxy
from seeding import (
    CORPUS_DIR,
    append,
    bulk_append,
    corpus_index,
    create_folder,
    delimiter,
    fetch_all,
    imap_connect,
    imap_login,
    list_folders,
    pop3,
    seed_message,
    seed_messages,
    server_name,
    tls_context,
)

PAST = datetime(2019, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))


def crlf(raw: bytes) -> bytes:
    """Dovecot's BODY[] output rule: every CRLF, bare CR and bare LF becomes CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


# -- server basics -----------------------------------------------------------


def test_login_and_special_use_folders(imap: IMAPClient) -> None:
    folders = list_folders(imap)
    assert set(folders) == {"INBOX", *SPECIAL_USE}
    for name, use in SPECIAL_USE.items():
        assert use.encode() in folders[name], (name, folders[name])
    assert not any(a.startswith(b"\\") and a[1:] in (b"Sent", b"Drafts") for a in folders["INBOX"])
    # auto = subscribe
    subscribed = {name for _f, _d, name in imap.list_sub_folders()}
    assert set(SPECIAL_USE) <= subscribed
    assert delimiter(imap) == "/"


def test_capabilities_plain_and_tls(dovecot: DovecotServer) -> None:
    client = imap_connect(dovecot)
    try:
        caps = client.capabilities()
        assert b"STARTTLS" in caps
        assert b"AUTH=PLAIN" in caps
        assert b"LOGINDISABLED" not in caps  # plaintext auth allowed on the plain port
    finally:
        client.shutdown()


def test_doveadm_and_log(dovecot: DovecotServer, imap: IMAPClient, account) -> None:
    out = dovecot.doveadm("mailbox", "list", "-u", account.name).stdout.split()
    assert set(out) == {"INBOX", *SPECIAL_USE}
    assert f"Login: user=<{account.name}>" in dovecot.log_text()
    assert dovecot.maildir(account).is_dir()
    st = dovecot.maildir(account).stat()
    assert (st.st_uid, st.st_gid) == (dovecot.uid, dovecot.gid)
    if os.geteuid() == 0:
        assert dovecot.uid != 0


def test_add_user_gives_fresh_empty_account(dovecot: DovecotServer, account) -> None:
    client = imap_login(dovecot, account)
    create_folder(client, "Extra")
    append(client, "INBOX", seed_message(1), (), PAST)
    client.logout()

    other = dovecot.add_user()
    assert other.name != account.name
    client = imap_login(dovecot, other)  # immediately, no restart or sleep
    try:
        assert set(list_folders(client)) == {"INBOX", *SPECIAL_USE}
        for name in ("INBOX", *SPECIAL_USE):
            assert fetch_all(client, name) == {}
    finally:
        client.logout()


def test_new_users_can_log_in_immediately(dovecot: DovecotServer) -> None:
    # Dovecot re-reads one shared passwd-file at most once per second; our
    # per-user files must make back-to-back add_user + login work every time.
    for _ in range(8):
        user = dovecot.add_user()
        imap_login(dovecot, user).logout()


def test_bad_credentials_are_rejected(dovecot: DovecotServer, account) -> None:
    for name, password in ((account.name, "wrong"), ("nosuchuser", "x")):
        client = imap_connect(dovecot)
        with pytest.raises(LoginError):
            client.login(name, password)
        client.shutdown()


# -- folders -----------------------------------------------------------------


@pytest.mark.parametrize("which", ["dovecot", "dovecot_dot"])
def test_nested_and_non_ascii_folders(request: pytest.FixtureRequest, which: str) -> None:
    server: DovecotServer = request.getfixturevalue(which)
    user = server.add_user()
    client = imap_login(server, user)
    try:
        sep = delimiter(client)
        assert sep == server.separator
        for name in ("Forschung & Entwicklung", "日本語", "A/B/C"):
            assert create_folder(client, name) == name.replace("/", sep)
        create_folder(client, "X/Y/Z", parents=True)
        folders = list_folders(client)
        assert b"\\Drafts" in folders["Entwürfe"]
        for name in ("Forschung & Entwicklung", "日本語", "A/B/C", "X", "X/Y", "X/Y/Z"):
            assert b"\\Noselect" not in folders[name], name
        # without parents=True the intermediate levels exist only as \Noselect
        assert b"\\Noselect" in folders["A"] and b"\\Noselect" in folders["A/B"]
        # round trip through the server: APPEND + FETCH in a non-ASCII, nested folder
        append(client, "日本語", seed_message(5), (b"\\Seen",), PAST)
        append(client, "A/B/C", seed_message(6), (), PAST)
        assert [m[0] for m in fetch_all(client, "日本語").values()] == [seed_message(5)]
        assert [m[0] for m in fetch_all(client, "A/B/C").values()] == [seed_message(6)]
        # on disk: modified UTF-7 names; LAYOUT=fs directories vs Maildir++ dot-dirs
        root = server.maildir(user)
        if sep == "/":
            assert (root / "&ZeVnLIqe-").is_dir() and (root / "A" / "B" / "C" / "cur").is_dir()
        else:
            assert (root / ".&ZeVnLIqe-").is_dir() and (root / ".A.B.C" / "cur").is_dir()
            with pytest.raises(ValueError):
                server_name(client, "a.b/c")
    finally:
        client.logout()


# -- what Dovecot does to bytes, flags and dates -------------------------------


def test_corpus_round_trip(imap: IMAPClient, corpus) -> None:
    """APPEND every corpus message; FETCH gives CRLF-normalised, otherwise equal bytes."""
    index = corpus_index()
    flags = (b"\\Seen", b"$Forwarded")
    uids = {path: append(imap, "INBOX", raw, flags, PAST) for path, raw in corpus}
    got = fetch_all(imap, "INBOX")
    assert len(got) == len(corpus)
    imap.select_folder("INBOX", readonly=True)
    sizes = imap.fetch(list(got), ["RFC822.SIZE"])
    unchanged = set()
    local_offset = PAST.astimezone().utcoffset()  # the server shares our TZ
    for path, raw in corpus:
        body, got_flags, idate = got[uids[path]]
        assert body == crlf(raw), path
        if body == raw:
            unchanged.add(path)
        assert set(got_flags) == set(flags), path
        assert idate == PAST, path  # same instant ...
        assert idate.utcoffset() == local_offset, path  # ... in the server's zone
        assert sizes[uids[path]][b"RFC822.SIZE"] == len(body), path
    # exactly the pure-CRLF files come back byte for byte
    assert unchanged == {p for p, _ in corpus if index[p]["line_endings"] == "CRLF"}
    assert len(unchanged) == 124 and len(corpus) - len(unchanged) == 98


EDGE_CASES = {
    # name: (appended bytes, BODY[] returned)
    "bare LF": (b"Subject: a\nFrom: x@y\n\nl1\nl2\n", b"Subject: a\r\nFrom: x@y\r\n\r\nl1\r\nl2\r\n"),
    "bare CR": (b"Subject: c\r\n\r\nbare\rcr\r\n", b"Subject: c\r\n\r\nbare\r\ncr\r\n"),
    "CR at end": (b"Subject: j\r\n\r\nbody\r", b"Subject: j\r\n\r\nbody\r\n"),
    "mixed": (b"Subject: h\r\nX: y\n\r\nb\nm\r\n", b"Subject: h\r\nX: y\r\n\r\nb\r\nm\r\n"),
    "no final newline": (b"Subject: b\r\n\r\nno newline", b"Subject: b\r\n\r\nno newline"),
    "no final newline LF": (b"Subject: b\n\nno newline", b"Subject: b\r\n\r\nno newline"),
    "5000-byte body line": (b"S: e\r\n\r\n" + b"x" * 5000 + b"\r\n",) * 2,
    "5000-byte header line": (b"Subject: " + b"y" * 5000 + b"\r\n\r\nb\r\n",) * 2,
    "8-bit UTF-8 headers": ("Subject: Grüße\r\nFrom: Jörg <j@x>\r\n\r\nÄÖÜ\r\n".encode(),) * 2,
    "8-bit latin-1": ("Subject: Grüße\r\n\r\nÄÖÜ\r\n".encode("latin-1"),) * 2,
    "From_ line first": (b"From a@b Mon Jan  1 00:00:00 2001\r\nSubject: d\r\n\r\nb\r\n",) * 2,
    "From_ line first, LF": (
        b"From a@b Mon Jan  1 00:00:00 2001\nSubject: d\n\nb\n",
        b"From a@b Mon Jan  1 00:00:00 2001\r\nSubject: d\r\n\r\nb\r\n",
    ),
    "From_ in body": (b"Subject: d\r\n\r\nFrom here\r\n>From there\r\n",) * 2,
    "no header": (b"just a body line\r\n",) * 2,
    "header only, no separator": (b"Subject: f\r\n",) * 2,
    "trailing blank lines": (b"Subject: g\r\n\r\n\r\n\r\n",) * 2,
    "trailing whitespace": (b"Subject: i  \r\n\r\nbody \t\r\n",) * 2,
    "NUL byte": (b"Subject: n\r\n\r\na\x00b\r\n", b"Subject: n\r\n\r\na\x80b\r\n"),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_append_byte_edge_cases(imap: IMAPClient, name: str) -> None:
    raw, expected = EDGE_CASES[name]
    uid = append(imap, "INBOX", raw, (), PAST)
    assert fetch_all(imap, "INBOX")[uid][0] == expected


def test_append_empty_message_is_refused(imap: IMAPClient) -> None:
    with pytest.raises(IMAPClient.Error, match="zero byte"):
        append(imap, "INBOX", b"")


def test_flags_and_keywords(imap: IMAPClient) -> None:
    flags = (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"\\Seen")
    keywords = (b"$Forwarded", b"Junk", b"$label1", b"$MDNSent")
    uid = append(imap, "INBOX", seed_message(1), flags + keywords, PAST)
    assert set(fetch_all(imap, "INBOX")[uid][1]) == set(flags + keywords)
    # \Recent is reported (even under EXAMINE) unless filtered
    assert b"\\Recent" in fetch_all(imap, "INBOX", keep_recent=True)[uid][1]


def test_internaldate_keeps_instant_not_offset() -> None:
    """Maildir keeps INTERNALDATE as file mtime: the offset is lost, the instant kept."""
    with DovecotServer(tz="Asia/Kolkata") as server:
        user = server.add_user()
        client = imap_login(server, user)
        plus2 = datetime(2020, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        uid = append(client, "INBOX", seed_message(1), (), plus2)
        got = fetch_all(client, "INBOX")[uid][2]
        assert got == plus2
        assert got.utcoffset() == timedelta(hours=5, minutes=30)  # the server's zone
        assert got.isoformat() == "2020-05-06T10:38:09+05:30"
        client.logout()


def test_internaldate_future_and_pre_1970(imap: IMAPClient) -> None:
    future = datetime.now(UTC) + timedelta(days=3)
    uid = append(imap, "INBOX", seed_message(1), (), future)
    got = fetch_all(imap, "INBOX")[uid][2]
    assert abs(got - datetime.now(UTC)) < timedelta(minutes=1)  # silently replaced by "now"

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    uid = append(imap, "INBOX", seed_message(2), (), epoch)
    assert fetch_all(imap, "INBOX")[uid][2] == epoch

    moon = datetime(1969, 7, 20, 20, 17, tzinfo=UTC)
    uid = append(imap, "INBOX", seed_message(3), (), moon)
    got = fetch_all(imap, "INBOX")[uid][2]
    # a negative time_t comes back as an unsigned 32-bit value: 2105-08-27
    assert got.timestamp() == moon.timestamp() % 2**32
    assert got.year == 2105


# -- POP3 and TLS --------------------------------------------------------------


def test_pop3_user_pass_and_uidl(dovecot: DovecotServer, account) -> None:
    client = imap_login(dovecot, account)
    msgs = [seed_message(1), b"Subject: lf\n\nbody\n.dot line\n"]
    uids = [append(client, "INBOX", m, (), PAST) for m in msgs]
    uidvalidity = client.select_folder("INBOX")[b"UIDVALIDITY"]
    client.logout()

    conn = pop3(dovecot, account)
    try:
        assert conn.stat() == (2, sum(len(crlf(m)) for m in msgs))
        _resp, listing, _ = conn.uidl()
        expected = [f"{n} {uid:08x}{uidvalidity:08x}".encode() for n, uid in enumerate(uids, 1)]
        # pop3_uidl_format = %08Xu%08Xv: Dovecot's X modifier prints LOWER-case hex
        assert listing == expected
        for n, m in enumerate(msgs, 1):
            _resp, lines, _octets = conn.retr(n)
            assert b"\r\n".join(lines) + b"\r\n" == crlf(m)
    finally:
        conn.quit()


def test_pop3_apop(dovecot: DovecotServer, account) -> None:
    conn = pop3(dovecot)
    try:
        assert re.search(rb"<[^>]+@[^>]+>", conn.getwelcome())  # APOP timestamp
        conn.apop(account.name, account.password)
        assert conn.stat() == (0, 0)
    finally:
        conn.quit()


@pytest.mark.parametrize("mode", ["stls", "pop3s"])
def test_pop3_tls_with_ca(dovecot: DovecotServer, account, mode: str) -> None:
    conn = pop3(dovecot, account, tls=mode)
    try:
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.stat() == (0, 0)
    finally:
        conn.quit()


def test_pop3s_without_ca_fails(dovecot: DovecotServer) -> None:
    import poplib

    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("localhost", dovecot.pop3s_port, context=ssl.create_default_context(), timeout=10)


def test_imaps_and_starttls_with_ca(dovecot: DovecotServer, account) -> None:
    ctx = tls_context(dovecot)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; our CA passes it
    for host in ("localhost", "127.0.0.1"):  # SAN has both
        client = IMAPClient(host, dovecot.imaps_port, ssl=True, ssl_context=ctx, timeout=10)
        client.login(account.name, account.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()
    client = imap_connect(dovecot)
    client.starttls(tls_context(dovecot))
    client.login(account.name, account.password)
    client.logout()


def test_imaps_without_ca_fails(dovecot: DovecotServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("localhost", dovecot.imaps_port, ssl=True, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            "localhost", dovecot.imaps_port, ssl=True,
            ssl_context=ssl.create_default_context(), timeout=10,
        )  # fmt: skip


# -- seeding helpers -------------------------------------------------------------


def test_seed_message_shape() -> None:
    for size in (None, 0, 50, 400, 401, 402, 403, 10_000, 100_001):
        m = seed_message(42, size)
        assert m.endswith(b"\r\n")
        assert b"\n" not in m.replace(b"\r\n", b"") and b"\r" not in m.replace(b"\r\n", b"")
        if size is not None and size >= len(seed_message(42)):
            assert len(m) == size
    ids = {re.search(rb"Message-ID: (<[^>]+>)", m).group(1) for m in seed_messages(50)}
    assert len(ids) == 50


@pytest.mark.slow
def test_bulk_append_2000(imap: IMAPClient) -> None:
    msgs = list(seed_messages(2000, 600))
    uids = bulk_append(imap, "INBOX", msgs)
    assert uids == list(range(1, 2001))
    got = fetch_all(imap, "INBOX")
    assert [got[u][0] for u in uids] == msgs


# -- corpus ----------------------------------------------------------------------


def test_corpus_matches_index(corpus) -> None:
    index = corpus_index()
    assert [p for p, _ in corpus] == sorted(index)
    assert len(corpus) == 222
    for path, raw in corpus:
        row = index[path]
        assert hashlib.sha256(raw).hexdigest() == row["sha256"], path
        assert len(raw) == int(row["size_bytes"]), path
        assert b"\0" not in raw, path
    sources = {p.split("/")[0] for p, _ in corpus}
    assert sources == {
        "ruby-mail", "flanker", "spamscope-mail-parser", "nodemailer-mailparser",
        "stalwart-mail-parser", "got-your-back", "james-mime4j",
    }  # fmt: skip
    assert all(p.split("/")[1].startswith("testmsgs__") for p, _ in corpus if p.startswith("james"))
    assert (CORPUS_DIR.parent / "SOURCES.md").is_file()


# -- proxy -----------------------------------------------------------------------


class ByteSource:
    """A tiny real TCP server: sends `payload` to each client, then waits for EOF."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.payload)
                while data := conn.recv(65536):
                    self.received += data
            except OSError:
                pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def source():
    src = ByteSource(bytes(range(256)) * 4096)  # 1 MiB
    yield src
    src.close()


def read_all(sock: socket.socket) -> bytes:
    buf = bytearray()
    while data := sock.recv(65536):
        buf += data
    return bytes(buf)


def read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\r\n"):
        data = sock.recv(1)
        assert data, "EOF before end of line"
        buf += data
    return bytes(buf)


def test_proxy_counts_and_records_imap(imap_proxy: TcpProxy, dovecot, account) -> None:
    direct = imap_login(dovecot, account)
    raw = seed_message(1, 5000)
    append(direct, "INBOX", raw, (), PAST)
    direct.logout()

    client = IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10)
    client.login(account.name, account.password)
    client.select_folder("INBOX", readonly=True)
    imap_proxy.reset_counters()
    client.fetch([1], ["FLAGS", "RFC822.SIZE"])
    small = imap_proxy.bytes_from_server
    assert 0 < small < 500
    assert b"BODY[" not in imap_proxy.transcript_from_server
    assert imap_proxy.bytes_to_server == len(imap_proxy.transcript_to_server) > 0
    client.fetch([1], ["BODY.PEEK[]"])
    assert b"BODY[] {5000}\r\n" + raw in imap_proxy.transcript_from_server
    assert imap_proxy.bytes_from_server > small + len(raw)
    assert imap_proxy.bytes_from_server == len(imap_proxy.transcript_from_server)
    client.logout()
    assert imap_proxy.wait_closed()


def test_proxy_exact_counts_both_directions(source: ByteSource) -> None:
    with TcpProxy("127.0.0.1", source.port) as proxy:
        s = socket.create_connection(proxy.address)
        s.sendall(b"hello server" * 1000)
        s.shutdown(socket.SHUT_WR)  # half-close is passed on; server then closes
        got = read_all(s)
        s.close()
        assert got == source.payload
        assert proxy.wait_closed()
        assert proxy.bytes_from_server == len(source.payload)
        assert proxy.bytes_to_server == 12_000
        assert bytes(source.received) == b"hello server" * 1000
        assert proxy.transcript_from_server == source.payload


def test_proxy_transcript_is_bounded(source: ByteSource) -> None:
    with TcpProxy("127.0.0.1", source.port, record_limit=1000) as proxy:
        s = socket.create_connection(proxy.address)
        s.shutdown(socket.SHUT_WR)
        assert len(read_all(s)) == len(source.payload)
        s.close()
        assert proxy.transcript_from_server == source.payload[:1000]
        assert proxy.transcript_truncated


def test_proxy_cut_after_across_connections(source: ByteSource) -> None:
    with TcpProxy("127.0.0.1", source.port) as proxy:
        proxy.cut_after(70_000)
        s1 = socket.create_connection(proxy.address)
        assert read_all(s1) == source.payload[:70_000]  # EOF after exactly n bytes
        s1.close()
        # one-shot: the next connection is not cut
        s2 = socket.create_connection(proxy.address)
        s2.shutdown(socket.SHUT_WR)
        assert read_all(s2) == source.payload
        s2.close()
        assert proxy.bytes_from_server == 70_000 + len(source.payload)


def test_proxy_cut_after_per_connection_with_rst(source: ByteSource) -> None:
    with TcpProxy("127.0.0.1", source.port) as proxy:
        proxy.cut_after(1000, per_connection=True)
        for _ in range(2):
            s = socket.create_connection(proxy.address)
            s.shutdown(socket.SHUT_WR)
            assert read_all(s) == source.payload[:1000]
            s.close()
        proxy.cut_after(5000, per_connection=True, rst=True)
        s = socket.create_connection(proxy.address)
        got = bytearray()
        with pytest.raises(ConnectionResetError):
            while data := s.recv(65536):
                got += data
        s.close()
        assert len(got) <= 5000
        proxy.clear_faults()
        s = socket.create_connection(proxy.address)
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == source.payload
        s.close()


def test_proxy_stall(source: ByteSource) -> None:
    with TcpProxy("127.0.0.1", source.port) as proxy:
        proxy.stall(0.5, after=10_000)
        s = socket.create_connection(proxy.address)
        s.shutdown(socket.SHUT_WR)
        first = bytearray()
        while len(first) < 10_000:
            first += s.recv(10_000 - len(first))
        t0 = time.monotonic()
        rest = read_all(s)
        waited = time.monotonic() - t0
        s.close()
        assert bytes(first) + rest == source.payload
        assert waited > 0.4  # the stall held the bytes back (how much longer: the machine's load)


def test_proxy_reset_and_close_all(dovecot: DovecotServer) -> None:
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        a = socket.create_connection(proxy.address)
        assert read_line(a).startswith(b"* OK")
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            while a.recv(100):
                pass
        a.close()
        b = socket.create_connection(proxy.address)
        assert read_line(b).startswith(b"* OK")
        proxy.close_all()
        assert b.recv(100) == b""  # orderly FIN
        b.close()
        assert proxy.wait_closed()
        assert proxy.connections_accepted == 2


# -- lifecycle ---------------------------------------------------------------------


def test_start_stop_is_clean() -> None:
    server = DovecotServer().start()  # returns once the ports answer (no fixed sleep)
    pid = int(server.master_pid_path.read_text())
    directory, port = server.dir, server.imap_port
    assert str(server.conf_path).startswith("/tmp/mm")
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
