"""A real loopback TCP proxy for tests -- a test tool, not a fake server.

``TcpProxy(target_host, target_port)`` listens on 127.0.0.1 (a free port,
``proxy.port``) and, for every accepted connection, opens a real TCP
connection to the target (e.g. the test Dovecot) and forwards bytes in both
directions unchanged.  The protocol is whatever client and server speak; the
proxy never parses or answers anything.  It exists so that tests can

* measure traffic: ``bytes_from_server`` / ``bytes_to_server`` (totals over
  all connections; bytes are counted and recorded just before they are
  forwarded, so whatever a peer has received is already counted);
* inspect what was sent: ``transcript_from_server`` (and
  ``transcript_to_server``), the concatenated bytes of all connections,
  bounded by ``record_limit`` (``transcript_truncated`` tells whether the
  limit was hit), e.g. ``assert b"BODY[" not in proxy.transcript_from_server``;
* shape the link, per direction (``"c2s"`` client to server, ``"s2c"``, or
  ``"both"``):

  - ``delay(seconds, direction)``: every byte reaches the other side no
    earlier than ``seconds`` after the proxy read it (latency; what is in
    flight is held in the proxy, as a long link holds it in the network);
    ``existing=False`` leaves open connections as they are;
  - ``drip(bytes_per_second, direction)``: at most that many bytes per second
    on each connection; the proxy then reads only a little ahead, so the
    sender's own kernel queue fills up, as behind a slow uplink;
  - ``keep_delivering = True``: when the client's side closes or dies
    (FIN, RST, kill -9), bytes the proxy has already read from it are still
    delivered to the server, then the server side gets a FIN; the server's
    answers are read and dropped.  That is what real TCP does with bytes
    already on the wire: they arrive after their sender is gone.

* inject faults:

  - ``cut_after(n, direction="s2c")``: forward exactly ``n`` more bytes in
    that direction (counted across all connections from the call), then
    close both sides of the connection that carried the n-th byte; one-shot.
    ``cut_after(n, per_connection=True)``: every connection (also later
    ones) is closed after it has carried ``n`` bytes, until
    ``clear_faults()``.  ``rst=True`` closes with a TCP RST instead of FIN.
  - ``cut_on(pattern, direction="c2s", times=1)``: close the next ``times``
    connections on which ``pattern`` (e.g. ``b" LOGIN "``,
    ``b"AUTHENTICATE"``, ``b"* NAMESPACE"``) is about to pass; the bytes
    before it are forwarded, the pattern is not (``forward=True``: the
    chunk carrying it is forwarded, then the cut: the command reached the
    server, its answer never reaches the client).
  - ``stall(seconds, after=n, direction="s2c")``: once ``n`` more bytes
    have been forwarded, stop forwarding for ``seconds`` (the connection
    stays open); one-shot, or once per connection with ``per_connection=True``.
  - ``when_bytes(n, callback, direction="c2s")``: call ``callback()`` once
    ``n`` more bytes have been forwarded in that direction (a counted byte as
    a deterministic instant, e.g. for kill -9 mid-APPEND); ``pattern=p``
    instead: once ``p`` has been forwarded (``nth=k``: its k-th occurrence,
    counted across connections); ``when_read(...)``: the same counted where
    the proxy *reads* (what the sender has sent so far, e.g. "the client has
    sent the whole command"). ``min_index`` limits a hold or trigger to
    connections accepted from then on (0: the first).
  - ``reset()``: RST every open connection now (SO_LINGER 0), both sides.
  - ``close_all()``: close every open connection now (FIN), both sides.

* hold traffic at a chosen point, so that a test acts at a known instant rather
  than after a sleep (a kill lands mid-transfer, a late APPEND lands after its
  client died, a connection is refused while the others are busy).  Held bytes
  wait in the proxy (it keeps reading, up to its buffer), as on a stalled link:

  - ``hold(after=n, direction="c2s")``: once exactly ``n`` more bytes have
    passed in that direction (counted across connections), the connection
    carrying the n-th byte forwards nothing more in that direction until
    ``release()``; ``hold(pattern=p)``: hold right before ``p`` would pass.
    ``everything=True``: at that point *every* connection stops forwarding,
    both ways, new ones too, until ``release()`` (the client then waits for
    bytes that do not come, in whatever it was doing: the kill -9 loops).
  - ``hold_now()``: hold everything at once; ``hold_after_client_sends(p, nth)``:
    hold everything once the client side has sent ``p`` for the nth time in
    all (the chunk carrying it still reaches the server: e.g. a QUIT that the
    server acts on, whose answer never arrives).
  - ``held`` (an Event) is set when any hold begins and cleared by
    ``release()``; ``wait_held(timeout)`` waits for it.  ``release(index)``
    lets only connection ``index`` (0: the first accepted) go on.
  - ``admit_serially(settled)``: a connection's server bytes wait until every
    earlier connection has closed or been sent ``settled`` (a regex, e.g. the
    login's answer), so logins happen one after the other in accept order;
    ``settled_connections`` counts those done.
  - ``hold_responses(pattern, until)``: a server chunk matching ``pattern``
    (a regex) waits until ``until()`` is true (checked every 50 ms).

Patterns are matched across chunk boundaries for up to 64 bytes.

Thread based: one accept thread, and per connection and direction a reader
and a writer thread joined by a bounded queue.  Sockets use a 0.05 s timeout
internally so that ``stop()`` (or leaving the ``with`` block) is prompt and
never hangs on a blocked peer.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

_POLL = 0.05
_CHUNK = 65536
C2S, S2C = "c2s", "s2c"
DIRECTIONS = (C2S, S2C)


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'c2s', 's2c' or 'both', not {direction!r}")
    return (direction,)


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


@dataclass
class _PatternCut:
    pattern: bytes
    direction: str
    times: int
    rst: bool
    forward: bool


@dataclass
class _Trigger:
    remaining: int
    callback: Callable[[], None]
    pattern: bytes | None = None
    min_index: int = 0
    times: int = 1  # occurrences of ``pattern`` still to see


@dataclass
class _Hold:
    remaining: int
    pattern: bytes | None = None
    min_index: int = 0
    everything: bool = False  # stop every connection, both ways, not just this lane


@dataclass
class _Lane:
    """One direction of one connection: read from ``src``, queued, written to ``dst``."""

    direction: str
    src: socket.socket
    dst: socket.socket
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    queued: int = 0
    ended: bool = False  # the reader saw EOF or an error
    reset_seen: bool = False  # ... and it was an error (RST)
    sink: bool = False  # the destination is gone: drop what comes
    held: bool = False
    sent: int = 0
    read: int = 0
    next_send: float = 0.0  # drip pacing
    tail: bytes = b""  # the last bytes forwarded, for patterns across chunks
    read_tail: bytes = b""  # the last bytes read
    stalled: bool = False  # per-connection stall already done
    delay: float = 0.0
    conn_index: int = 0


class _Conn:
    def __init__(self, proxy: TcpProxy, index: int, client: socket.socket,
                 server: socket.socket) -> None:
        self.proxy = proxy
        self.index = index
        self.client = client
        self.server = server
        self.closed = threading.Event()  # aborted: stop everything now
        self.finished = threading.Event()  # every thread is done, sockets closed
        self.cond = threading.Condition()
        self.lanes = {C2S: _Lane(C2S, client, server, conn_index=index),
                      S2C: _Lane(S2C, server, client, conn_index=index)}
        self.started = time.monotonic()
        self.settled = False  # admit_serially: the server sent the `settled` pattern
        self._lock = threading.Lock()
        self._threads_left = 4

    @property
    def from_server(self) -> int:
        return self.lanes[S2C].sent

    @property
    def to_server(self) -> int:
        return self.lanes[C2S].sent

    def start(self) -> None:
        for lane in self.lanes.values():
            for role, target in (("read", self._reader), ("write", self._writer)):
                threading.Thread(target=target, args=(lane,), daemon=True,
                                 name=f"proxy-{self.proxy.port}-{lane.direction}-{role}").start()

    def abort(self, rst: bool) -> None:
        """Close both sides now (RST if rst, else FIN); idempotent."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        with self.cond:
            self.cond.notify_all()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)  # wakes readers; sends nothing
                else:
                    s.shutdown(socket.SHUT_RDWR)  # sends FIN now

    # -- reading ------------------------------------------------------------------
    def _reader(self, lane: _Lane) -> None:
        try:
            while not self.closed.is_set():
                with self.cond:
                    while (lane.queued >= self.proxy._buffer_limit(lane.direction)
                           and not self.closed.is_set()):
                        self.cond.wait(_POLL)
                if self.closed.is_set():
                    break
                try:
                    data = lane.src.recv(_CHUNK)
                except TimeoutError:
                    continue
                except OSError:
                    with self.cond:
                        lane.ended = lane.reset_seen = True
                        self.cond.notify_all()
                    if not self._delivers_after(lane):
                        self.abort(rst=True)
                    break
                with self.cond:
                    if not data:
                        lane.ended = True
                    else:
                        lane.queue.append((time.monotonic(), data))
                        lane.queued += len(data)
                    self.cond.notify_all()
                if not data:
                    break
                for callback in self.proxy._fire_read(self, lane, data):
                    callback()
        finally:
            self._thread_done()

    def _delivers_after(self, lane: _Lane) -> bool:
        """A dying client's bytes still in flight keep going to the server (keep_delivering)."""
        return lane.direction == C2S and self.proxy.keep_delivering

    # -- writing ------------------------------------------------------------------
    def _writer(self, lane: _Lane) -> None:
        try:
            while True:
                with self.cond:
                    while not lane.queue and not lane.ended and not self.closed.is_set():
                        self.cond.wait(_POLL)
                    if self.closed.is_set():
                        return
                    if not lane.queue:
                        break  # the reader ended and everything is forwarded
                    read_at, data = lane.queue.popleft()
                    lane.queued -= len(data)
                    self.cond.notify_all()
                due = read_at + lane.delay
                if not self._sleep_until(due):
                    return
                if not self.proxy._forward(self, lane, data):
                    return
            # EOF (or a dead client whose bytes were all delivered): pass the half-close on.
            if lane.reset_seen and not self._delivers_after(lane):
                return
            with contextlib.suppress(OSError):
                lane.dst.shutdown(socket.SHUT_WR)
            if lane.direction == C2S and lane.reset_seen:
                self.lanes[S2C].sink = True  # the client is gone: its answers go nowhere
        finally:
            self._thread_done()

    def _sleep_until(self, when: float) -> bool:
        """Wait until ``when`` (monotonic); False if the connection was aborted meanwhile."""
        while True:
            left = when - time.monotonic()
            if left <= 0:
                return not self.closed.is_set()
            if self.closed.wait(min(left, _POLL)):
                return False

    def send(self, lane: _Lane, data: bytes | memoryview) -> bool:
        if lane.sink:
            return True
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                return False
            try:
                n = lane.dst.send(view)
            except TimeoutError:
                continue
            except OSError:
                if lane.direction == S2C and self.proxy.keep_delivering:
                    lane.sink = True  # a dead client: keep reading the server, drop its words
                    return True
                return False
            view = view[n:]
        return True

    def wait_until_free(self, lane: _Lane, piece: memoryview) -> bool:
        """Wait while a hold keeps ``piece`` back; False if the connection closed meanwhile."""
        while self.proxy._keeps_back(self, lane, piece):
            with self.cond:
                if self.closed.is_set():
                    return False
                self.cond.wait(_POLL)  # woken by release(); the poll covers conditions
        return not self.closed.is_set()

    def _thread_done(self) -> None:
        with self._lock:
            self._threads_left -= 1
            last = self._threads_left == 0
        if last:
            self._finish()
        else:
            # A writer that stopped (abort, failed send) must not leave the others waiting.
            with self.cond:
                self.cond.notify_all()

    def _finish(self) -> None:
        self.closed.set()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.close()
        self.proxy._forget(self)
        self.finished.set()


class TcpProxy:
    """Real TCP forwarder on 127.0.0.1 with byte counters, transcript, link shaping and faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        record: bool = True,
        record_limit: int = 16 * 1024 * 1024,
        listen_host: str = "127.0.0.1",
        buffer_limit: int = 4 * 1024 * 1024,
    ) -> None:
        self.target = (target_host, target_port)
        self.record = record
        self.record_limit = record_limit
        #: Bytes the proxy reads ahead per connection and direction (in flight).
        self.buffer_limit = buffer_limit
        self.bytes_from_server = 0
        self.bytes_to_server = 0
        self.connections_accepted = 0
        #: The most connections that were open at the same moment.
        self.peak_connections = 0
        #: Server -> client bytes per second allowed on each connection (None: no
        #: limit): the per-connection throughput cap real providers impose, for
        #: benchmarks of parallel connections.
        self.connection_bandwidth: float | None = None
        #: Deliver what a closed or dead client already sent (see the module docstring).
        self.keep_delivering = False
        self._from_server_rec = bytearray()
        self._to_server_rec = bytearray()
        self.transcript_truncated = False
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._all: list[_Conn] = []
        self._delay = {C2S: 0.0, S2C: 0.0}
        self._rate: dict[str, float | None] = {C2S: None, S2C: None}
        self._cut: dict[str, _Cut | None] = {C2S: None, S2C: None}
        self._stall: dict[str, _Stall | None] = {C2S: None, S2C: None}
        self._hold: dict[str, _Hold | None] = {C2S: None, S2C: None}
        self._patterns: list[_PatternCut] = []
        self._triggers: dict[str, list[_Trigger]] = {C2S: [], S2C: []}
        self._read_triggers: dict[str, list[_Trigger]] = {C2S: [], S2C: []}
        #: Set when a hold begins (a lane or everything); cleared by release().
        self.held = threading.Event()
        self._frozen = False  # everything is held
        self._admit: re.Pattern[bytes] | None = None
        self._response_hold: tuple[re.Pattern[bytes], Callable[[], bool]] | None = None
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

    # link shaping
    def delay(self, seconds: float, direction: str = "both", *, existing: bool = True) -> None:
        """Hold every byte ``seconds`` in the proxy before forwarding it (0: no delay); for
        connections accepted from now on, and (``existing``) those already open."""
        for d in _directions(direction):
            self._delay[d] = max(0.0, seconds)
            for c in self._snapshot() if existing else ():
                c.lanes[d].delay = max(0.0, seconds)

    def drip(self, bytes_per_second: float | None, direction: str = "both") -> None:
        """At most ``bytes_per_second`` per connection in ``direction`` (None: no limit)."""
        for d in _directions(direction):
            self._rate[d] = bytes_per_second
        self._wake()

    # faults
    def cut_after(self, n_bytes: int, *, per_connection: bool = False, rst: bool = False,
                  direction: str = S2C) -> None:
        """Close a connection after n bytes in ``direction`` (see module docstring)."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        (d,) = _directions(direction)
        with self._lock:
            self._cut[d] = _Cut(n_bytes, per_connection, rst)
            conns = list(self._conns) if per_connection else []
        for c in conns:  # already past the limit: cut now
            if c.lanes[d].sent >= n_bytes:
                c.abort(rst)

    def cut_on(self, pattern: bytes, *, direction: str = C2S, times: int = 1, rst: bool = False,
               forward: bool = False) -> None:
        """Close the next ``times`` connections where ``pattern`` passes (module docstring)."""
        if not pattern or times < 1:
            raise ValueError("a pattern and times >= 1 are needed")
        (d,) = _directions(direction)
        with self._lock:
            self._patterns.append(_PatternCut(pattern, d, times, rst, forward))

    def stall(self, seconds: float, *, after: int = 0, per_connection: bool = False,
              direction: str = S2C) -> None:
        """Pause forwarding in ``direction`` for seconds once `after` bytes passed."""
        (d,) = _directions(direction)
        with self._lock:
            self._stall[d] = _Stall(seconds, after, per_connection)

    def hold(self, *, after: int = 0, direction: str = C2S, pattern: bytes | None = None,
             min_index: int = 0, everything: bool = False) -> None:
        """Stop forwarding (until :meth:`release`) on the connection that carries the
        ``after``-th next byte in ``direction`` (or, with ``pattern``, right before it);
        ``everything``: on every connection, both ways, from that byte on."""
        (d,) = _directions(direction)
        with self._lock:
            self._hold[d] = _Hold(after, pattern, min_index, everything)

    def hold_now(self) -> None:
        """Hold everything from now on: no connection forwards a byte until release()."""
        with self._lock:
            self._frozen = True
            self.held.set()

    def hold_after_client_sends(self, pattern: bytes, nth: int = 1) -> None:
        """Hold everything once the client side has sent ``pattern`` ``nth`` times in all
        (counted from now, across connections); the chunk carrying it reaches the server."""
        self.when_bytes(0, self.hold_now, C2S, pattern=pattern, nth=nth)

    def wait_held(self, timeout: float) -> bool:
        """Wait until a hold has begun; True if it did within ``timeout`` seconds."""
        return self.held.wait(timeout)

    def release(self, index: int | None = None) -> None:
        """Forward again what held connections have buffered (all, or connection ``index``).
        Releasing all also disarms the holds not yet reached."""
        with self._lock:
            if index is None:
                self._hold = {C2S: None, S2C: None}
                self._frozen = False
                for d in DIRECTIONS:
                    self._triggers[d] = [t for t in self._triggers[d]
                                         if t.callback != self.hold_now]
            conns = [c for c in self._all if index is None or c.index == index]
        for c in conns:
            with c.cond:
                for lane in c.lanes.values():
                    lane.held = False
                c.cond.notify_all()
        with self._lock:
            if not self._frozen and not any(lane.held for c in self._all
                                            for lane in c.lanes.values()):
                self.held.clear()

    def admit_serially(self, settled: bytes) -> None:
        """Hold each connection's server bytes until every earlier one was sent
        ``settled`` (a regex) or closed: the server answers one login at a time."""
        with self._lock:
            self._admit = re.compile(settled)

    def hold_responses(self, pattern: bytes, until: Callable[[], bool]) -> None:
        """Hold every server chunk matching ``pattern`` (a regex) until ``until()`` is true."""
        with self._lock:
            self._response_hold = (re.compile(pattern), until)

    @property
    def settled_connections(self) -> int:
        """Connections that were sent the admit_serially pattern, or closed before it."""
        with self._lock:
            return sum(1 for c in self._all if c.settled or c.closed.is_set())

    def when_bytes(self, n_bytes: int, callback: Callable[[], None], direction: str = C2S, *,
                   pattern: bytes | None = None, min_index: int = 0, nth: int = 1) -> None:
        """Call ``callback()`` (on the proxy thread forwarding those bytes, which waits for
        it) once ``n_bytes`` more have been forwarded, or ``pattern`` has been ``nth`` times."""
        if nth < 1:
            raise ValueError("nth must be >= 1")
        (d,) = _directions(direction)
        with self._lock:
            self._triggers[d].append(_Trigger(n_bytes, callback, pattern, min_index, nth))

    def when_read(self, callback: Callable[[], None], *, pattern: bytes, direction: str = C2S,
                  min_index: int = 0) -> None:
        """Call ``callback()`` once the proxy has *read* ``pattern`` (the sender sent it)."""
        (d,) = _directions(direction)
        with self._lock:
            self._read_triggers[d].append(_Trigger(0, callback, pattern, min_index))

    def clear_faults(self, *, release: bool = True) -> None:
        """Disarm every fault and trigger; held connections are let go unless ``release``
        is False (their bytes stay on the wire until :meth:`release`)."""
        with self._lock:
            self._cut = {C2S: None, S2C: None}
            self._stall = {C2S: None, S2C: None}
            self._hold = {C2S: None, S2C: None}
            self._patterns.clear()
            self._triggers = {C2S: [], S2C: []}
            self._read_triggers = {C2S: [], S2C: []}
            self._admit = None
            self._response_hold = None
        if release:
            self.release()

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

    def wait_connection_closed(self, index: int, timeout: float = 30.0) -> bool:
        """Wait until connection number ``index`` (0: the first accepted) is over on both
        sides: everything it carried is delivered and the server closed its end."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                conn = self._all[index] if index < len(self._all) else None
            if conn is not None:
                return conn.finished.wait(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

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

    def _wake(self) -> None:
        for c in self._snapshot():
            with c.cond:
                c.cond.notify_all()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _keeps_back(self, conn: _Conn, lane: _Lane, piece: memoryview) -> bool:
        """Whether a hold keeps ``piece`` (next on ``lane``) from being forwarded now."""
        with self._lock:
            if self._frozen or lane.held:
                return True
            if lane.direction != S2C:
                return False
            if self._admit is not None and any(
                    not c.settled and not c.closed.is_set() for c in self._all[:conn.index]):
                return True  # an earlier connection's login is not answered yet
            if self._response_hold is None:
                return False
            regex, until = self._response_hold
            if regex.search(lane.tail + bytes(piece)) is None:
                return False
        return not until()  # outside the lock: until() may ask the proxy

    def _buffer_limit(self, direction: str) -> int:
        rate = self._rate[direction]
        if rate:  # read only a little ahead of a slow link: the sender's queue fills
            return max(16 * 1024, int(rate / 4))
        return self.buffer_limit

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
            with self._lock:
                conn = _Conn(self, len(self._all), client, server)
                for d in DIRECTIONS:
                    conn.lanes[d].delay = self._delay[d]
                self._all.append(conn)
                self._conns.add(conn)
                self.connections_accepted += 1
                self.peak_connections = max(self.peak_connections, len(self._conns))
                cut = self._cut[S2C]
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
        """Count and record client bytes just before they are forwarded (a subclass hook)."""
        with self._lock:
            self.bytes_to_server += len(data)
            self._record(self._to_server_rec, data)

    def _count_from_server(self, conn: _Conn, data: bytes) -> None:
        with self._lock:
            self.bytes_from_server += len(data)
            self._record(self._from_server_rec, data)

    def _plan(self, conn: _Conn, lane: _Lane, size: int,
              view: memoryview | None = None) -> tuple[int, str, object]:
        """How many of the next ``size`` bytes may go, and what happens then (lock held)."""
        d = lane.direction
        limit, action, what = size, "", None
        cut = self._cut[d]
        if cut is not None:
            allowed = cut.remaining - lane.sent if cut.per_connection else cut.remaining
            allowed = max(allowed, 0)
            if allowed <= limit:
                limit, action, what = allowed, "cut", cut
        stall = self._stall[d]
        if stall is not None and not (stall.per_connection and lane.stalled):
            point = stall.after - lane.sent if stall.per_connection else stall.after
            point = max(point, 0)
            # a stall strictly before the cut point (or anywhere, without a cut)
            if point < limit or (point == limit and action != "cut"):
                limit, action, what = point, "stall", stall
        hold = self._hold[d]
        if hold is not None and conn.index >= hold.min_index:
            point = hold.remaining
            if hold.pattern is not None:
                point = self._pattern_start(lane, hold.pattern, size, view)
            if point is not None and point <= limit:
                limit, action, what = point, "hold", hold
        return limit, action, what

    @staticmethod
    def _pattern_start(lane: _Lane, pattern: bytes, size: int, view: memoryview | None) -> int | None:
        """Where in the next ``size`` bytes ``pattern`` starts (None: not there)."""
        if view is None:
            return None
        keep = len(pattern) - 1
        joined = (lane.tail[-keep:] if keep else b"") + bytes(view[:size])
        at = joined.find(pattern)
        if at < 0:
            return None
        return max(0, at - (len(joined) - size))

    def _forward(self, conn: _Conn, lane: _Lane, data: bytes) -> bool:
        """Send ``data`` on, applying faults and pacing; False = stop this direction."""
        view = memoryview(data)
        while view:
            rate = self._rate[lane.direction]
            piece = view[:max(1, int(rate / 20))] if rate else view
            if not conn.wait_until_free(lane, piece):
                return False
            if rate:
                now = time.monotonic()
                lane.next_send = max(lane.next_send, now)
                if not conn._sleep_until(lane.next_send):
                    return False
            with self._lock:
                limit, action, what = self._plan(conn, lane, len(piece), piece)
                pattern_at, pattern = self._find_pattern(lane, bytes(piece[:limit]))
                if pattern is not None:
                    limit = pattern_at
                    action, what = "pattern", pattern
                chunk = bytes(piece[:limit])
                n = len(chunk)
                lane.sent += n
                before = lane.tail
                lane.tail = (lane.tail + chunk)[-64:]
                self._advance(lane.direction, n, lane, action, what)
                fired = self._fire(conn, lane.direction, before, chunk)
                if pattern is not None:
                    pattern.times -= 1
                    if pattern.times <= 0 and pattern in self._patterns:
                        self._patterns.remove(pattern)
                settles = (lane.direction == S2C and self._admit is not None
                           and not conn.settled and self._admit.search(before + chunk) is not None)
                conn.settled = conn.settled or settles
            # count before sending, so a peer that got the bytes sees them counted
            if lane.direction == C2S:
                self._count_to_server(conn, chunk)
            else:
                self._count_from_server(conn, chunk)
            if chunk and not conn.send(lane, chunk):
                return False
            if settles:
                self._wake()  # the next connection in line may now be answered
            for callback in fired:
                callback()
            if rate:
                lane.next_send += n / rate
            if lane.direction == S2C and self.connection_bandwidth:
                ahead = lane.sent / self.connection_bandwidth - (time.monotonic() - conn.started)
                if ahead > 0:
                    time.sleep(ahead)
            view = view[limit:]
            if action == "pattern":
                assert isinstance(what, _PatternCut)
                if what.forward and view:
                    # forward the rest of the chunk that carries the pattern, then cut
                    rest = bytes(view)
                    if lane.direction == C2S:
                        self._count_to_server(conn, rest)
                    conn.send(lane, rest)
                conn.abort(what.rst)
                return False
            if action == "cut":
                assert isinstance(what, _Cut)
                conn.abort(what.rst)
                return False
            if action == "hold":
                assert isinstance(what, _Hold)
                with self._lock:
                    if what.everything:
                        self._frozen = True
                    else:
                        with conn.cond:
                            lane.held = True
                    self.held.set()
            if action == "stall":
                assert isinstance(what, _Stall)
                # interruptible sleep: stop() or a fault closing this connection ends it
                deadline = time.monotonic() + what.seconds
                while not conn.closed.is_set() and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    conn.closed.wait(min(left, _POLL))
                if conn.closed.is_set():
                    return False
        return True

    def _find_pattern(self, lane: _Lane, chunk: bytes) -> tuple[int, _PatternCut | None]:
        """The first armed pattern that starts in ``chunk`` (or ends in it, across chunks)."""
        best: tuple[int, _PatternCut | None] = (len(chunk) + 1, None)
        for p in self._patterns:
            if p.direction != lane.direction:
                continue
            keep = len(p.pattern) - 1
            joined = (lane.tail[-keep:] if keep else b"") + chunk
            at = joined.find(p.pattern)
            if at < 0:
                continue
            start = max(0, at - (len(joined) - len(chunk)))
            if p.forward:
                start = len(chunk)  # the whole chunk goes, then the cut
            if start < best[0]:
                best = (start, p)
        return best if best[1] is not None else (len(chunk), None)

    def _advance(self, direction: str, n: int, lane: _Lane, action: str, what: object) -> None:
        """Move the one-shot counters on by ``n`` forwarded bytes (lock held)."""
        cut, stall, hold = self._cut[direction], self._stall[direction], self._hold[direction]
        if cut is not None and not cut.per_connection:
            cut.remaining = max(cut.remaining - n, 0)
        if stall is not None and not stall.per_connection:
            stall.after = max(stall.after - n, 0)
        if hold is not None and hold.pattern is None and lane.conn_index >= hold.min_index:
            hold.remaining = max(hold.remaining - n, 0)
        if action == "stall" and isinstance(what, _Stall):
            if what.per_connection:
                lane.stalled = True
            elif self._stall[direction] is what:
                self._stall[direction] = None  # one-shot
        if action == "cut" and isinstance(what, _Cut) and not what.per_connection \
                and self._cut[direction] is what:
            self._cut[direction] = None  # one-shot
        if action == "hold" and self._hold[direction] is what:
            self._hold[direction] = None  # one-shot

    def _fire(self, conn: _Conn, direction: str, before: bytes,
              chunk: bytes) -> list[Callable[[], None]]:
        """Callbacks whose byte count or pattern ``chunk`` (forwarded after ``before``)
        reaches (lock held)."""
        fired: list[_Trigger] = []
        keep: list[_Trigger] = []
        seen = before + chunk
        for t in self._triggers[direction]:
            if conn.index < t.min_index:
                keep.append(t)
                continue
            if t.pattern is None:
                t.remaining -= len(chunk)
                hit = t.remaining <= 0
            else:
                # only the occurrences that end in this chunk (the rest were counted)
                t.times -= seen.count(t.pattern, max(len(before) - len(t.pattern) + 1, 0))
                hit = t.times <= 0
            (fired if hit else keep).append(t)
        self._triggers[direction] = keep
        return [t.callback for t in fired]

    def _fire_read(self, conn: _Conn, lane: _Lane, data: bytes) -> list[Callable[[], None]]:
        """Read-side pattern triggers that ``data`` (just read) completes."""
        with self._lock:
            lane.read += len(data)
            seen = lane.read_tail + data
            lane.read_tail = seen[-64:]
            fired: list[_Trigger] = []
            keep: list[_Trigger] = []
            for t in self._read_triggers[lane.direction]:
                hit = conn.index >= t.min_index and t.pattern is not None and t.pattern in seen
                (fired if hit else keep).append(t)
            self._read_triggers[lane.direction] = keep
        return [t.callback for t in fired]
