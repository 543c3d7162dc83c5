"""A real IMAP server over a loopback socket that behaves like Gmail (a test tool).

No server on this machine speaks Gmail's IMAP extensions (X-GM-EXT-1): Dovecot and
Cyrus keep one copy of a message per folder, Gmail keeps ONE message and shows it in
a folder per label. So this server stands in for imap.gmail.com, for what mailmigrate
relies on. Each behaviour below names the page of Google's documentation it follows:

* ``[EXT]`` Google's IMAP extensions,
  https://developers.google.com/gmail/imap/imap-extensions (sections "Checking for
  the presence of extensions", "Special-Use Extension of the LIST command",
  "Extension of the SEARCH command: X-GM-RAW", "Access to the Gmail unique message
  ID: X-GM-MSGID", "Access to the Gmail thread ID: X-GM-THRID", "Access to Gmail
  labels: X-GM-LABELS");
* ``[FOLDERS]`` "Gmail folders in your mail client" (the [Gmail] subfolders, All Mail),
  https://support.google.com/mail/answer/82367;
* ``[SYNC]`` "How Gmail actions sync with IMAP" (moving to a folder applies a label,
  creating a folder creates a label, deleting removes a label),
  https://support.google.com/mail/answer/77657;
* RFCs for the plain IMAP around it: RFC 3501, UIDPLUS (RFC 4315), CONDSTORE
  (RFC 7162), SPECIAL-USE (RFC 6154), LITERAL+ (RFC 7888).

The model: per account one store of messages, each with a 64-bit X-GM-MSGID, a
X-GM-THRID, flags, INTERNALDATE and a set of labels; a message is in the store
proper ("[Gmail]/All Mail"), in Spam or in Trash. Folders are views: INBOX is the
\\Inbox label, "[Gmail]/Sent Mail" \\Sent, "[Gmail]/Drafts" \\Draft,
"[Gmail]/Important" \\Important, "[Gmail]/Starred" \\Starred, a user label its own
folder; each folder numbers the messages it shows with its own UIDs, given when the
message enters it. ``lang="de"`` gives the German names under ``[Google Mail]``
(accounts opened in Germany before 2012).

What it counts, for the tests: ``body_fetches`` (per account, {msgid: n}) is every
BODY[] / BODY.PEEK[] / RFC822 the server sent, so "one download per message" is
counted at the server; ``appends``, ``label_stores`` and ``commands`` likewise.

One thread per connection; all state under one lock. Commands outside what is
listed answer BAD, so a client that needs more fails loudly here.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imapclient import imap_utf7

# [EXT] "Checking for the presence of extensions": Gmail's CAPABILITY, as the example
# handshake shows it (IMAP4rev1 UNSELECT LITERAL+ IDLE NAMESPACE QUOTA ID XLIST CHILDREN
# X-GM-EXT-1), plus what imap.gmail.com announces today after login: UIDPLUS,
# CONDSTORE, SPECIAL-USE, MOVE, ENABLE, APPENDLIMIT. No MULTIAPPEND (Gmail has none).
CAPS = (b"IMAP4rev1 UNSELECT LITERAL+ IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
        b"UIDPLUS ENABLE MOVE CONDSTORE SPECIAL-USE APPENDLIMIT=35651584 AUTH=PLAIN")

# [EXT] "Special-Use Extension of the LIST command": the special folders and their
# attributes (\All, \Drafts, \Important, \Sent, \Junk, \Flagged, \Trash), in every LIST
# response. [FOLDERS]: they live under "[Gmail]" ("[Google Mail]" for some accounts).
SPECIAL = {
    "en": {"\\All": "All Mail", "\\Drafts": "Drafts", "\\Important": "Important",
           "\\Sent": "Sent Mail", "\\Junk": "Spam", "\\Flagged": "Starred", "\\Trash": "Trash"},
    "de": {"\\All": "Alle Nachrichten", "\\Drafts": "Entwürfe", "\\Important": "Wichtig",
           "\\Sent": "Gesendet", "\\Junk": "Spam", "\\Flagged": "Markiert",
           "\\Trash": "Papierkorb"},
}
# [EXT] "Access to Gmail labels: X-GM-LABELS": the system labels FETCH shows (its example:
# \Inbox, \Sent, \Drafts; Gmail today says \Draft, which is what we send, and takes
# either), and the label each special folder stands for.
LABEL_OF_USE = {"\\Drafts": "\\Draft", "\\Important": "\\Important", "\\Sent": "\\Sent",
                "\\Flagged": "\\Starred"}
SYSTEM_LABELS = {"\\inbox": "\\Inbox", "\\sent": "\\Sent", "\\draft": "\\Draft",
                 "\\drafts": "\\Draft", "\\important": "\\Important", "\\starred": "\\Starred"}
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def imap_date(when: datetime) -> str:
    return f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.strftime('%Y %H:%M:%S %z')}"


@dataclass
class GMessage:
    msgid: int
    thrid: int
    raw: bytes
    date: str
    flags: set[str] = field(default_factory=set)
    labels: list[str] = field(default_factory=list)  # in the order they were given
    where: str = "all"  # "all" (the store proper), "spam" or "trash"
    modseq: int = 1


@dataclass
class Box:
    """One folder as a client sees it: its own UIDs for the messages it shows."""

    name: str
    uidvalidity: int
    next_uid: int = 1
    uid_of: dict[int, int] = field(default_factory=dict)  # msgid -> uid
    gone_modseq: int = 0  # a message left the folder at this MODSEQ (RFC 7162: it moves)

    def uids(self) -> dict[int, int]:
        return {uid: msgid for msgid, uid in self.uid_of.items()}


class Account:
    """One mailbox: the message store, the labels, and what the tests count."""

    def __init__(self, name: str, password: str, lang: str, prefix: str) -> None:
        self.name, self.password = name, password
        self.lang, self.prefix = lang, prefix
        self.messages: dict[int, GMessage] = {}
        self.user_labels: list[str] = []
        self.boxes: dict[str, Box] = {}
        self.modseq = 1
        self._ids = itertools.count(1_600_000_000_000_000_001, 7919)
        self.body_fetches: Counter[int] = Counter()
        self.appends = 0
        self.label_stores = 0
        self.commands: Counter[str] = Counter()  # e.g. "STATUS", "UID FETCH", after login
        self.raw_searches: list[str] = []  # the X-GM-RAW queries asked
        self.uidvalidity = itertools.count(600001)

    # -- folder names ---------------------------------------------------------------
    def special_name(self, use: str) -> str:
        return f"{self.prefix}/{SPECIAL[self.lang][use]}"

    def folder_names(self) -> list[tuple[str, str | None]]:
        """(name, special-use) of every selectable folder, INBOX first."""
        out: list[tuple[str, str | None]] = [("INBOX", None)]
        out += [(self.special_name(use), use) for use in SPECIAL[self.lang]]
        out += [(label, None) for label in self.user_labels]
        return out

    def use_of(self, name: str) -> str | bool | None:
        """The special use of folder ``name``: a use, None for INBOX or a label, False
        for a folder that does not exist."""
        for n, use in self.folder_names():
            if n == name or (n == "INBOX" and name.upper() == "INBOX"):
                return use
        return False

    def label_of(self, name: str) -> str | None:
        """The label folder ``name`` stands for (None for All Mail, Spam, Trash)."""
        use = self.use_of(name)
        if use is False:
            return None
        if name.upper() == "INBOX":
            return "\\Inbox"
        if use is None:
            return name  # [SYNC] a user folder is a label of that name
        return LABEL_OF_USE.get(str(use))

    def shows(self, name: str, msg: GMessage) -> bool:
        """Whether folder ``name`` shows ``msg`` (the views of [FOLDERS])."""
        use = self.use_of(name)
        if use == "\\All":
            # [FOLDERS] All Mail holds every message, but not Spam and Trash.
            return msg.where == "all"
        if use == "\\Junk":
            return msg.where == "spam"
        if use == "\\Trash":
            return msg.where == "trash"
        label = self.label_of(name)
        return msg.where == "all" and label is not None and label in msg.labels

    def box(self, name: str) -> Box:
        key = "INBOX" if name.upper() == "INBOX" else name
        found = self.boxes.get(key)
        if found is None:
            found = self.boxes[key] = Box(key, next(self.uidvalidity))
        self.sync_box(found)
        return found

    def sync_box(self, box: Box) -> None:
        """Give UIDs to messages that entered the folder, drop those that left it."""
        for msgid, msg in sorted(self.messages.items()):
            inside = self.shows(box.name, msg)
            if inside and msgid not in box.uid_of:
                box.uid_of[msgid] = box.next_uid
                box.next_uid += 1
            elif not inside and msgid in box.uid_of:
                del box.uid_of[msgid]
                box.gone_modseq = self.modseq
        for msgid in [m for m in box.uid_of if m not in self.messages]:
            del box.uid_of[msgid]
            box.gone_modseq = self.modseq

    def sync_all(self) -> None:
        for box in self.boxes.values():
            self.sync_box(box)

    def touch(self, msg: GMessage) -> None:
        """[EXT]/RFC 7162: a change of flags or labels gives the message a new MODSEQ."""
        self.modseq += 1
        msg.modseq = self.modseq

    # -- messages ---------------------------------------------------------------------
    def add(self, raw: bytes, *, labels: list[str] | tuple[str, ...] = (), flags: set[str] | None = None,
            date: str | None = None, where: str = "all", thread_of: int | None = None) -> GMessage:
        """A new message (what delivery or APPEND does); returns it."""
        msgid = next(self._ids)
        self.modseq += 1
        msg = GMessage(msgid=msgid, thrid=thread_of or msgid, raw=raw,
                       date=date or imap_date(datetime(2024, 1, 1, 10, 0, tzinfo=UTC)),
                       flags=set(flags or ()), where=where, modseq=self.modseq)
        for label in labels:
            self.add_label(msg, label, touch=False)
        self.star_from_flags(msg)
        self.messages[msgid] = msg
        self.sync_all()
        return msg

    def canonical(self, label: str) -> str:
        return SYSTEM_LABELS.get(label.lower(), label) if label.startswith("\\") else label

    def add_label(self, msg: GMessage, label: str, touch: bool = True) -> None:
        label = self.canonical(label)
        if not label.startswith("\\") and label not in self.user_labels:
            # [SYNC] "Create a folder: create a label"; STORE of a new label makes it too.
            self.create(label)
        if label not in msg.labels:
            msg.labels.append(label)
            if label == "\\Starred":
                msg.flags.add("\\Flagged")
            if touch:
                self.touch(msg)

    def remove_label(self, msg: GMessage, label: str) -> None:
        label = self.canonical(label)
        if label in msg.labels:
            msg.labels.remove(label)
            if label == "\\Starred":
                msg.flags.discard("\\Flagged")
            self.touch(msg)

    @staticmethod
    def star_from_flags(msg: GMessage) -> None:
        # [SYNC] "Flag a message: apply a star": \Flagged and the \Starred label are one.
        if "\\Flagged" in msg.flags and "\\Starred" not in msg.labels:
            msg.labels.append("\\Starred")
        if "\\Flagged" not in msg.flags and "\\Starred" in msg.labels:
            msg.labels.remove("\\Starred")

    def create(self, name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            level = "/".join(parts[:i])
            if self.use_of(level) is False:
                self.user_labels.append(level)

    # -- what tests look at -------------------------------------------------------------
    def by_msgid(self, raw: bytes) -> list[GMessage]:
        return [m for m in self.messages.values() if m.raw == raw]

    def state(self) -> dict[bytes, tuple[tuple[str, ...], tuple[str, ...], str, str]]:
        """{raw: (sorted labels, sorted flags, where, INTERNALDATE)}; asserts no duplicate bytes."""
        out: dict[bytes, tuple[tuple[str, ...], tuple[str, ...], str, str]] = {}
        for m in self.messages.values():
            assert m.raw not in out, f"two messages with the same bytes: {m.raw[:80]!r}"
            out[m.raw] = (tuple(sorted(m.labels)), tuple(sorted(m.flags)), m.where, m.date)
        return out


@dataclass
class User:
    name: str
    password: str


def _q(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _mailbox(name: str) -> bytes:
    return _q(imap_utf7.encode(name).decode("ascii"))


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _astring(text: str) -> bytes:
    """[EXT] X-GM-LABELS: a label is an astring, modified UTF-7 like a folder name; system
    labels are atoms (\\Inbox), and so is a simple user label: the page's example answer
    is ``X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante")``."""
    if text.startswith("\\") and re.fullmatch(r"\\[A-Za-z]+", text):
        return text.encode()
    encoded = imap_utf7.encode(text).decode("ascii")
    if re.fullmatch(r"[^\x00-\x20\x7f(){%*\"\\\]]+", encoded):  # RFC 3501 ATOM-CHAR
        return encoded.encode("ascii")
    return _mailbox(text)


class Tokens:
    """The arguments of one command: atoms, quoted strings, literals and (lists)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def _ws(self) -> None:
        while self.data[self.i:self.i + 1] == b" ":
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
                if d[self.i:self.i + 1] in (b")", b""):
                    self.i += 1
                    return out
                out.append(self.next())
        if c == b'"':
            m = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S).match(d, self.i)
            if m is None:
                raise ValueError("bad quoted string")
            self.i = m.end()
            return ("string", re.sub(rb"\\(.)", rb"\1", m.group(1)))
        m = re.compile(rb"\{(\d+)\+?\}\r\n").match(d, self.i)
        if m:
            n = int(m.group(1))
            self.i = m.end() + n
            return ("string", d[m.end():m.end() + n])
        start, depth = self.i, 0
        while self.i < len(d):
            ch = d[self.i:self.i + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b")", b"\r", b"("):
                if ch == b"(" and d[start:self.i].upper().endswith(b"HEADER.FIELDS "):
                    pass
                else:
                    break
            self.i += 1
        return d[start:self.i]


def text_of(token: Any) -> str:
    if isinstance(token, tuple):
        return token[1].decode("utf-8", "surrogateescape")
    return bytes(token).decode("utf-8", "surrogateescape")


def mailbox_of(token: Any) -> str:
    name = text_of(token)
    with contextlib.suppress(Exception):
        name = imap_utf7.decode(name.encode("ascii"))
    return name


def _uid_set(spec: bytes, top: int) -> set[int]:
    out: set[int] = set()
    for part in spec.decode().split(","):
        a, _, b = part.partition(":")
        lo = top if a == "*" else int(a)
        hi = (top if b == "*" else int(b)) if b else lo
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out


def _header_fields(raw: bytes, names: list[bytes]) -> bytes:
    wanted = {n.upper() for n in names}
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end + 2]
    out, keep = [], False
    for line in re.split(rb"(?<=\n)", head):
        if line in (b"", b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().upper() in wanted
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


class FakeGmail:
    """``with FakeGmail() as gmail: user = gmail.add_user()``; ``gmail.account(user)``."""

    host = "127.0.0.1"
    kind = "fake-gmail"

    def __init__(self, *, lang: str = "en", prefix: str = "[Gmail]") -> None:
        self.lang, self.prefix = lang, prefix
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.connections = 0
        self._users = itertools.count(1)
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(32)
        self._sock.settimeout(0.1)
        self.imap_port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> FakeGmail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def add_user(self) -> User:
        n = next(self._users)
        user = User(f"user{n}@gmail.test", f"secret-{n}")
        with self.lock:
            self.accounts[user.name] = Account(user.name, user.password, self.lang, self.prefix)
        return user

    def account(self, user: User) -> Account:
        return self.accounts[user.name]

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

    # -- one connection ---------------------------------------------------------------
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
            data = f.read(int(m.group(1)))
            if len(data) < int(m.group(1)):
                return None  # the client went away inside a literal: nothing happened
            out += data

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        f = conn.makefile("rb")
        session: dict[str, Any] = {"account": None, "selected": None, "readonly": True}
        try:
            conn.sendall(b"* OK Gimap ready for requests from 127.0.0.1 fake\r\n")
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
                    try:
                        reply = self._command(cmd.upper(), args, uid, session)
                    except (ValueError, IndexError, KeyError) as exc:
                        reply = (b"", b"BAD " + str(exc).encode()[:80])
                if reply is None:
                    conn.sendall(b"* BYE LOGOUT Requested\r\n" + tag + b" OK 73 good day\r\n")
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
        acct: Account | None = session["account"]
        if cmd == b"CAPABILITY":
            return b"* CAPABILITY " + CAPS + b"\r\n", b"OK Thats all she wrote!"
        if cmd == b"LOGOUT":
            return None
        if cmd in (b"NOOP", b"CHECK", b"IDLE"):
            return b"", b"OK Success"
        if cmd == b"ID":
            return b'* ID ("name" "GImap" "vendor" "Google, Inc.")\r\n', b"OK Success"
        if cmd == b"LOGIN":
            name, password = text_of(t.next()), text_of(t.next())
            found = self.accounts.get(name)
            if found is None or found.password != password:
                return b"", b"NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
            session["account"] = found
            return b"", b"OK [CAPABILITY " + CAPS + b"] " + name.encode() + b" authenticated"
        if acct is None:
            return b"", b"BAD not logged in"
        acct.commands[("UID " if uid else "") + cmd.decode()] += 1
        if cmd == b"ENABLE":
            return b"* ENABLED\r\n", b"OK Success"
        if cmd == b"NAMESPACE":
            return b'* NAMESPACE (("" "/")) NIL NIL\r\n', b"OK Success"
        if cmd in (b"LIST", b"XLIST", b"LSUB"):
            return self._list(acct, t), b"OK Success"
        if cmd in (b"SUBSCRIBE", b"UNSUBSCRIBE"):
            return b"", b"OK Success"
        if cmd == b"CREATE":
            name = mailbox_of(t.next()).rstrip("/")
            if acct.use_of(name) is not False:
                return b"", b"NO [ALREADYEXISTS] Duplicate folder name (Failure)"
            if name.startswith(acct.prefix):
                return b"", b"NO [CANNOT] Folder name is not allowed (Failure)"
            acct.create(name)  # [SYNC] "Create a folder: create a label"
            return b"", b"OK Success"
        if cmd == b"STATUS":
            return self._status(acct, t)
        if cmd in (b"SELECT", b"EXAMINE"):
            return self._select(acct, t, cmd == b"EXAMINE", session)
        if cmd == b"APPEND":
            return self._append(acct, t)
        box: Box | None = session["selected"]
        if box is None:
            return b"", b"BAD no folder selected"
        acct.sync_box(box)
        if cmd in (b"CLOSE", b"UNSELECT"):
            session["selected"] = None
            return b"", b"OK Returned to authenticated state. (Success)"
        if cmd == b"SEARCH":
            return self._search(acct, box, t, uid), b"OK SEARCH completed (Success)"
        if cmd == b"FETCH":
            return self._fetch(acct, box, t, uid), b"OK Success"
        if cmd == b"STORE":
            if session["readonly"]:
                return b"", b"NO read-only folder"
            return self._store(acct, box, t, uid), b"OK Success"
        if cmd == b"EXPUNGE":
            only = _uid_set(bytes(t.next()), box.next_uid) if uid else None
            return self._expunge(acct, box, only), b"OK Success"
        return b"", b"BAD Unknown command"

    # -- folders -------------------------------------------------------------------------
    def _list(self, acct: Account, t: Tokens) -> bytes:
        t.next()
        pattern = mailbox_of(t.next()) if t.more() else "*"
        if pattern == "":
            return b'* LIST (\\Noselect) "/" ""\r\n'
        rows = [b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n',
                b'* LIST (\\HasChildren \\Noselect) "/" ' + _mailbox(acct.prefix) + b"\r\n"]
        for name, use in acct.folder_names()[1:]:
            # [EXT] "Special-Use Extension of the LIST command": every LIST answer has them.
            attrs = b"\\HasNoChildren" + (b" " + use.encode() if use else b"")
            rows.append(b'* LIST (' + attrs + b') "/" ' + _mailbox(name) + b"\r\n")
        return b"".join(rows)

    def _status(self, acct: Account, t: Tokens) -> tuple[bytes, bytes]:
        name = mailbox_of(t.next())
        if acct.use_of(name) is False:
            return b"", b"NO [NONEXISTENT] Unknown Mailbox (Failure)"
        items = {bytes(x).upper() for x in t.next()}
        box = acct.box(name)
        values = {b"MESSAGES": len(box.uid_of), b"UIDNEXT": box.next_uid,
                  b"UIDVALIDITY": box.uidvalidity, b"UNSEEN": 0, b"RECENT": 0,
                  b"HIGHESTMODSEQ": self._highest(acct, box)}
        body = b" ".join(b"%s %d" % (k, v) for k, v in values.items() if k in items)
        return b"* STATUS " + _mailbox(name) + b" (" + body + b")\r\n", b"OK Success"

    @staticmethod
    def _highest(acct: Account, box: Box) -> int:
        """RFC 7162 HIGHESTMODSEQ: the newest change of anything the folder shows. A label
        change moves the message's MODSEQ ([EXT] labels are metadata of the message)."""
        shown = [acct.messages[m].modseq for m in box.uid_of]
        return max([*shown, box.gone_modseq, 1])

    def _select(self, acct: Account, t: Tokens, readonly: bool,
                session: dict[str, Any]) -> tuple[bytes, bytes]:
        name = mailbox_of(t.next())
        if acct.use_of(name) is False:
            return b"", b"NO [NONEXISTENT] Unknown Mailbox (Failure)"
        box = acct.box(name)
        session["selected"], session["readonly"] = box, readonly
        head = (b"* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $Forwarded $Junk)\r\n"
                b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $Forwarded"
                b" \\*)] Flags permitted.\r\n"
                b"* OK [UIDVALIDITY %d] UIDs valid.\r\n* %d EXISTS\r\n* 0 RECENT\r\n"
                b"* OK [UIDNEXT %d] Predicted next UID.\r\n* OK [HIGHESTMODSEQ %d]\r\n"
                % (box.uidvalidity, len(box.uid_of), box.next_uid, self._highest(acct, box)))
        return head, (b"OK [READ-ONLY] " if readonly else b"OK [READ-WRITE] ") + name.encode() \
            + b" selected. (Success)"

    # -- APPEND ----------------------------------------------------------------------------
    def _append(self, acct: Account, t: Tokens) -> tuple[bytes, bytes]:
        name = mailbox_of(t.next())
        use = acct.use_of(name)
        if use is False:
            return b"", b"NO [TRYCREATE] Folder doesn't exist. (Failure)"
        flags: set[str] = set()
        date = None
        item = t.next()
        if isinstance(item, list):
            flags = {text_of(x) for x in item}
            item = t.next()
        if not isinstance(item, tuple) or t.more():
            date = text_of(item)
            item = t.next()
        raw = item[1]
        if not raw:
            return b"", b"NO Invalid message (Failure)"
        where = {"\\Junk": "spam", "\\Trash": "trash"}.get(str(use), "all")
        # [SYNC] a message put into a folder gets that folder's label; into All Mail, none.
        label = acct.label_of(name)
        msg = acct.add(raw, labels=[label] if label else [], flags=flags - {"\\Recent"},
                       date=date, where=where)
        acct.appends += 1
        box = acct.box(name)
        # RFC 4315 APPENDUID: the UID the message has in the folder appended to.
        return b"", b"OK [APPENDUID %d %d] (Success)" % (box.uidvalidity, box.uid_of[msg.msgid])

    # -- SEARCH ------------------------------------------------------------------------------
    def _search(self, acct: Account, box: Box, t: Tokens, uid: bool) -> bytes:
        by_uid = box.uids()
        found = sorted(by_uid)
        while t.more():
            key = bytes(t.next()).upper()
            if key == b"UID":
                wanted = _uid_set(bytes(t.next()), max(found, default=0) or box.next_uid - 1)
                found = [u for u in found if u in wanted]
            elif key == b"ALL":
                pass
            elif key == b"MODSEQ":
                since = int(bytes(t.next()))
                found = [u for u in found if acct.messages[by_uid[u]].modseq >= since]
            elif key == b"X-GM-MSGID":
                # [EXT] X-GM-MSGID "may also be used in the SEARCH command to find the UID
                # of a message given Gmail's message ID".
                wanted_id = int(text_of(t.next()))
                found = [u for u in found if by_uid[u] == wanted_id]
            elif key == b"X-GM-THRID":
                # [EXT] X-GM-THRID: likewise, every message of one thread.
                wanted_id = int(text_of(t.next()))
                found = [u for u in found if acct.messages[by_uid[u]].thrid == wanted_id]
            elif key == b"X-GM-LABELS":
                # [EXT] X-GM-LABELS "may also be used in the SEARCH or UID SEARCH commands
                # to find the UIDs of all messages with a given label".
                label = acct.canonical(mailbox_of(t.next()))
                found = [u for u in found if label in acct.messages[by_uid[u]].labels]
            elif key == b"X-GM-RAW":
                # [EXT] "Extension of the SEARCH command: X-GM-RAW": Gmail's search syntax;
                # only "rfc822msgid:<id>" is understood here.
                query = text_of(t.next())
                acct.raw_searches.append(query)
                m = re.match(r"rfc822msgid:(\S+)", query)
                want = m.group(1).strip("<>") if m else None
                found = [u for u in found if want and f"<{want}>".encode()
                         in _header_fields(acct.messages[by_uid[u]].raw, [b"MESSAGE-ID"])]
            elif key in (b"SINCE", b"BEFORE", b"ON"):
                t.next()  # dates are not told apart here
            else:
                raise ValueError(f"search key {key.decode()!r} unsupported")
        if not uid:
            seqs = {u: i for i, u in enumerate(sorted(by_uid), 1)}
            found = [seqs[u] for u in found]
        return b"* SEARCH" + b"".join(b" %d" % u for u in found) + b"\r\n"

    # -- FETCH -------------------------------------------------------------------------------
    def _fetch(self, acct: Account, box: Box, t: Tokens, uid: bool) -> bytes:
        by_uid = box.uids()
        uids = sorted(by_uid)
        spec = bytes(t.next())
        if uid:
            wanted = _uid_set(spec, max(uids, default=0))
            chosen = [u for u in uids if u in wanted]
        else:
            seqs = _uid_set(spec, len(uids))
            chosen = [u for i, u in enumerate(uids, 1) if i in seqs]
        items = t.next()
        items = items if isinstance(items, list) else [items]
        changed_since = None
        if t.more():
            modifiers = t.next()
            if isinstance(modifiers, list) and modifiers and bytes(modifiers[0]).upper() == b"CHANGEDSINCE":
                changed_since = int(bytes(modifiers[1]))
        names = [bytes(x).upper() for x in items]
        if b"ALL" in names or b"FAST" in names:
            names = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"]
        out = []
        seq_of = {u: i for i, u in enumerate(uids, 1)}
        for u in chosen:
            msg = acct.messages[by_uid[u]]
            if changed_since is not None and msg.modseq <= changed_since:
                continue
            parts = [b"UID %d" % u]
            for name in names:
                if name == b"UID":
                    continue
                if name == b"FLAGS":
                    parts.append(b"FLAGS (" + " ".join(sorted(msg.flags)).encode() + b")")
                elif name == b"INTERNALDATE":
                    parts.append(b'INTERNALDATE "' + msg.date.encode() + b'"')
                elif name == b"RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % len(msg.raw))
                elif name == b"MODSEQ":
                    parts.append(b"MODSEQ (%d)" % msg.modseq)
                elif name == b"X-GM-MSGID":
                    # [EXT] "The message ID is a 64-bit unsigned integer".
                    parts.append(b"X-GM-MSGID %d" % msg.msgid)
                elif name == b"X-GM-THRID":
                    # [EXT] the thread ID, also a 64-bit unsigned integer.
                    parts.append(b"X-GM-THRID %d" % msg.thrid)
                elif name == b"X-GM-LABELS":
                    # [EXT] "Use the X-GM-LABELS attribute to return the labels": a list
                    # of astrings, system labels as \Inbox, \Sent, \Important, \Starred.
                    parts.append(b"X-GM-LABELS (" + b" ".join(_astring(lb) for lb in msg.labels)
                                 + b")")
                elif name in (b"BODY[]", b"BODY.PEEK[]", b"RFC822"):
                    acct.body_fetches[msg.msgid] += 1
                    key = b"RFC822" if name == b"RFC822" else b"BODY[]"
                    parts.append(key + b" " + _literal(msg.raw))
                    if name != b"BODY.PEEK[]" and "\\Seen" not in msg.flags:
                        msg.flags.add("\\Seen")
                        acct.touch(msg)
                elif name.startswith((b"BODY.PEEK[HEADER.FIELDS", b"BODY[HEADER.FIELDS")):
                    inner = name[name.index(b"(") + 1:name.index(b")")]
                    section = name[name.index(b"[") + 1:name.index(b"]")]
                    parts.append(b"BODY[" + section + b"] "
                                 + _literal(_header_fields(msg.raw, inner.split())))
                else:
                    raise ValueError(f"fetch item {name.decode()!r} unsupported")
            out.append(b"* %d FETCH (" % seq_of[u] + b" ".join(parts) + b")\r\n")
        return b"".join(out)

    # -- STORE -------------------------------------------------------------------------------
    def _store(self, acct: Account, box: Box, t: Tokens, uid: bool) -> bytes:
        by_uid = box.uids()
        uids = sorted(by_uid)
        spec = bytes(t.next())
        chosen = sorted(_uid_set(spec, max(uids, default=0)) & set(uids)) if uid else \
            [u for i, u in enumerate(uids, 1) if i in _uid_set(spec, len(uids))]
        how = bytes(t.next()).upper()
        values = t.next()
        values = values if isinstance(values, list) else [values]
        silent = how.endswith(b".SILENT")
        item = how.removesuffix(b".SILENT").lstrip(b"+-")
        out = []
        seq_of = {u: i for i, u in enumerate(uids, 1)}
        for u in chosen:
            msg = acct.messages[by_uid[u]]
            if item == b"X-GM-LABELS":
                # [EXT] "Labels may be added to a message using the STORE command in
                # conjunction with the X-GM-LABELS attribute" (+, - and plain, as FLAGS).
                acct.label_stores += 1
                labels = [mailbox_of(v) for v in values]
                if how.startswith(b"+"):
                    for label in labels:
                        acct.add_label(msg, label)
                elif how.startswith(b"-"):
                    for label in labels:
                        acct.remove_label(msg, label)
                else:
                    for label in list(msg.labels):
                        if acct.canonical(label) not in {acct.canonical(x) for x in labels}:
                            acct.remove_label(msg, label)
                    for label in labels:
                        acct.add_label(msg, label)
                reply = b"X-GM-LABELS (" + b" ".join(_astring(lb) for lb in msg.labels) + b")"
            elif item == b"FLAGS":
                flags = {text_of(v) for v in values}
                before = set(msg.flags)
                if how.startswith(b"+"):
                    msg.flags |= flags
                elif how.startswith(b"-"):
                    msg.flags -= flags
                else:
                    msg.flags = set(flags)
                acct.star_from_flags(msg)
                if msg.flags != before:
                    acct.touch(msg)
                reply = b"FLAGS (" + " ".join(sorted(msg.flags)).encode() + b")"
            else:
                raise ValueError(f"store item {item.decode()!r} unsupported")
            if not silent:
                out.append(b"* %d FETCH (UID %d %s)\r\n" % (seq_of[u], u, reply))
        acct.sync_all()
        return b"".join(out)

    def _expunge(self, acct: Account, box: Box, only: set[int] | None) -> bytes:
        """[SYNC] "Delete a message: remove label from the message, or delete the message
        permanently if the message is already in the Spam or Trash label": expunging in a
        label folder takes the label off; in All Mail, Spam or Trash the message goes."""
        out = []
        by_uid = box.uids()
        seqs = {u: i for i, u in enumerate(sorted(by_uid), 1)}
        label = acct.label_of(box.name)
        for u in sorted(by_uid, reverse=True):
            msg = acct.messages[by_uid[u]]
            if "\\Deleted" not in msg.flags or (only is not None and u not in only):
                continue
            msg.flags.discard("\\Deleted")
            if label is None:
                del acct.messages[msg.msgid]
            else:
                acct.remove_label(msg, label)
            out.append(b"* %d EXPUNGE\r\n" % seqs[u])
        acct.sync_all()
        return b"".join(out)




# -- a labelled account for the tests --------------------------------------------------
#: (labels, flags, where) of the seeded messages: every kind of placement there is.
SEED = [
    (("\\Inbox",), set(), "all"),
    (("\\Inbox", "Work"), {"\\Seen"}, "all"),
    (("Work", "\\Important", "Privat/Ünter"), {"\\Seen", "$Forwarded"}, "all"),
    (("\\Sent",), {"\\Seen"}, "all"),
    (("\\Sent", "Work", "\\Starred"), {"\\Seen", "\\Flagged"}, "all"),
    ((), {"\\Seen"}, "all"),  # archived: in All Mail only
    (("\\Draft",), {"\\Draft"}, "all"),
    (("Muy Importante", "Work"), {"\\Answered", "\\Seen"}, "all"),
    ((), set(), "spam"),
    ((), {"\\Seen"}, "trash"),
]


def seed_message(i: int, tag: str = "gm", size: int = 0) -> bytes:
    body = (f"message {i} of {tag}\r\n" + "x" * size + "\r\n").encode()
    return (f"Message-ID: <{tag}{i}@gmail.test>\r\nFrom: a{i}@example.org\r\n"
            f"To: me@gmail.test\r\nSubject: {tag} {i} Grüße\r\n"
            f"Date: Mon, {1 + i % 27:02d} Jan 2024 10:00:00 +0100\r\n\r\n").encode() + body


def seed(account: Account, tag: str = "gm") -> int:
    """The :data:`SEED` messages into ``account`` (one thread for two of them); returns
    how many."""
    first = None
    for i, (labels, flags, where) in enumerate(SEED):
        when = datetime(2023, 1 + i % 12, 1 + i, 8 + i, 30, tzinfo=UTC)
        msg = account.add(seed_message(i, tag), labels=labels, flags=set(flags),
                          date=imap_date(when), where=where,
                          thread_of=first.thrid if first is not None and i == 1 else None)
        first = first or msg
    return len(SEED)


__all__ = ["SEED", "Account", "FakeGmail", "GMessage", "User", "imap_date", "seed",
           "seed_message"]
