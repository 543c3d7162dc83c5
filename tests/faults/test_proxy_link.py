"""The proxy's link shaping and login-time faults, against a tiny real TCP server.

Times are only ever asserted as lower bounds (a slow link cannot be faster than
its rate), so a loaded machine cannot make these fail."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

from proxy import TcpProxy


class Recorder:
    """A real TCP server: sends ``payload`` to each client, records what each one sent,
    and notes how each connection ended (b"" = FIN, "reset")."""

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.received: list[bytearray] = []
        self.ended: list[str] = []
        self.done = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            got = bytearray()
            self.received.append(got)
            threading.Thread(target=self._serve, args=(conn, got), daemon=True).start()

    def _serve(self, conn: socket.socket, got: bytearray) -> None:
        with conn:
            try:
                if self.payload:
                    conn.sendall(self.payload)
                while data := conn.recv(65536):
                    got += data
                self.ended.append("fin")
            except OSError:
                self.ended.append("reset")
            self.done.set()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_drip_holds_a_rate_in_each_direction():
    server = Recorder(b"x" * 100_000)
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.drip(200_000, "both")
            s = socket.create_connection(proxy.address)
            t0 = time.monotonic()
            s.sendall(b"y" * 50_000)
            got = bytearray()
            while len(got) < 100_000:
                got += s.recv(65536)
            took = time.monotonic() - t0
            s.close()
        assert bytes(got) == b"x" * 100_000
        assert took >= 0.45, took  # 100 KB at 200 KB/s cannot take less than 0.5 s
        assert server.done.wait(5) and bytes(server.received[0]) == b"y" * 50_000
    finally:
        server.close()


def test_delay_holds_every_byte_in_flight():
    server = Recorder()
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.delay(0.4, "c2s")
            s = socket.create_connection(proxy.address)
            t0 = time.monotonic()
            s.sendall(b"ping")
            deadline = t0 + 10
            while not server.received or bytes(server.received[0]) != b"ping":
                assert time.monotonic() < deadline
                time.sleep(0.005)
            assert time.monotonic() - t0 >= 0.39
            s.close()
    finally:
        server.close()


def test_keep_delivering_sends_what_a_dead_client_already_sent():
    """The client dies (RST) with bytes in flight: the server still gets all of them, then
    a FIN; without keep_delivering it gets only what had passed, then a reset."""
    body = b"".join(b"%07d\n" % i for i in range(100_000)) + b"END"
    for keep in (True, False):
        server = Recorder()
        try:
            with TcpProxy("127.0.0.1", server.port) as proxy:
                proxy.keep_delivering = keep
                proxy.hold(after=1000)
                read_all = threading.Event()
                proxy.when_read(read_all.set, pattern=b"END")
                s = socket.create_connection(proxy.address)
                s.sendall(body)
                assert read_all.wait(10)  # every byte is in the proxy: "on the wire"
                # What passed before the hold has been read by the server: a reset that
                # came first would make its kernel drop it unread (on a loaded machine)
                deadline = time.monotonic() + 10
                while (not server.received or len(server.received[0]) < 1000) and \
                        time.monotonic() < deadline:
                    time.sleep(0.01)
                rst_close(s)  # kill -9 of a process with SO_LINGER 0
                time.sleep(0.1)
                proxy.release()
                assert server.done.wait(10)
                got = bytes(server.received[0])
            if keep:
                assert got == body and server.ended == ["fin"]
            else:
                assert got == body[:1000]
        finally:
            server.close()


def test_cut_on_a_pattern_stops_right_before_it():
    server = Recorder()
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.cut_on(b"LOGIN")
            s = socket.create_connection(proxy.address)
            s.sendall(b"a1 LOGIN u p\r\n")
            assert s.recv(100) == b""  # the proxy closed the connection
            s.close()
            assert server.done.wait(5)
        assert bytes(server.received[0]) == b"a1 "
    finally:
        server.close()


def test_cut_on_with_forward_lets_the_command_through():
    server = Recorder()
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.cut_on(b"LOGIN", forward=True, times=1)
            s = socket.create_connection(proxy.address)
            s.sendall(b"a1 LOGIN u p\r\n")
            assert s.recv(100) == b""
            s.close()
            assert server.done.wait(5)
            assert bytes(server.received[0]) == b"a1 LOGIN u p\r\n"
            # times=1: the next connection is left alone
            s = socket.create_connection(proxy.address)
            s.sendall(b"a2 LOGIN u p\r\n")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
            s.close()
            deadline = time.monotonic() + 5
            while len(server.received) < 2 or bytes(server.received[1]) != b"a2 LOGIN u p\r\n":
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        server.close()


def test_hold_on_a_pattern_release_one_connection_and_triggers():
    server = Recorder()
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.hold(pattern=b"TAIL")
            fired: list[str] = []
            proxy.when_bytes(0, lambda: fired.append("second"), pattern=b"HELLO", min_index=1)
            a = socket.create_connection(proxy.address)
            a.sendall(b"head TAIL rest")
            b = socket.create_connection(proxy.address)
            b.sendall(b"HELLO")
            deadline = time.monotonic() + 5
            while not fired or len(server.received) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert bytes(server.received[0]) == b"head "  # held right before the pattern
            proxy.release(index=0)
            while bytes(server.received[0]) != b"head TAIL rest":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            a.close()
            b.close()
            assert proxy.wait_connection_closed(0, 5)
    finally:
        server.close()


class Responder:
    """A real line-based TCP server: sends ``greeting`` to each client, then for every
    line it reads writes ``answer(line)`` back (a stand-in for a server's replies)."""

    def __init__(self, greeting: bytes, answer: Callable[[bytes], bytes]) -> None:
        self.greeting, self.answer = greeting, answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError), conn.makefile("rb") as lines:
            conn.sendall(self.greeting)
            for line in lines:
                conn.sendall(self.answer(line))

    def close(self) -> None:
        self.sock.close()


def recv_until(sock: socket.socket, end: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while not got.endswith(end):
        data = sock.recv(65536)
        assert data, got
        got += data
    return got


def nothing_arrives(sock: socket.socket) -> bool:
    """True if no byte arrives within a short while: it cannot fail while a hold holds
    (on a loaded machine too); it catches a hold that leaks."""
    sock.settimeout(0.3)
    try:
        sock.recv(1, socket.MSG_PEEK)  # a byte, or the end of the connection
    except TimeoutError:
        return True
    return False


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_hold_everything_stops_every_connection_both_ways_until_release():
    server = Responder(b"", lambda line: b"echo " + line)
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.hold(after=5, direction="c2s", everything=True)
            assert not proxy.held.is_set()
            echoed, read = threading.Event(), threading.Event()
            proxy.when_read(echoed.set, pattern=b"echo 1234\n", direction="s2c")
            proxy.when_read(read.set, pattern=b"zz\n", min_index=1)
            a = socket.create_connection(proxy.address)
            a.sendall(b"1234\n")  # the 5th byte passes, then everything stops
            assert proxy.wait_held(10)
            assert echoed.wait(10)  # the server answered: the proxy holds the answer
            b = socket.create_connection(proxy.address)  # new connections are held too
            b.sendall(b"zz\n")
            assert read.wait(10)  # the proxy has b's line: it holds it
            assert nothing_arrives(a) and nothing_arrives(b)
            assert proxy.bytes_to_server == 5 and proxy.bytes_from_server == 0
            proxy.release()
            assert not proxy.held.is_set()
            assert recv_until(a, b"\n") == b"echo 1234\n"
            assert recv_until(b, b"\n") == b"echo zz\n"
            a.close()
            b.close()
    finally:
        server.close()


def test_hold_after_client_sends_counts_occurrences_across_connections():
    """The 2nd "DELE" in all holds everything, after the chunk carrying it went through;
    an occurrence split across two chunks counts once, a passed one is not counted again."""
    server = Responder(b"", lambda line: b"+OK " + line)
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.hold_after_client_sends(b"DELE", 2)
            a = socket.create_connection(proxy.address)
            a.sendall(b"DE")
            wait_for(lambda: proxy.bytes_to_server == 2)
            a.sendall(b"LE 1\n")
            assert recv_until(a, b"\n") == b"+OK DELE 1\n"
            a.sendall(b"NOOP\n")  # the first DELE is in the proxy's memory of a: no count
            assert recv_until(a, b"\n") == b"+OK NOOP\n"
            assert not proxy.held.is_set()
            b = socket.create_connection(proxy.address)
            b.sendall(b"DELE 2\n")
            assert proxy.wait_held(10)
            wait_for(lambda: proxy.bytes_to_server == len(b"DELE 1\nNOOP\nDELE 2\n"))
            assert nothing_arrives(b)  # the server's answer is held
            proxy.release()
            assert recv_until(b, b"\n") == b"+OK DELE 2\n"
            a.close()
            b.close()
    finally:
        server.close()


def test_release_disarms_holds_not_yet_reached():
    server = Responder(b"", lambda line: line)
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.hold_after_client_sends(b"QUIT")
            proxy.hold(after=100, direction="s2c", everything=True)
            proxy.release()
            s = socket.create_connection(proxy.address)
            s.sendall(b"QUIT" + b"x" * 200 + b"\n")
            assert recv_until(s, b"\n") == b"QUIT" + b"x" * 200 + b"\n"
            assert not proxy.held.is_set()
            s.close()
    finally:
        server.close()


def test_admit_serially_answers_one_login_at_a_time():
    server = Responder(b"* OK hello\r\n",
                       lambda line: b"a OK Logged in\r\n" if b"LOGIN" in line else b"a BAD\r\n")
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.admit_serially(rb"Logged in")
            a = socket.create_connection(proxy.address)
            assert recv_until(a, b"\r\n") == b"* OK hello\r\n"
            greeted = threading.Event()
            proxy.when_read(greeted.set, pattern=b"hello", direction="s2c", min_index=1)
            b = socket.create_connection(proxy.address)
            c = socket.create_connection(proxy.address)
            assert greeted.wait(10)
            assert nothing_arrives(b)  # a's login is not answered yet
            assert proxy.settled_connections == 0
            a.sendall(b"a NOOP\r\n")  # not the settling answer
            assert recv_until(a, b"\r\n") == b"a BAD\r\n"
            assert nothing_arrives(b)
            a.sendall(b"a LOGIN u p\r\n")
            assert recv_until(a, b"\r\n") == b"a OK Logged in\r\n"
            assert recv_until(b, b"\r\n") == b"* OK hello\r\n"
            assert nothing_arrives(c)  # c waits for b, not only for a
            b.close()  # a connection that closes before its login counts as done
            assert recv_until(c, b"\r\n") == b"* OK hello\r\n"
            assert proxy.settled_connections == 2
            a.close()
            c.close()
    finally:
        server.close()


def test_hold_responses_keeps_matching_answers_until_the_condition():
    server = Responder(b"* OK\r\n", lambda line: b"* 1 FETCH (x)\r\n" if b"FETCH" in line
                       else b"a OK\r\n")
    go = threading.Event()
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.hold_responses(rb"\* \d+ FETCH", until=go.is_set)
            s = socket.create_connection(proxy.address)
            assert recv_until(s, b"\r\n") == b"* OK\r\n"
            s.sendall(b"a NOOP\r\n")
            assert recv_until(s, b"\r\n") == b"a OK\r\n"  # other answers pass
            answered = threading.Event()
            proxy.when_read(answered.set, pattern=b"FETCH (x)", direction="s2c")
            s.sendall(b"a FETCH 1\r\n")
            assert answered.wait(10)
            assert nothing_arrives(s)
            go.set()
            assert recv_until(s, b"\r\n") == b"* 1 FETCH (x)\r\n"
            s.close()
    finally:
        server.close()
