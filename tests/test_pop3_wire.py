"""POP3 multi-line framing: one pass over the bytes, whatever the packet boundaries.

``Wire.multiline`` finds the terminator and the stuffed dots in one scan and
copies the body out once. These tests feed it a byte stream cut at every kind
of boundary (inside a CRLF, between CRLF and a dot, inside the terminator)
through a socket stand-in whose ``recv`` hands out chunks as listed, so the
cuts are deterministic; the real server is in test_pop3_store / test_drain.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.stores.pop3 import ProtocolError, Wire, unstuff


class ChunkedSocket:
    """``recv`` returns the given chunks one by one, then b"" (the peer closed)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.recv_calls = 0

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        return self.chunks.pop(0)[:size] if self.chunks else b""

    def sendall(self, data: bytes) -> None:  # pragma: no cover - not used here
        raise AssertionError("nothing is sent")


def stuff(lines: list[bytes]) -> bytes:
    """RFC 1939 §3: a line starting with '.' is sent with one more '.'; then '.' CRLF."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


line = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                 st.sampled_from([b".", b"..", b".x", b"...\t", b"", b".\r"[:1]]))


@settings(max_examples=500, deadline=None)
@given(st.lists(line, max_size=30), st.lists(st.integers(0, 10_000), max_size=12),
       st.sampled_from([b"", b"+OK next\r\n", b".\r\n", b"\r\n.\r\n"]))
def test_multiline_equals_unstuff_at_any_packet_boundary(lines, points, after):
    body = b"".join(x + b"\r\n" for x in lines)
    wire_bytes = stuff(lines) + after
    wire = Wire(ChunkedSocket(cut(wire_bytes, points)), "test")  # type: ignore[arg-type]
    got = wire.multiline("reading", limit=1 << 20)
    assert got == body
    assert got == unstuff(stuff(lines)[:-3])
    assert bytes(wire.buf) == after[: len(wire.buf)]  # what follows stays buffered


def test_two_responses_back_to_back_and_an_empty_one():
    stream = stuff([b"a", b".b"]) + stuff([]) + stuff([b"..", b"c"])
    wire = Wire(ChunkedSocket(cut(stream, [1, 4, 5, 9, 13])), "test")  # type: ignore[arg-type]
    assert wire.multiline("1", 1 << 20) == b"a\r\n.b\r\n"
    assert wire.multiline("2", 1 << 20) == b""
    assert wire.multiline("3", 1 << 20) == b"..\r\nc\r\n"


def test_a_body_that_never_ends_stops_at_the_limit():
    endless = [b"x" * 1000 + b"\r\n"] * 100
    wire = Wire(ChunkedSocket(endless), "test")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="without ending"):
        wire.multiline("reading", limit=20_000)


def test_each_byte_is_received_once_for_a_large_body():
    """A 4 MB body in 64 KB packets: no re-reading, one recv per packet."""
    lines = [b"line %d " % i + b"z" * 70 for i in range(50_000)]
    data = stuff(lines)
    sock = ChunkedSocket(cut(data, list(range(0, len(data), 65536))))
    got = Wire(sock, "test").multiline("reading", 1 << 30)  # type: ignore[arg-type]
    assert got == b"".join(x + b"\r\n" for x in lines)
    assert sock.recv_calls == -(-len(data) // 65536)
