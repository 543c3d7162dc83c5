"""A real loopback TCP proxy for tests -- a test tool, not a fake server.

``TcpProxy(target_host, target_port)`` listens on 127.0.0.1 (a free port,
``proxy.port``) and, for every accepted connection, opens a real TCP
connection to the target (e.g. the test Dovecot) and forwards bytes in both
directions unchanged.  The protocol is whatever client and server speak; the
proxy never parses or answers anything.  It exists so that tests can

* measure traffic: ``bytes_from_server`` / ``bytes_to_server`` (totals over
  all connections; bytes are counted and recorded just before they are
  forwarded, so whatever a client has received is already counted);
* inspect what the server sent: ``transcript_from_server`` (and
  ``transcript_to_server``), the concatenated bytes of all connections,
  bounded by ``record_limit`` (``transcript_truncated`` tells whether the
  limit was hit), e.g. ``assert b"BODY[" not in proxy.transcript_from_server``;
* inject faults on the server->client direction:

  - ``cut_after(n)``: forward exactly ``n`` more server bytes (counted across
    all connections from the call), then close both sides of the connection
    that carried the n-th byte; one-shot.  ``cut_after(n,
    per_connection=True)``: every connection (also later ones) is closed
    after it has carried ``n`` server bytes, until ``clear_faults()``.
    ``rst=True`` closes with a TCP RST instead of FIN.
  - ``stall(seconds, after=n)``: once ``n`` more server bytes have been
    forwarded, stop forwarding for ``seconds`` (the connection stays open);
    one-shot, or once per connection with ``per_connection=True``.
  - ``reset()``: RST every open connection now (SO_LINGER 0), both sides.
  - ``close_all()``: close every open connection now (FIN), both sides.
* hold traffic at a chosen point, so that a test acts at a known instant rather
  than after a sleep (a kill lands mid-transfer, a connection is refused while the
  others are busy):

  - ``hold_after(n)``: forward exactly ``n`` more server bytes (all connections),
    then forward nothing, either way, on any connection until ``release()``;
    ``hold_after_client_sends(pattern, nth)``: the same once the client side has
    sent ``pattern`` for the nth time (that chunk still reaches the server).
    ``held`` (an Event) tells that the hold began; ``wait_held(timeout)``.
  - ``admit_serially(settled)``: a connection's server bytes wait until every
    earlier connection has closed or been sent ``settled`` (a regex, e.g. the
    login's answer), so logins happen one after the other in accept order.
  - ``hold_responses(pattern, until)``: a server chunk matching ``pattern``
    waits until ``until()`` is true (checked every 50 ms).

Thread based: one accept thread, two pump threads per connection.  Sockets
use a 0.05 s timeout internally so that ``stop()`` (or leaving the ``with``
block) is prompt and never hangs on a blocked peer.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_POLL = 0.05
_CHUNK = 65536


@dataclass
class _Cut:
    remaining: int  # bytes still allowed (global mode) / limit (per connection)
    per_connection: bool
    rst: bool


@dataclass
class _Stall:
    seconds: float
    after: int  # global: bytes still to pass; per connection: offset in the connection
    per_connection: bool


class _Conn:
    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = threading.Event()
        self.from_server = 0  # bytes forwarded server -> client on this connection
        self.to_server = 0
        self.stalled = False  # per-connection stall already done
        self.started = time.monotonic()
        self.index = 0  # accept order, from 1
        self.settled = False  # admit_serially: the server sent the `settled` pattern
        self.tail_from_server = b""  # the last bytes seen each way, for patterns across chunks
        self.tail_to_server = b""
        self.client_matches = 0
        self._lock = threading.Lock()
        self._pumps_left = 2
        self._rst = False

    def start(self) -> None:
        for src, dst, name in ((self.client, self.server, "c2s"), (self.server, self.client, "s2c")):
            t = threading.Thread(
                target=self._pump,
                args=(src, dst, name == "s2c"),
                name=f"proxy-{self.proxy.port}-{name}",
                daemon=True,
            )
            t.start()

    def abort(self, rst: bool) -> None:
        """Close both sides now (RST if rst, else FIN); idempotent."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            self._rst = rst
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)  # wakes readers; sends nothing
                else:
                    s.shutdown(socket.SHUT_RDWR)  # sends FIN now

    def _send(self, dst: socket.socket, data: bytes | memoryview) -> bool:
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                return False
            try:
                n = dst.send(view)
            except TimeoutError:
                continue
            except OSError:
                return False
            view = view[n:]
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while not self.closed.is_set():
                try:
                    data = src.recv(_CHUNK)
                except TimeoutError:
                    continue
                except OSError:
                    self.abort(rst=True)
                    break
                if not data:
                    if self.closed.is_set():  # woken up by abort(): no FIN
                        break
                    # EOF: pass the half-close on
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                if from_server:
                    if not self.proxy._forward_from_server(self, data):
                        break
                else:
                    if not self.proxy._gate(self, data, from_server=False):
                        break
                    self.proxy._count_to_server(self, data)
                    if not self._send(dst, data):
                        break
                    self.proxy._after_client_sent(self, data)
        finally:
            with self._lock:
                self._pumps_left -= 1
                last = self._pumps_left == 0
            if last:
                self._finish()

    def _finish(self) -> None:
        self.closed.set()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.close()
        self.proxy._forget(self)


class TcpProxy:
    """Real TCP forwarder on 127.0.0.1 with byte counters, transcript and faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        record: bool = True,
        record_limit: int = 16 * 1024 * 1024,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.record = record
        self.record_limit = record_limit
        self.bytes_from_server = 0
        self.bytes_to_server = 0
        self.connections_accepted = 0
        #: The most connections that were open at the same moment.
        self.peak_connections = 0
        #: Server -> client bytes per second allowed on each connection (None: no
        #: limit): the per-connection throughput cap real providers impose, for
        #: benchmarks of parallel connections.
        self.connection_bandwidth: float | None = None
        self._from_server_rec = bytearray()
        self._to_server_rec = bytearray()
        self.transcript_truncated = False
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._cut: _Cut | None = None
        self._stall: _Stall | None = None
        #: set when a hold begins; forwarding stops until release()
        self.held = threading.Event()
        self._hold_at: int | None = None  # server bytes still to pass before the hold
        self._hold_to_server: int | None = None  # the same, client bytes
        self._hold_client: tuple[bytes, int] | None = None
        self._admit: re.Pattern[bytes] | None = None
        self._admission: list[_Conn] = []
        self._hold_pattern: tuple[re.Pattern[bytes], Callable[[], bool]] | None = None
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(64)
        self._listener.settimeout(_POLL)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"proxy-{self.port}-accept", daemon=True
        )
        self._thread.start()

    # -- public ------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def transcript_from_server(self) -> bytes:
        with self._lock:
            return bytes(self._from_server_rec)

    @property
    def transcript_to_server(self) -> bytes:
        with self._lock:
            return bytes(self._to_server_rec)

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def reset_counters(self) -> None:
        """Zero the byte counters and clear the transcripts."""
        with self._lock:
            self.bytes_from_server = self.bytes_to_server = 0
            self._from_server_rec.clear()
            self._to_server_rec.clear()
            self.transcript_truncated = False

    def cut_after(self, n_bytes: int, *, per_connection: bool = False, rst: bool = False) -> None:
        """Close a connection after n server->client bytes (see module docstring)."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        with self._lock:
            self._cut = _Cut(n_bytes, per_connection, rst)
            conns = list(self._conns) if per_connection else []
        for c in conns:  # already past the limit: cut now
            if c.from_server >= n_bytes:
                c.abort(rst)

    def stall(self, seconds: float, *, after: int = 0, per_connection: bool = False) -> None:
        """Pause server->client forwarding for seconds once `after` bytes passed."""
        with self._lock:
            self._stall = _Stall(seconds, after, per_connection)

    def clear_faults(self) -> None:
        with self._lock:
            self._cut = None
            self._stall = None

    def hold_after(self, n_bytes: int, *, to_server: bool = False) -> None:
        """Forward exactly n more server->client bytes, then hold everything (see module
        doc); with ``to_server``, hold once n more client->server bytes went through
        (after the chunk that carried the n-th byte)."""
        with self._lock:
            self._hold_at = None if to_server else max(n_bytes, 0)
            self._hold_to_server = max(n_bytes, 0) if to_server else None
            self._hold_client = None
            self.held.clear()
        if n_bytes <= 0:
            self.hold_now()

    def hold_after_client_sends(self, pattern: bytes, nth: int = 1) -> None:
        """Hold everything once the client side has sent ``pattern`` ``nth`` times in all."""
        with self._lock:
            for c in self._conns:
                c.client_matches = 0
            self._hold_client = (pattern, nth)
            self._hold_at = self._hold_to_server = None
            self.held.clear()

    def hold_now(self) -> None:
        with self._lock:
            self._hold_at = self._hold_to_server = None
            self._hold_client = None
            self.held.set()

    def wait_held(self, timeout: float) -> bool:
        return self.held.wait(timeout)

    def release(self) -> None:
        """End a hold (and any pending hold trigger): forwarding goes on."""
        with self._lock:
            self._hold_at = self._hold_to_server = None
            self._hold_client = None
            self.held.clear()

    def admit_serially(self, settled: bytes) -> None:
        """Hold each new connection's server bytes until every earlier one settled or closed."""
        with self._lock:
            self._admit = re.compile(settled)

    def hold_responses(self, pattern: bytes, until: Callable[[], bool]) -> None:
        """Hold server chunks matching ``pattern`` until ``until()`` is true."""
        with self._lock:
            self._hold_pattern = (re.compile(pattern), until)

    @property
    def settled_connections(self) -> int:
        """Connections that were sent the admit_serially pattern (or closed before it)."""
        with self._lock:
            return sum(1 for c in self._admission if c.settled or c.closed.is_set())

    def reset(self) -> None:
        """RST every open connection (both sides) now."""
        for c in self._snapshot():
            c.abort(rst=True)

    def close_all(self) -> None:
        """Close every open connection (both sides, FIN) now."""
        for c in self._snapshot():
            c.abort(rst=False)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until no connection is open; True if that happened in time."""
        deadline = time.monotonic() + timeout
        while self.active_connections:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self) -> None:
        """Stop accepting, then close every connection: no client can slip in a new
        connection between the two (a server that vanishes stays vanished)."""
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.close_all()
        self.wait_closed(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"TcpProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]}, "
            f"from_server={self.bytes_from_server}, to_server={self.bytes_to_server})"
        )

    # -- internals ---------------------------------------------------------

    def _snapshot(self) -> list[_Conn]:
        with self._lock:
            return list(self._conns)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                continue
            for s in (client, server):
                s.settimeout(_POLL)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, server)
            with self._lock:
                self._conns.add(conn)
                self.connections_accepted += 1
                conn.index = self.connections_accepted
                self._admission.append(conn)
                self.peak_connections = max(self.peak_connections, len(self._conns))
                cut = self._cut
            conn.start()
            if cut is not None and cut.per_connection and cut.remaining == 0:
                conn.abort(cut.rst)

    def _record(self, buf: bytearray, data: bytes) -> None:
        # called with self._lock held
        if not self.record:
            return
        room = self.record_limit - len(buf)
        if len(data) > room:
            self.transcript_truncated = True
        if room > 0:
            buf += data[:room]

    def _count_to_server(self, conn: _Conn, data: bytes) -> None:
        with self._lock:
            conn.to_server += len(data)
            self.bytes_to_server += len(data)
            self._record(self._to_server_rec, data)

    def _gate(self, conn: _Conn, data: bytes | memoryview, *, from_server: bool) -> bool:
        """Wait while a hold keeps this chunk back; False if the connection closed meanwhile."""
        chunk = bytes(data)
        while True:
            pattern_hold = None
            with self._lock:
                blocked = self.held.is_set()
                if from_server and not blocked and self._admit is not None:
                    blocked = any(c.index < conn.index and not c.settled and not c.closed.is_set()
                                  for c in self._admission)
                if from_server and not blocked and self._hold_pattern is not None:
                    regex, until = self._hold_pattern
                    if regex.search(conn.tail_from_server + chunk):
                        pattern_hold = until
            if pattern_hold is not None:
                blocked = not pattern_hold()
            if not blocked:
                return True
            if conn.closed.is_set() or self._stop.is_set():
                return False
            conn.closed.wait(_POLL)

    def _after_client_sent(self, conn: _Conn, data: bytes) -> None:
        with self._lock:
            seen = conn.tail_to_server + data
            conn.tail_to_server = seen[-256:]
            if self._hold_to_server is not None:
                self._hold_to_server -= len(data)
                if self._hold_to_server <= 0:
                    self._hold_to_server = None
                    self.held.set()
            if self._hold_client is not None:
                pattern, nth = self._hold_client
                # count only occurrences that end in this chunk (the tail was counted before)
                start = max(len(seen) - len(data) - len(pattern) + 1, 0)
                conn.client_matches += seen.count(pattern, start)
                if sum(c.client_matches for c in self._admission) >= nth:
                    self._hold_client = None
                    self.held.set()

    def _forward_from_server(self, conn: _Conn, data: bytes) -> bool:
        """Send server data to the client, applying faults; False = stop pumping."""
        view = memoryview(data)
        while view:
            if not self._gate(conn, view, from_server=True):
                return False
            with self._lock:
                limit = len(view)
                cut, stall = self._cut, self._stall
                cut_here = False
                hold_here = False
                if self._hold_at is not None and self._hold_at < limit:
                    limit, hold_here = self._hold_at, True
                if cut is not None:
                    allowed = cut.remaining - conn.from_server if cut.per_connection else cut.remaining
                    allowed = max(allowed, 0)
                    if allowed <= limit:
                        limit, cut_here = allowed, True
                stall_here = False
                if stall is not None and not (stall.per_connection and conn.stalled):
                    point = stall.after - conn.from_server if stall.per_connection else stall.after
                    point = max(point, 0)
                    # a stall strictly before the cut point (or anywhere, without a cut)
                    if point < limit or (point == limit and not cut_here):
                        limit, stall_here, cut_here = point, True, False
            chunk = view[:limit]
            # count before sending, so a client that got the bytes sees them counted
            with self._lock:
                n = len(chunk)
                conn.from_server += n
                self.bytes_from_server += n
                self._record(self._from_server_rec, bytes(chunk))
                if self._cut is not None and not self._cut.per_connection:
                    self._cut.remaining = max(self._cut.remaining - n, 0)
                if self._stall is not None and not self._stall.per_connection:
                    self._stall.after = max(self._stall.after - n, 0)
                if stall_here:
                    if stall.per_connection:
                        conn.stalled = True
                    elif self._stall is stall:
                        self._stall = None  # one-shot
                if cut_here and self._cut is cut and not cut.per_connection:
                    self._cut = None  # one-shot
                if self._hold_at is not None:
                    self._hold_at = max(self._hold_at - n, 0)
                if hold_here and self._hold_at == 0:
                    self._hold_at = None
                    self.held.set()
                seen = conn.tail_from_server + bytes(chunk)
                conn.tail_from_server = seen[-256:]
                if self._admit is not None and not conn.settled and self._admit.search(seen):
                    conn.settled = True
            if chunk and not conn._send(conn.client, chunk):
                return False
            if self.connection_bandwidth:
                ahead = conn.from_server / self.connection_bandwidth - (time.monotonic() - conn.started)
                if ahead > 0:
                    time.sleep(ahead)
            view = view[limit:]
            if cut_here:
                conn.abort(cut.rst)  # type: ignore[union-attr]
                return False
            if stall_here:
                # interruptible sleep: stop() or a fault closing this connection ends it
                deadline = time.monotonic() + stall.seconds  # type: ignore[union-attr]
                while not conn.closed.is_set() and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    conn.closed.wait(min(left, _POLL))
                if conn.closed.is_set():
                    return False
        return True
