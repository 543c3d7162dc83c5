"""The proxy's link shaping and login-time faults, against a tiny real TCP server.

Times are only ever asserted as lower bounds (a slow link cannot be faster than
its rate), so a loaded machine cannot make these fail."""

from __future__ import annotations

import socket
import struct
import threading
import time

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
