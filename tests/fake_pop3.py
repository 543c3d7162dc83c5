"""FakePop3: a tiny REAL POP3 server on loopback, for what Dovecot cannot show.

Dovecot always offers UIDL, SASL and well-formed replies, so it cannot show
how ``drain`` copes with a server *without* UIDL (the TOP fingerprint path),
without SASL (USER/PASS fallback), or with a broken server (a RETR refused,
a reply that is not POP3, a connection dropped mid-message). This fake
speaks just enough RFC 1939 over a real TCP socket for those cases; it is
not a stand-in for anything Dovecot can show.

Semantics that matter: DELE only marks; marked messages go away only when
QUIT is answered (the UPDATE state); a dropped connection deletes nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class FakePop3:
    messages: list[bytes]
    user: str = "fake"
    password: str = "secret"
    uidl: bool = False
    refuse_retr: set[int] = field(default_factory=set)  # 1-based message numbers
    garbage_on_retr: set[int] = field(default_factory=set)
    drop_on_retr: set[int] = field(default_factory=set)  # send half the message, then close
    commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._items = list(enumerate(self.messages))  # (serial, bytes): duplicates stay apart
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = int(self._sock.getsockname()[1])
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def add(self, raw: bytes) -> None:
        """New mail arrives (visible to sessions that start later)."""
        with self._lock:
            self._items.append((max((n for n, _ in self._items), default=-1) + 1000, raw))
            self.messages = [m for _, m in self._items]

    @property
    def url(self) -> str:
        return f"pop3://{self.user}@127.0.0.1:{self.port}?tls=none"

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> FakePop3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rf:
            def send(data: bytes) -> None:
                conn.sendall(data)

            with self._lock:
                items = list(self._items)  # this session's snapshot: numbers are per session
            drop = [m for _, m in items]
            marked: set[int] = set()
            authed = False
            user_ok = False
            send(b"+OK fake POP3 ready\r\n")
            for raw in rf:
                line = raw.rstrip(b"\r\n").decode("latin-1")
                self.commands.append(line.split(" ")[0].upper())
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb == "CAPA":
                    caps = ["USER", "TOP", "PIPELINING"] + (["UIDL"] if self.uidl else [])
                    send(b"+OK\r\n" + b"".join(c.encode() + b"\r\n" for c in caps) + b".\r\n")
                elif verb == "USER":
                    user_ok = arg == self.user
                    send(b"+OK\r\n")
                elif verb == "PASS":
                    authed = user_ok and arg == self.password
                    send(b"+OK logged in\r\n" if authed else b"-ERR [AUTH] invalid login\r\n")
                elif verb == "QUIT":
                    if authed:
                        with self._lock:
                            gone = {items[n - 1][0] for n in marked}
                            self._items = [it for it in self._items if it[0] not in gone]
                            self.messages = [m for _, m in self._items]
                    send(b"+OK bye\r\n")
                    return
                elif not authed:
                    send(b"-ERR log in first\r\n")
                elif verb == "LIST":
                    body = b"".join(f"{i} {len(m)}\r\n".encode()
                                    for i, m in enumerate(drop, 1) if i not in marked)
                    send(b"+OK\r\n" + body + b".\r\n")
                elif verb == "UIDL" and self.uidl:
                    body = b"".join(f"{i} u{abs(hash(m))}\r\n".encode()
                                    for i, m in enumerate(drop, 1) if i not in marked)
                    send(b"+OK\r\n" + body + b".\r\n")
                elif verb in ("RETR", "TOP") and arg.split(" ")[0].isdigit():
                    n = int(arg.split(" ")[0])
                    if not 1 <= n <= len(drop) or n in marked:
                        send(b"-ERR no such message\r\n")
                        continue
                    msg = drop[n - 1]
                    if verb == "TOP":
                        msg = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                    elif n in self.refuse_retr:
                        send(b"-ERR cannot read this message\r\n")
                        continue
                    elif n in self.garbage_on_retr:
                        send(b"* 1 FETCH (garbage)\r\n")
                        continue
                    elif n in self.drop_on_retr:
                        send(b"+OK\r\n" + msg[: len(msg) // 2])
                        return
                    stuffed = msg.replace(b"\r\n.", b"\r\n..")
                    if stuffed.startswith(b"."):
                        stuffed = b"." + stuffed
                    if not stuffed.endswith(b"\r\n"):
                        stuffed += b"\r\n"
                    send(b"+OK\r\n" + stuffed + b".\r\n")
                elif verb == "DELE" and arg.isdigit():
                    marked.add(int(arg))
                    send(b"+OK marked\r\n")
                else:
                    send(b"-ERR unknown command\r\n")
