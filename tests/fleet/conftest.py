"""Fleet fixtures: two source "hosts" and two destination "hosts" in front of the private Dovecot,
and a factory of seeded account pairs with a CSV that names them.

Each host is a real TCP listener (:class:`SessionProxy`, a :class:`proxy.TcpProxy`) on its
own loopback port, so a host is ``127.0.0.1:PORT`` to mailmigrate and every session it
opens there is counted at the proxy.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_seed import seed_account
from proxy import TcpProxy

_TCP_ESTABLISHED = 1


def _client_open(sock: socket.socket) -> bool:
    """True while the client has not closed its end (the proxy's socket is ESTABLISHED);
    the kernel flips the state as the client's FIN arrives, before any pump thread runs."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return struct.unpack("B", info[:1])[0] == _TCP_ESTABLISHED


class _LiveConnections(set):
    """The proxy's connection set, whose size counts only sessions the client still holds:
    a connection whose client exited is not a session, even before the proxy tidies it up."""

    def __len__(self) -> int:
        return sum(1 for conn in self if _client_open(conn.client))


class SessionProxy(TcpProxy):
    """A TcpProxy whose ``peak_connections`` counts the sessions clients held at once."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port, record=False)
        with self._lock:
            self._conns = _LiveConnections(self._conns)

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, user: str) -> str:
        return f"imap://{user}@{self.host}:{self.port}?tls=none"


@dataclass
class Hosts:
    sources: list[SessionProxy]
    dests: list[SessionProxy]

    def all(self) -> list[SessionProxy]:
        return [*self.sources, *self.dests]


@pytest.fixture
def hosts(dovecot):
    proxies = [SessionProxy(dovecot.host, dovecot.imap_port) for _ in range(4)]
    try:
        yield Hosts(proxies[:2], proxies[2:])
    finally:
        for p in proxies:
            p.stop()


@dataclass
class Pair:
    index: int
    source: object
    dest: object
    source_host: SessionProxy
    dest_host: SessionProxy
    messages: int


@dataclass
class Fleet:
    pairs: list[Pair] = field(default_factory=list)
    csv: Path | None = None


def write_password(directory: Path, user) -> str:
    path = directory / f"{user.name}.pw"
    path.write_text(user.password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return f"file:{path}"


@pytest.fixture
def make_fleet(dovecot, hosts, tmp_path):
    """make_fleet(n, per_folder=2, size=700) -> Fleet: n seeded source accounts spread over the
    two source hosts, n empty destination accounts over the two destination hosts, and a CSV
    (our format) with file: password references."""

    def make(n: int, per_folder: int = 2, size: int = 700) -> Fleet:
        secrets = tmp_path / "secrets"
        secrets.mkdir(exist_ok=True)
        fleet = Fleet()
        lines = ["kind,source,dest,source_password,dest_password"]
        for i in range(n):
            src, dst = dovecot.add_user(), dovecot.add_user()
            count = seed_account(dovecot, src, per_folder=per_folder, size=size)
            sh, dh = hosts.sources[i % 2], hosts.dests[(i // 2) % 2]
            fleet.pairs.append(Pair(i, src, dst, sh, dh, count))
            lines.append(f"copy,{sh.url(src.name)},{dh.url(dst.name)},"
                         f"{write_password(secrets, src)},{write_password(secrets, dst)}")
        fleet.csv = tmp_path / "accounts.csv"
        fleet.csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return fleet

    return make


@pytest.fixture
def redis_server():
    from redis_server import RedisServer, RedisUnavailable

    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.cleanup()
