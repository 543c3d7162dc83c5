"""Restore's peer: a pipelined APPEND loop, as small as a restore can be.

    python bench/append_loop.py ARCHIVE.sqlite HOST PORT USER   (password in $APPEND_PW)

Reads every message of a SQLite archive through its public schema and APPENDs
it, one APPEND command per message with its flags and INTERNALDATE, to the
folder of the same name (CREATEd first). Commands use LITERAL+ (RFC 7888), so
none waits for a continuation, and a reader thread collects the tagged answers
while the writer keeps sending: up to 8 MB in flight, so latency costs one
round trip per window, not per message. No exactly-once state, no duplicate
check, no folder mapping: this is the speed a restore could reach if it did
nothing else, the bar for ``mailmigrate restore``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
from datetime import datetime

from imapclient.imap_utf7 import encode as utf7

WINDOW_BYTES = 8 << 20
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def imap_date(iso: str) -> bytes:
    d = datetime.fromisoformat(iso)
    off = int(d.utcoffset().total_seconds() // 60) if d.utcoffset() is not None else 0
    sign = "+" if off >= 0 else "-"
    return (f'"{d.day:02d}-{MONTHS[d.month - 1]}-{d.year} {d:%H:%M:%S} '
            f'{sign}{abs(off) // 60:02d}{abs(off) % 60:02d}"').encode()


def quoted(name: str) -> bytes:
    return b'"' + utf7(name).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Pipeline:
    """Tagged commands written back to back; a thread reads the answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.file.readline()  # greeting
        self.next_tag = 0
        self.in_flight: dict[bytes, int] = {}
        self.bytes_in_flight = 0
        self.failed: list[bytes] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            line = self.file.readline()
            if not line:
                with self.cond:
                    self.in_flight.clear()
                    self.cond.notify_all()
                return
            tag, _, rest = line.partition(b" ")
            with self.cond:
                if tag in self.in_flight:
                    if not rest.startswith(b"OK"):
                        self.failed.append(line.strip())
                    self.bytes_in_flight -= self.in_flight.pop(tag)
                    self.cond.notify_all()

    def send(self, command: bytes, literal: bytes | None = None) -> None:
        size = len(literal or b"")
        with self.cond:
            while self.in_flight and self.bytes_in_flight + size > WINDOW_BYTES:
                self.cond.wait()
            tag = b"p%d" % self.next_tag
            self.next_tag += 1
            self.in_flight[tag] = size
            self.bytes_in_flight += size
        if literal is None:
            self.sock.sendall(tag + b" " + command + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + command + b" {%d+}\r\n" % size)
            self.sock.sendall(literal)
            self.sock.sendall(b"\r\n")

    def wait_all(self) -> None:
        with self.cond:
            while self.in_flight:
                self.cond.wait()


def main() -> int:
    archive, host, port, user = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pipe = Pipeline(sock)
    pipe.send(b"LOGIN " + quoted(user) + b" " + quoted(os.environ["APPEND_PW"]))
    pipe.wait_all()
    db = sqlite3.connect(f"file:{archive}?mode=ro", uri=True)
    created: set[str] = set()
    count = 0
    rows = db.execute("SELECT f.name, m.raw, fm.flags, fm.internaldate FROM folder_messages fm"
                      " JOIN folders f ON f.id = fm.folder_id JOIN messages m ON m.id = fm.message_id"
                      " ORDER BY f.name, fm.uid")
    for name, raw, flags, internaldate in rows:
        if name not in created:
            created.add(name)
            if name.upper() != "INBOX":
                pipe.send(b"CREATE " + quoted(name))
                pipe.wait_all()
        flag_list = " ".join(f for f in json.loads(flags) if f.lower() != "\\recent").encode()
        date = b" " + imap_date(internaldate) if internaldate else b""
        pipe.send(b"APPEND " + quoted(name) + b" (" + flag_list + b")" + date, bytes(raw))
        count += 1
    pipe.wait_all()
    pipe.send(b"LOGOUT")
    pipe.wait_all()
    failed = [f for f in pipe.failed if b"ALREADYEXISTS" not in f.upper()]
    print(f"appended {count} messages, {len(failed)} refused", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
