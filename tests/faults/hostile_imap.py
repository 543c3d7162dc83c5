"""A small real IMAP server that misbehaves on purpose (a test tool).

It speaks just enough IMAP4rev1 for a read-only client (CAPABILITY, LOGIN,
LIST, STATUS, SELECT/EXAMINE, UID SEARCH, UID FETCH, NOOP, LOGOUT) over a
real loopback socket, one thread per connection, and serves folders whose
names and messages are chosen to break things:

* folder names with "..", absolute paths, NUL, 500 characters, names that
  collide after sanitising (sent as literals, byte for byte);
* per message, a ``trick``: ``"lie"`` (the literal announces more bytes than
  it carries, so the stream goes out of step), ``"truncate"`` (the response
  stops in the middle of the literal and the connection closes), ``"huge"``
  (a literal of 3,000,000,000 bytes is announced, a little is sent, then the
  connection closes);
* per folder, ``uidvalidity_flip`` (STATUS says one UIDVALIDITY, SELECT
  another) and ``duplicate_uids`` (SEARCH and FETCH list a UID twice);
* throttling, per folder: ``throttle`` (the first N body fetches are
  answered ``NO [THROTTLED]``) and ``bye_once`` (``* BYE [UNAVAILABLE]``
  and a closed connection on the first body fetch);
* reply shapes a client library cannot parse (``shapes``, per folder, see
  :data:`SHAPES`; ``condstore=True`` announces CONDSTORE so that STATUS asks
  for HIGHESTMODSEQ and flag checks SEARCH by MODSEQ), and an APPENDUID that
  bends RFC 4315 (``appenduid=b"..."``: APPEND succeeds with that code).

Everything else is answered correctly, so a client that isolates the bad
items can archive the rest.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field

DATE = '"01-Jan-2024 10:00:00 +0000"'


@dataclass
class HMessage:
    uid: int
    raw: bytes
    trick: str = ""


@dataclass
class HFolder:
    name: bytes  # as sent on the wire
    messages: list[HMessage] = field(default_factory=list)
    uidvalidity: int = 7
    uidvalidity_flip: bool = False
    duplicate_uids: bool = False
    #: RFC 6154 attribute sent only to LIST ... RETURN (SPECIAL-USE), as the RFC
    #: allows (a plain LIST then shows none); needs HostileImap(special_use=True).
    special_use: bytes = b""
    throttle: int = 0  # the first N body fetches get NO [THROTTLED]
    bye_once: bool = False  # the first body fetch gets BYE [UNAVAILABLE] and a closed socket
    shapes: frozenset[str] = frozenset()  # names from SHAPES
    modseq: int = 1  # HIGHESTMODSEQ, raised by every STATUS (so a folder never looks unchanged)


#: Reply shapes that bend a grammar, each answered only to the command named.
SHAPES = {
    # RFC 7162 section 7: status-att-val =/ "HIGHESTMODSEQ" SP mod-sequence-valzer
    # (a number); NIL instead. The plain STATUS (no HIGHESTMODSEQ asked) is fine.
    "status-modseq": "STATUS ... HIGHESTMODSEQ NIL",
    # RFC 3501 status-att-list = status-att SP number *(SP status-att SP number):
    # an item without its number, whatever was asked.
    "status": "STATUS ... (MESSAGES n UIDNEXT)",
    # RFC 7162 section 7: search-sort-mod-seq = "(" "MODSEQ" SP mod-sequence-value ")";
    # the group is left open. Only for a SEARCH with MODSEQ; a plain one is fine.
    "search-modseq": "* SEARCH 1 2 (MODSEQ",
    # RFC 3501 msg-att-static =/ "RFC822.SIZE" SP number: the number is missing.
    "fetch-size": "* n FETCH (UID u RFC822.SIZE)",
    # RFC 5258 mbox-list-extended = "(" [mbox-list-extended-item ...] ")": an
    # extended item left open, in the answer to LIST ... RETURN (SPECIAL-USE) only.
    "list-extended": '* LIST (...) "/" name ("CHILDINFO" (',
}


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class HostileImap:
    def __init__(self, folders: list[HFolder], *, overquota: bool = False,
                 special_use: bool = False, condstore: bool = False,
                 appenduid: bytes | None = None) -> None:
        self.folders = folders
        self.special_use = special_use  # announce SPECIAL-USE and LIST-EXTENDED
        self.overquota = overquota  # every APPEND is refused with NO [OVERQUOTA]
        self.condstore = condstore  # announce CONDSTORE (HIGHESTMODSEQ, SEARCH MODSEQ)
        self.appenduid = appenduid  # APPEND succeeds with "OK [APPENDUID <this>]"
        self.appends = 0
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> HostileImap:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- one connection -------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        f = conn.makefile("rb")
        selected: HFolder | None = None
        try:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
            while True:
                line = self._read_command(conn, f)
                if line is None:
                    return
                m = re.match(rb"(\S+) (?:UID )?(\S+) ?(.*)", line, re.S)
                if not m:
                    conn.sendall(b"* BAD what\r\n")
                    continue
                tag, cmd, args = m.group(1), m.group(2).upper(), m.group(3)
                uid_cmd = b" UID " in line[: len(tag) + 6].upper()
                if self._bent(conn, tag, cmd, args, selected):
                    continue
                if cmd == b"CAPABILITY":
                    extra = b" SPECIAL-USE LIST-EXTENDED" if self.special_use else b""
                    extra += b" CONDSTORE" if self.condstore else b""
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN" + extra + b"\r\n"
                                 + tag + b" OK done\r\n")
                elif cmd == b"CREATE":
                    if self._folder(args) is None:
                        name = _name_arg(args)
                        self.folders.append(HFolder(name))
                    conn.sendall(tag + b" OK created\r\n")
                elif cmd == b"APPEND":
                    self.appends += 1
                    if self.overquota:
                        conn.sendall(tag + b" NO [OVERQUOTA] quota exceeded (mailbox is full)\r\n")
                    else:
                        conn.sendall(tag + b" NO [CANNOT] this server keeps nothing\r\n")
                elif cmd in (b"LOGIN", b"NOOP", b"SUBSCRIBE"):
                    conn.sendall(tag + b" OK done\r\n")
                elif cmd == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                elif cmd == b"LIST":
                    asked = self.special_use and b"RETURN (SPECIAL-USE)" in args.upper()
                    out = b"".join(
                        b"* LIST (\\HasNoChildren" + (b" " + fo.special_use if asked and fo.special_use
                                                       else b"")
                        + b') "/" ' + _literal(fo.name) + b"\r\n" for fo in self.folders)
                    conn.sendall(out + tag + b" OK done\r\n")
                elif cmd == b"STATUS":
                    fo = self._folder(args)
                    if fo is None:
                        conn.sendall(tag + b" NO no such folder\r\n")
                        continue
                    nxt = max((m.uid for m in fo.messages), default=0) + 1
                    conn.sendall(b"* STATUS " + _literal(fo.name) + b" (MESSAGES %d UIDNEXT %d "
                                 b"UIDVALIDITY %d)\r\n" % (len(fo.messages), nxt, fo.uidvalidity)
                                 + tag + b" OK done\r\n")
                elif cmd in (b"SELECT", b"EXAMINE"):
                    fo = self._folder(args)
                    if fo is None:
                        conn.sendall(tag + b" NO no such folder\r\n")
                        continue
                    selected = fo
                    uv = fo.uidvalidity + (1 if fo.uidvalidity_flip else 0)
                    nxt = max((m.uid for m in fo.messages), default=0) + 1
                    conn.sendall(b"* %d EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n"
                                 b"* OK [UIDVALIDITY %d] x\r\n* OK [UIDNEXT %d] x\r\n"
                                 % (len(fo.messages), uv, nxt) + tag
                                 + (b" OK [READ-ONLY] done\r\n" if cmd == b"EXAMINE"
                                    else b" OK [READ-WRITE] done\r\n"))
                elif cmd == b"SEARCH" and selected is not None:
                    uids = [m.uid for m in selected.messages]
                    if selected.duplicate_uids:
                        uids += uids[:2]
                    conn.sendall(b"* SEARCH " + b" ".join(b"%d" % u for u in uids) + b"\r\n"
                                 + tag + b" OK done\r\n")
                elif cmd == b"FETCH" and selected is not None and uid_cmd:
                    if b"BODY" in args.upper() and selected.bye_once:
                        selected.bye_once = False
                        conn.sendall(b"* BYE [UNAVAILABLE] down for maintenance, back soon\r\n")
                        return
                    if b"BODY" in args.upper() and selected.throttle > 0:
                        selected.throttle -= 1
                        conn.sendall(tag + b" NO [THROTTLED] slow down please\r\n")
                        continue
                    if not self._fetch(conn, selected, args):
                        return
                    conn.sendall(tag + b" OK done\r\n")
                else:
                    conn.sendall(tag + b" BAD unsupported\r\n")
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    # -- reply shapes (SHAPES, appenduid) ------------------------------------------------
    def _bent(self, conn: socket.socket, tag: bytes, cmd: bytes, args: bytes,
              selected: HFolder | None) -> bool:
        """Answer ``cmd`` in a bent shape when a folder asks for it; True if answered."""
        upper = args.upper()
        if cmd == b"APPEND" and self.appenduid is not None:
            self.appends += 1
            conn.sendall(tag + b" OK [APPENDUID " + self.appenduid + b"] appended\r\n")
            return True
        if cmd == b"STATUS":
            fo = self._folder(args)
            if fo is None:
                return False
            fo.modseq += 1
            if "status" in fo.shapes:
                conn.sendall(b"* STATUS " + _literal(fo.name) + b" (MESSAGES %d UIDNEXT)\r\n"
                             % len(fo.messages) + tag + b" OK done\r\n")
                return True
            if b"HIGHESTMODSEQ" in upper:
                nxt = max((m.uid for m in fo.messages), default=0) + 1
                modseq = b"NIL" if "status-modseq" in fo.shapes else b"%d" % fo.modseq
                conn.sendall(b"* STATUS " + _literal(fo.name) + b" (MESSAGES %d UIDNEXT %d "
                             b"UIDVALIDITY %d HIGHESTMODSEQ %s)\r\n"
                             % (len(fo.messages), nxt, fo.uidvalidity, modseq)
                             + tag + b" OK done\r\n")
                return True
            return False
        if selected is None:
            return self._bent_list(conn, tag, cmd, upper)
        if cmd == b"SEARCH" and b"MODSEQ" in upper and "search-modseq" in selected.shapes:
            uids = b" ".join(b"%d" % m.uid for m in selected.messages)
            conn.sendall(b"* SEARCH " + uids + b" (MODSEQ\r\n" + tag + b" OK done\r\n")
            return True
        if (cmd == b"FETCH" and b"RFC822.SIZE" in upper and b"BODY" not in upper
                and "fetch-size" in selected.shapes):
            out = b"".join(b"* %d FETCH (UID %d RFC822.SIZE)\r\n" % (seq, m.uid)
                           for seq, m in enumerate(selected.messages, 1))
            conn.sendall(out + tag + b" OK done\r\n")
            return True
        return self._bent_list(conn, tag, cmd, upper)

    def _bent_list(self, conn: socket.socket, tag: bytes, cmd: bytes, upper: bytes) -> bool:
        if cmd != b"LIST" or b"RETURN" not in upper:
            return False
        if not any("list-extended" in fo.shapes for fo in self.folders):
            return False
        out = b"".join(b'* LIST (\\HasNoChildren) "/" ' + _literal(fo.name)
                       + (b' ("CHILDINFO" (' if "list-extended" in fo.shapes else b"") + b"\r\n"
                       for fo in self.folders)
        conn.sendall(out + tag + b" OK done\r\n")
        return True

    def _read_command(self, conn: socket.socket, f) -> bytes | None:
        """One command line, with synchronizing literals read in."""
        out = b""
        while True:
            line = f.readline()
            if not line:
                return None
            out += line
            m = re.search(rb"\{(\d+)(\+?)\}\r\n$", line)
            if not m:
                return out.rstrip(b"\r\n")
            if not m.group(2):
                conn.sendall(b"+ go\r\n")
            out += f.read(int(m.group(1)))

    def _folder(self, args: bytes) -> HFolder | None:
        name = _name_arg(args)
        return next((fo for fo in self.folders if fo.name == name), None)

    def _fetch(self, conn: socket.socket, fo: HFolder, args: bytes) -> bool:
        uidset, _, items = args.partition(b" ")
        wanted = _uids(uidset, max((m.uid for m in fo.messages), default=0))
        body = b"BODY" in items.upper()
        for seq, msg in enumerate(fo.messages, 1):
            if msg.uid not in wanted:
                continue
            copies = 2 if fo.duplicate_uids and seq <= 2 else 1
            for _ in range(copies):
                if not body:
                    conn.sendall(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (seq, msg.uid, len(msg.raw)))
                    continue
                head = b"* %d FETCH (UID %d FLAGS (\\Seen) INTERNALDATE %s BODY[] " % (
                    seq, msg.uid, DATE.encode())
                if msg.trick == "lie":
                    conn.sendall(head + b"{%d}\r\n" % (len(msg.raw) + 64) + msg.raw + b")\r\n")
                elif msg.trick == "truncate":
                    conn.sendall(head + b"{%d}\r\n" % len(msg.raw) + msg.raw[: len(msg.raw) // 2])
                    return False
                elif msg.trick == "huge":
                    conn.sendall(head + b"{3000000000}\r\n" + msg.raw)
                    return False
                else:
                    conn.sendall(head + _literal(msg.raw) + b")\r\n")
        return True


def _name_arg(args: bytes) -> bytes:
    """The first argument of a command: a literal, a quoted string or an atom."""
    m = re.match(rb'\{(\d+)\+?\}\r\n', args)
    if m:
        return args[m.end(): m.end() + int(m.group(1))]
    if args.startswith(b'"'):
        q = re.match(rb'"((?:[^"\\]|\\.)*)"', args, re.S)
        return re.sub(rb"\\(.)", rb"\1", q.group(1)) if q else b""
    return args.split(b" ")[0]


def _uids(uidset: bytes, top: int) -> set[int]:
    out: set[int] = set()
    for part in uidset.decode().split(","):
        a, _, b = part.partition(":")
        lo = int(a) if a != "*" else top
        hi = (int(b) if b != "*" else top) if b else lo
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out
