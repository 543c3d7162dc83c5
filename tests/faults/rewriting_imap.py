"""A small real IMAP server that changes what it stores on APPEND (a test tool).

No server on this machine rewrites messages (Dovecot keeps the bytes it is given),
so this one stands in for those that do, the way Cyrus IMAP's
``message_copy_strict`` (imap/message.c) treats an appended message:

* ``munge8bit``: every 8-bit byte in the header becomes 'X' (Cyrus's default,
  imapd.conf(5) ``munge8bit: 1``: "The 8-bit characters are changed to 'X'");
* ``reject8bit``: a message with 8-bit bytes in its header is refused with
  ``NO Message contains non-ASCII characters in headers`` (``reject8bit: 1``);
* ``rejectlf``: a bare LF is refused, ``NO Message contains bare newlines``
  (Cyrus's IMAP_MESSAGE_CONTAINSNL);
* ``question``: every 8-bit *character* (a UTF-8 sequence) in the header becomes
  one '?' -- the same rewrite class with a shorter result, as a server that
  re-encodes headers to ASCII does (we know of no specific server; it exercises
  the size tolerance of the matching);
* ``crlf``: bare LFs are stored as CRLF (what RFC 3501 servers return anyway).

It speaks enough IMAP4rev1 for mailmigrate as a destination and a source:
CAPABILITY, LOGIN, NAMESPACE, LIST, CREATE, SUBSCRIBE, STATUS, SELECT/EXAMINE,
APPEND and MULTIAPPEND (RFC 3502: all or nothing), UIDPLUS (APPENDUID, UID
EXPUNGE; RFC 4315) unless ``uidplus=False``, UID SEARCH (ALL, UID n:m), UID FETCH
(UID FLAGS INTERNALDATE RFC822.SIZE BODY[] BODY[HEADER.FIELDS (..)]), UID STORE,
EXPUNGE, NOOP, LOGOUT. Password "wrong" gets ``NO [AUTHENTICATIONFAILED]``.
One thread per connection over a real loopback socket; state is shared.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hostile_imap import HostileImap, _uids

MODES = frozenset({"munge8bit", "reject8bit", "rejectlf", "question", "crlf"})
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_UTF8_CHAR = re.compile(rb"[\xc0-\xff][\x80-\xbf]*|[\x80-\xbf]+")


@dataclass
class RMessage:
    raw: bytes
    flags: set[str]
    date: str


@dataclass
class RFolder:
    name: str
    uidvalidity: int
    next_uid: int = 1
    messages: dict[int, RMessage] = field(default_factory=dict)

    def uids(self) -> list[int]:
        return sorted(self.messages)


def _q(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class Tokens:
    """The arguments of one command: atoms (bytes), strings, literals and (lists)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def _ws(self) -> None:
        while self.i < len(self.data) and self.data[self.i:self.i + 1] == b" ":
            self.i += 1

    def more(self) -> bool:
        self._ws()
        return self.i < len(self.data) and self.data[self.i:self.i + 2] != b"\r\n"

    def next(self) -> Any:
        self._ws()
        d, c = self.data, self.data[self.i:self.i + 1]
        if c == b"(":
            self.i += 1
            out: list[Any] = []
            while True:
                self._ws()
                if d[self.i:self.i + 1] == b")":
                    self.i += 1
                    return out
                out.append(self.next())
        if c == b'"':
            m = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S).match(d, self.i)
            assert m, d[self.i:]
            self.i = m.end()
            return re.sub(rb"\\(.)", rb"\1", m.group(1))
        m = re.compile(rb"\{(\d+)\+?\}\r\n").match(d, self.i)
        if m:
            n = int(m.group(1))
            self.i = m.end() + n
            return ("literal", d[m.end():m.end() + n])
        start, depth = self.i, 0
        while self.i < len(d):
            ch = d[self.i:self.i + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b")", b"\r"):
                break
            self.i += 1
        return d[start:self.i]


def header_end(raw: bytes) -> int:
    at = raw.find(b"\r\n\r\n")
    if at >= 0:
        return at + 4
    at = raw.find(b"\n\n")
    return len(raw) if at < 0 else at + 2


def header_fields(raw: bytes, names: list[bytes]) -> bytes:
    """The header lines named (with their continuations), then the blank line (RFC 3501)."""
    wanted = {n.upper() for n in names}
    out, keep = [], False
    for line in re.split(rb"(?<=\n)", raw[:header_end(raw)]):
        if line in (b"\r\n", b"\n", b""):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().upper() in wanted
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


class RewritingImap(HostileImap):
    """The socket, accept loop and context manager are HostileImap's; the server is new."""

    def __init__(self, modes: set[str] | frozenset[str] = frozenset(), *, uidplus: bool = True,
                 multiappend: bool = True) -> None:
        unknown = set(modes) - MODES
        if unknown:
            raise ValueError(f"unknown modes {unknown}")
        super().__init__([])
        self.modes = set(modes)
        self.uidplus = uidplus
        self.multiappend = multiappend
        self.lock = threading.RLock()
        self.folders: dict[str, RFolder] = {"INBOX": RFolder("INBOX", 5001)}  # type: ignore[assignment]
        self.refused = 0
        self.appended = 0

    # -- what the store does to a message -------------------------------------------
    def stored_form(self, raw: bytes) -> bytes | str:
        """The bytes this server keeps for ``raw``, or the text of its NO."""
        if "rejectlf" in self.modes and _BARE_LF.search(raw):
            return "Message contains bare newlines"
        if "crlf" in self.modes:
            raw = _BARE_LF.sub(b"\r\n", raw)
        end = header_end(raw)
        head, body = raw[:end], raw[end:]
        if re.search(rb"[\x80-\xff]", head):
            if "reject8bit" in self.modes:
                return "Message contains non-ASCII characters in headers"
            if "munge8bit" in self.modes:
                head = re.sub(rb"[\x80-\xff]", b"X", head)
            elif "question" in self.modes:
                head = _UTF8_CHAR.sub(b"?", head)
        return head + body

    def contents(self, folder: str) -> list[bytes]:
        with self.lock:
            box = self.folders.get(folder)
            return [box.messages[u].raw for u in box.uids()] if box else []

    def inject(self, folder: str, raw: bytes) -> int:
        """A message arrives by another way (a late APPEND); returns its UID."""
        with self.lock:
            box = self.folders[folder]
            uid = box.next_uid
            box.next_uid += 1
            box.messages[uid] = RMessage(raw, set(), '"01-Jan-2024 10:00:00 +0000"')
            return uid

    # -- wire -------------------------------------------------------------------------
    def _caps(self) -> bytes:
        caps = b"IMAP4rev1 AUTH=PLAIN NAMESPACE"
        if self.uidplus:
            caps += b" UIDPLUS"
        if self.multiappend:
            caps += b" MULTIAPPEND"
        return caps

    def _read_command(self, conn: socket.socket, f: Any) -> bytes | None:
        out = b""
        while True:
            line = f.readline()
            if not line:
                return None
            out += line
            m = _LITERAL.search(line)
            if not m:
                return out
            if not m.group(2):
                conn.sendall(b"+ go ahead\r\n")
            out += f.read(int(m.group(1)))

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        session: dict[str, Any] = {"selected": None}
        try:
            conn.sendall(b"* OK [CAPABILITY " + self._caps() + b"] rewriting server ready\r\n")
            while True:
                line = self._read_command(conn, f)
                if line is None:
                    return
                tag, _, rest = line.removesuffix(b"\r\n").partition(b" ")
                cmd, _, args = rest.partition(b" ")
                uid = cmd.upper() == b"UID"
                if uid:
                    cmd, _, args = args.partition(b" ")
                with self.lock:
                    reply = self._command(cmd.upper(), args, uid, session)
                if reply is None:  # LOGOUT
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                conn.sendall(reply[0] + tag + b" " + reply[1] + b"\r\n")
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _command(self, cmd: bytes, args: bytes, uid: bool,
                 session: dict[str, Any]) -> tuple[bytes, bytes] | None:
        t = Tokens(args)
        box: RFolder | None = session["selected"]
        if cmd == b"CAPABILITY":
            return b"* CAPABILITY " + self._caps() + b"\r\n", b"OK done"
        if cmd == b"LOGIN":
            t.next()
            password = t.next()
            if password == b"wrong":
                return b"", b"NO [AUTHENTICATIONFAILED] Authentication failed."
            return b"", b"OK [CAPABILITY " + self._caps() + b"] logged in"
        if cmd in (b"NOOP", b"SUBSCRIBE", b"CHECK"):
            return b"", b"OK done"
        if cmd == b"LOGOUT":
            return None
        if cmd == b"NAMESPACE":
            return b'* NAMESPACE (("" "/")) NIL NIL\r\n', b"OK done"
        if cmd == b"LIST":
            t.next()
            pattern = t.next()
            if pattern == b"":
                return b'* LIST (\\Noselect) "/" ""\r\n', b"OK done"
            rows = b"".join(b'* LIST (\\HasNoChildren) "/" ' + _q(name) + b"\r\n"
                            for name in sorted(self.folders))
            return rows, b"OK done"
        if cmd == b"CREATE":
            name = t.next().decode()
            if name in self.folders:
                return b"", b"NO [ALREADYEXISTS] exists"
            self.folders[name] = RFolder(name, 5001 + len(self.folders))
            return b"", b"OK created"
        if cmd == b"STATUS":
            fo = self.folders.get(t.next().decode())
            if fo is None:
                return b"", b"NO [NONEXISTENT] no such folder"
            items = {bytes(x).upper() for x in t.next()}
            values = {b"MESSAGES": len(fo.messages), b"UIDNEXT": fo.next_uid,
                      b"UIDVALIDITY": fo.uidvalidity, b"UNSEEN": 0, b"RECENT": 0}
            body = b" ".join(b"%s %d" % (k, v) for k, v in values.items() if k in items)
            return b"* STATUS " + _q(fo.name) + b" (" + body + b")\r\n", b"OK done"
        if cmd in (b"SELECT", b"EXAMINE"):
            fo = self.folders.get(t.next().decode())
            if fo is None:
                return b"", b"NO [NONEXISTENT] no such folder"
            session["selected"] = fo
            head = (b"* %d EXISTS\r\n* 0 RECENT\r\n"
                    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] ok\r\n"
                    b"* OK [UIDVALIDITY %d] ok\r\n* OK [UIDNEXT %d] ok\r\n"
                    % (len(fo.messages), fo.uidvalidity, fo.next_uid))
            return head, b"OK [READ-ONLY] done" if cmd == b"EXAMINE" else b"OK [READ-WRITE] done"
        if cmd == b"APPEND":
            return self._append(t)
        if box is None:
            return b"", b"BAD no folder selected"
        if cmd == b"SEARCH":
            return self._search(box, t), b"OK done"
        if cmd == b"FETCH" and uid:
            return self._fetch(box, t), b"OK done"
        if cmd == b"STORE" and uid:
            return self._store(box, t), b"OK done"
        if cmd == b"EXPUNGE":
            if uid and not self.uidplus:
                return b"", b"BAD no UIDPLUS here"
            only = _uids(t.next(), box.next_uid) if uid else None
            return self._expunge(box, only), b"OK expunged"
        return b"", b"BAD unsupported"

    def _append(self, t: Tokens) -> tuple[bytes, bytes]:
        name = t.next().decode()
        fo = self.folders.get(name)
        if fo is None:
            return b"", b"NO [TRYCREATE] no such folder"
        staged: list[RMessage] = []
        while t.more():
            flags: set[str] = set()
            date = '"' + datetime.now(UTC).strftime("%d-%b-%Y %H:%M:%S +0000") + '"'
            item = t.next()
            if isinstance(item, list):
                flags = {bytes(x).decode() for x in item}
                item = t.next()
            if isinstance(item, bytes) and not isinstance(item, tuple):
                date = '"' + item.decode() + '"'
                item = t.next()
            assert isinstance(item, tuple) and item[0] == "literal", item
            kept = self.stored_form(item[1])
            if isinstance(kept, str):
                self.refused += 1
                return b"", b"NO " + kept.encode()  # all or nothing (RFC 3502)
            staged.append(RMessage(kept, flags, date))
            if not self.multiappend:
                break
        first = fo.next_uid
        for msg in staged:
            fo.messages[fo.next_uid] = msg
            fo.next_uid += 1
        self.appended += len(staged)
        if not self.uidplus:
            return b"", b"OK appended"
        last = fo.next_uid - 1
        uids = b"%d" % first if first == last else b"%d:%d" % (first, last)
        return b"", b"OK [APPENDUID %d %s] appended" % (fo.uidvalidity, uids)

    def _search(self, box: RFolder, t: Tokens) -> bytes:
        found = box.uids()
        while t.more():
            key = bytes(t.next()).upper()
            if key == b"UID":
                wanted = _uids(t.next(), max(found, default=0))
                found = [u for u in found if u in wanted]
            elif key == b"SINCE":
                t.next()  # dates are not kept apart here: everything is "since"
        return b"* SEARCH" + b"".join(b" %d" % u for u in found) + b"\r\n"

    def _fetch(self, box: RFolder, t: Tokens) -> bytes:
        uids = box.uids()
        wanted = _uids(t.next(), max(uids, default=0))
        items = t.next()
        items = items if isinstance(items, list) else [items]
        out = []
        for seq, u in enumerate(uids, 1):
            if u not in wanted:
                continue
            msg = box.messages[u]
            parts = [b"UID %d" % u]
            for it in items:
                name = bytes(it).upper()
                if name == b"FLAGS":
                    parts.append(b"FLAGS (" + " ".join(sorted(msg.flags)).encode() + b")")
                elif name == b"INTERNALDATE":
                    parts.append(b"INTERNALDATE " + msg.date.encode())
                elif name == b"RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % len(msg.raw))
                elif name in (b"BODY[]", b"BODY.PEEK[]", b"RFC822"):
                    parts.append(b"BODY[] " + _literal(msg.raw))
                elif name.startswith((b"BODY.PEEK[HEADER.FIELDS", b"BODY[HEADER.FIELDS")):
                    inner = name[name.index(b"(") + 1:name.index(b")")]
                    section = name[name.index(b"[") + 1:name.index(b"]")]
                    parts.append(b"BODY[" + section + b"] "
                                 + _literal(header_fields(msg.raw, inner.split())))
            out.append(b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n")
        return b"".join(out)

    def _store(self, box: RFolder, t: Tokens) -> bytes:
        uids = box.uids()
        wanted = _uids(t.next(), max(uids, default=0))
        how = bytes(t.next()).upper()
        flags = {bytes(x).decode() for x in t.next()}
        out = []
        for seq, u in enumerate(uids, 1):
            if u not in wanted:
                continue
            msg = box.messages[u]
            if how.startswith(b"+"):
                msg.flags |= flags
            elif how.startswith(b"-"):
                msg.flags -= flags
            else:
                msg.flags = set(flags)
            if not how.endswith(b".SILENT"):
                out.append(b"* %d FETCH (UID %d FLAGS (%s))\r\n"
                           % (seq, u, " ".join(sorted(msg.flags)).encode()))
        return b"".join(out)

    def _expunge(self, box: RFolder, only: set[int] | None) -> bytes:
        out = []
        for seq, u in reversed(list(enumerate(box.uids(), 1))):
            msg = box.messages[u]
            if "\\Deleted" in msg.flags and (only is None or u in only):
                del box.messages[u]
                out.append(b"* %d EXPUNGE\r\n" % seq)
        return b"".join(out)
