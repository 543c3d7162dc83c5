"""A loopback TCP proxy that behaves like a real link: delay, bandwidth, round trips.

``LinkProxy(port, rtt=0.03, bandwidth=5e6)`` listens on 127.0.0.1 and forwards
every connection to ``127.0.0.1:port``. Each direction of each connection is a
link of its own: a chunk that arrives is sent on at the link's bandwidth, after
the ones before it, and delivered half an RTT later (a propagation delay). A
small buffer per direction (about one bandwidth-delay product) pushes back on a
fast sender the way TCP's window does, so a client cannot park a whole mailbox
in the proxy. This is the "real link" of the peer benchmark: with 30 ms and
5 MB/s per connection, latency costs a round trip per command that waits for an
answer, and only parallel connections add bandwidth, as with a provider that
caps each connection.

``turns`` counts, over all connections, the times a client sent after the
server had last spoken on that connection: a client that waits for every reply
pays one RTT per turn.

(tests/proxy.py's ``TcpProxy`` has a bandwidth cap but forwards chunk by chunk
from one thread per direction, so a delay there would also throttle the
throughput; this proxy keeps the two apart, with asyncio and a queue per
direction. It is for benchmarks, not for fault injection.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

_CHUNK = 16 * 1024


class LinkProxy:
    def __init__(self, target_port: int, *, rtt: float = 0.03, bandwidth: float = 5e6,
                 target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = rtt / 2
        self.bandwidth = bandwidth
        self.turns = 0
        self.connections = 0
        self._buffer_chunks = max(4, int(bandwidth * rtt / _CHUNK) + 2)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="linkproxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        self.connections += 1
        last = {"server_spoke": True}  # the greeting comes first; a login is a turn
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._direction(c_reader, s_writer, last, from_server=False),
                                 self._direction(s_reader, c_writer, last, from_server=True),
                                 return_exceptions=True)
        for w in (c_writer, s_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         last: dict[str, bool], *, from_server: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self._buffer_chunks)
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            free_at = 0.0  # when this direction's link has sent all it was given
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                now = loop.time()
                if not from_server and data and last["server_spoke"]:
                    self.turns += 1
                last["server_spoke"] = from_server if data else last["server_spoke"]
                if not data:
                    await queue.put((now + self.delay, b""))
                    return
                start = max(now, free_at)
                free_at = start + len(data) / self.bandwidth
                await queue.put((free_at + self.delay, data))

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    return

        await asyncio.gather(receive(), deliver())

    def reset(self) -> None:
        self.turns = 0

    def stop(self) -> None:
        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
