"""POP3 source store: one folder (INBOX), messages keyed by UIDL.

POP3 sees only the server's inbox, has no UIDs, flags or dates, and numbers
messages per session. So this store lists every message of the maildrop as
``MessageRef(key=UIDL, uid=None)`` and lets the archive's ``missing()`` drop
what it already holds; the engine then fetches the rest in its usual
byte-bounded batches. Deletion is not the engine's business: it is decided
afterwards by :mod:`migrate.engine.retention`, which calls :meth:`Pop3Source.delete`
and :meth:`Pop3Source.quit` with message numbers of *this* session's listing.

Why our own wire code instead of ``poplib.retr()``: poplib caps every line at
2,048 bytes (``poplib._MAXLINE``) and real mail has longer lines (7,080 bytes
in the test corpus), and it builds a list of lines per message. Here a
multi-line response is read from a plain byte buffer until ``CRLF.CRLF``,
dot-unstuffed in one pass, so memory follows the largest single message and
long lines cost nothing extra. Commands are pipelined when the server offers
PIPELINING (RFC 2449), which removes one round trip per message.

What "byte-exact" means for POP3
--------------------------------
The archive holds exactly what the server sends in answer to RETR, with the
transfer encoding undone, and nothing else:

* dot-unstuffing: a line the server sent as ``..x`` is stored as ``.x``;
  a line of only ``.`` (sent as ``..``) stays a line of only ``.``;
* the terminating ``.CRLF`` is not part of the message;
* RFC 1939 forces the server to end the response with CRLF before the
  terminator, so a message *without* a final newline arrives with one added.
  LIST sizes are exact octet counts (RFC 1939 §11), so when the unstuffed
  data is exactly LIST size + 2 and ends in CRLF, that CRLF was added by the
  server and is removed. With a server whose LIST sizes are approximations
  that happen to be off by exactly two, a real final CRLF would be dropped;
  we know of no such server, and Dovecot (tested) reports exact sizes.
* line endings are whatever the server sends. Dovecot sends every bare LF
  and bare CR as CRLF (as IMAP BODY[] does), so for Dovecot a drained
  message equals the IMAP ``BODY[]`` of the same message byte for byte
  (``tests/test_drain.py`` checks this for the whole corpus).

Servers without UIDL
--------------------
A key is then ``fp:`` + sha256 of the ``TOP n 0`` response (the header
block) and the LIST size. Its limits, which the README repeats:

* two messages with identical headers (Received lines, Message-ID, dates)
  and the same size get one key: they are archived once, and neither is ever
  deleted by this tool (we cannot tell which one the archive holds);
* a server that edits headers between sessions (adds ``Status:`` or
  ``X-UIDL:`` lines on read, as some do) changes the key, so the message is
  downloaded again under its new key (a duplicate in the archive, never a loss);
* a *new* message whose headers and size equal those of an archived one
  that has since left the server would be taken for it. Real headers carry
  Received timestamps and a Message-ID, so this needs a true duplicate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.errors import AuthError, ConnectError, MessageError, SetupError, UsageError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef

INBOX = Folder(name="INBOX", server_name="INBOX", delimiter=None)
AUTH_METHODS = ("auto", "plain", "user", "apop")
MAX_STATUS_LINE = 64 * 1024
# A response may exceed its LIST size (dot-stuffing, an approximate size) but not
# without bound: a server that never sends the terminator must not eat all memory.
SLACK_BYTES = 1 << 20
RECV_CHUNK = 256 * 1024
PIPELINE_CHUNK = 200  # commands written at once when the server pipelines
_APOP_STAMP = re.compile(rb"<[^<>\s]+@[^<>\s]+>")


class ProtocolError(MessageError):
    """The server's reply is not POP3 as we know it; the session cannot go on."""


@dataclass(frozen=True)
class Listed:
    """One message of this session's maildrop listing."""

    number: int  # per-session message number: valid for DELE only in this session
    key: str  # UIDL, or the "fp:" fingerprint when the server has no UIDL
    size: int  # LIST size (octets)


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Verified TLS by default; a private CA can be trusted with --cafile."""
    return ssl.create_default_context(cafile=endpoint.cafile)


def unstuff(body: bytes) -> bytes:
    """Undo POP3 dot-stuffing of a multi-line body whose lines end in CRLF.

    In a well-formed response every line starting with '.' was sent with one
    more '.', so dropping the first '.' of every line that starts with one is
    exact (RFC 1939 §3).
    """
    if b"\r\n." in body:
        body = body.replace(b"\r\n.", b"\r\n")
    if body.startswith(b"."):
        body = body[1:]
    return body


class Wire:
    """A POP3 byte stream: status lines and dot-terminated multi-line bodies.

    Keeps its own buffer (not a ``makefile``) so that pipelined responses can
    be read back to back and STLS can swap the socket when the buffer is empty.
    """

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectError(f"connection to {self.where} lost while sending ({_reason(exc)}); "
                               "nothing was deleted; run the same command again") from None

    def _fill(self, what: str) -> None:
        try:
            chunk = self.sock.recv(RECV_CHUNK)
        except OSError as exc:
            raise ConnectError(f"connection to {self.where} lost while {what} ({_reason(exc)}); "
                               "nothing was deleted; run the same command again") from None
        if not chunk:
            raise ConnectError(f"connection to {self.where} closed by the server while {what}; "
                               "nothing was deleted; run the same command again")
        self.buf += chunk

    def line(self, what: str) -> bytes:
        """One status line, without its CRLF."""
        start = 0
        while True:
            idx = self.buf.find(b"\n", start)
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[:idx + 1]
                return out[:-1] if out.endswith(b"\r") else out
            if len(self.buf) > MAX_STATUS_LINE:
                raise ProtocolError(f"{self.where} sent a status line longer than "
                                    f"{MAX_STATUS_LINE} bytes while {what}")
            start = len(self.buf)
            self._fill(what)

    def multiline(self, what: str, limit: int) -> bytes:
        """A dot-terminated body, unstuffed, ending in CRLF (or empty).

        One pass: every CRLF "." found is either the terminator or a stuffed
        dot, whose offset is noted; the body is then copied out once, without
        those dots. (:func:`unstuff` says the same in two passes and two copies.)
        """
        buf = self.buf
        while len(buf) < 3:
            self._fill(what)
        if buf.startswith(b".\r\n"):
            del buf[:3]
            return b""
        cuts = [0] if buf.startswith(b".") else []  # stuffing dots to drop
        scan = 0
        while True:
            idx = buf.find(b"\r\n.", scan)
            if idx < 0 or len(buf) < idx + 5:
                if len(buf) > limit:
                    raise ProtocolError(f"{self.where} sent more than {limit} bytes without ending "
                                        f"the response while {what}")
                if idx < 0:
                    scan = max(scan, len(buf) - 2)
                self._fill(what)
                continue
            if buf[idx + 3:idx + 5] == b"\r\n":  # CRLF . CRLF: the end
                body = _without(buf, cuts, idx + 2)
                del buf[:idx + 5]
                return body
            cuts.append(idx + 2)
            scan = idx + 3

    def replace_socket(self, sock: socket.socket) -> None:
        if self.buf:
            raise ProtocolError(f"{self.where} sent data after accepting STLS "
                                "(possible injection); refusing to continue")
        self.sock = sock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _without(buf: bytearray, cuts: list[int], end: int) -> bytes:
    """``buf[:end]`` as bytes, leaving out the single bytes at ``cuts``, in one copy."""
    with memoryview(buf) as view:
        if not cuts:
            return view[:end].tobytes()
        parts = []
        start = 0
        for cut in cuts:
            parts.append(view[start:cut])
            start = cut + 1
        parts.append(view[start:end])
        body = b"".join(parts)
        for part in parts:
            part.release()
        return body


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").strip()


class Pop3Session:
    """A logged-in POP3 session: commands, replies and the error mapping.

    Failures map like the IMAP store's: refused credentials (-ERR to
    USER/PASS, AUTH or APOP) are :class:`AuthError` (exit 3); no route, a
    dropped connection, a -ERR greeting are :class:`ConnectError` (exit 4,
    retried by the retry wrapper, the first connection too); an untrusted
    certificate or a missing STLS are :class:`SetupError` (exit 4 at once); a
    reply that is not POP3 is :class:`ProtocolError` (a :class:`MessageError`, exit 1).
    """

    def __init__(self, endpoint: Endpoint, password: PasswordSource, timeout: float = 60.0,
                 auth: str = "auto") -> None:
        if auth not in AUTH_METHODS:
            raise UsageError(f"unknown --auth {auth!r}; choose one of {', '.join(AUTH_METHODS)}")
        self.endpoint = endpoint
        self.where = f"{endpoint.host}:{endpoint.port}"
        self.wire = self._connect(timeout)
        self.caps: dict[str, list[str]] = {}
        self.closed = False
        try:
            greeting = self.status_line("reading the greeting")
            if endpoint.tls == "starttls":
                self._starttls()
            self.caps = self._capa()
            self._login(auth, password, greeting)
            self.caps = self._capa() or self.caps  # some servers list more after login
        except Pop3ErrReply as exc:
            # A -ERR greeting or STLS: a server that will not talk now (busy, shutting down).
            self.wire.close()
            raise ConnectError(f"{self.where} refused the session ({exc.text[:120]}); "
                               "try again later") from None
        except BaseException:
            self.wire.close()
            raise

    # -- connection -----------------------------------------------------------------
    def _tls_error(self, exc: ssl.SSLError) -> ConnectError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SetupError(f"TLS certificate of {self.where} not trusted "
                              f"({exc.verify_message}); use --cafile for a private CA")
        return ConnectError(f"TLS handshake with {self.where} failed ({exc.reason}); "
                            "check the port and that the server speaks TLS there")

    def _connect(self, timeout: float) -> Wire:
        ep = self.endpoint
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
        except OSError as exc:
            kind = SetupError if isinstance(exc, socket.gaierror) and \
                exc.errno == socket.EAI_NONAME else ConnectError
            raise kind(f"cannot connect to {self.where}: {_reason(exc)}; "
                       "check the host name, port and network") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.tls == "implicit":
            try:
                sock = tls_context(ep).wrap_socket(sock, server_hostname=ep.host)
            except ssl.SSLError as exc:
                sock.close()
                raise self._tls_error(exc) from None
            except OSError as exc:
                sock.close()
                raise ConnectError(f"cannot connect to {self.where}: {_reason(exc)}") from None
        return Wire(sock, self.where)

    def _starttls(self) -> None:
        caps = self._capa()
        if "STLS" not in caps:
            raise SetupError(f"{self.where} does not offer STLS; use pop3s:// "
                             "(or ?tls=none for a loopback test server)")
        self.command("STLS", "starting TLS")
        try:
            tls = tls_context(self.endpoint).wrap_socket(self.wire.sock,
                                                         server_hostname=self.endpoint.host)
        except ssl.SSLError as exc:
            raise self._tls_error(exc) from None
        except OSError as exc:
            raise ConnectError(f"connection to {self.where} lost during STLS: {_reason(exc)}") \
                from None
        self.wire.replace_socket(tls)

    # -- replies ----------------------------------------------------------------------
    def status_line(self, what: str) -> bytes:
        line = self.wire.line(what)
        if line.startswith(b"+OK"):
            return line
        if line.startswith(b"-ERR"):
            raise Pop3ErrReply(line)
        raise ProtocolError(f"{self.where} sent {line[:80]!r} while {what}; "
                            "that is not a POP3 reply")

    def command(self, cmd: str, what: str) -> bytes:
        self.wire.send(cmd.encode("utf-8") + b"\r\n")
        return self.status_line(what)

    def multiline(self, cmd: str, what: str, limit: int = 64 << 20) -> bytes:
        self.command(cmd, what)
        return self.wire.multiline(what, limit)

    def _capa(self) -> dict[str, list[str]]:
        """CAPA as {NAME: [args]}; empty when the server has no CAPA (RFC 1939-only)."""
        try:
            text = self.multiline("CAPA", "reading capabilities", limit=MAX_STATUS_LINE)
        except Pop3ErrReply:
            return {}
        caps: dict[str, list[str]] = {}
        for raw in text.splitlines():
            parts = raw.decode("ascii", "replace").split()
            if parts:
                caps[parts[0].upper()] = [p.upper() for p in parts[1:]]
        return caps

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.caps

    # -- login --------------------------------------------------------------------------
    def _login(self, auth: str, password: PasswordSource, greeting: bytes) -> None:
        user = self.endpoint.user
        if auth == "auto":
            auth = "plain" if "PLAIN" in self.caps.get("SASL", []) else "user"
        try:
            if password.is_oauth2 or self.endpoint.auth != "password":
                self._oauth2_login(password)
            elif auth == "plain":
                token = base64.b64encode(b"\0" + user.encode() + b"\0" +
                                         password.get().encode("utf-8")).decode()
                self.command(f"AUTH PLAIN {token}", "authenticating (AUTH PLAIN)")
            elif auth == "apop":
                stamp = _APOP_STAMP.search(greeting)
                if stamp is None:
                    raise AuthError(f"{self.where} does not offer APOP (no timestamp in its "
                                    "greeting); drop --auth apop")
                digest = hashlib.md5(stamp.group(0) + password.get().encode("utf-8"),
                                     usedforsecurity=False).hexdigest()
                self.command(f"APOP {user} {digest}", "authenticating (APOP)")
            else:
                self.command(f"USER {user}", "authenticating (USER)")
                self.command(f"PASS {password.get()}", "authenticating (PASS)")
        except Pop3ErrReply as exc:
            if b"[IN-USE]" in exc.line:
                raise ConnectError(f"the maildrop of {user} at {self.where} is in use by another "
                                   "session; try again later") from None
            if b"[SYS/" in exc.line:
                raise ConnectError(f"{self.where} cannot open the maildrop of {user} "
                                   f"({exc.text[:120]}); try again later") from None
            raise AuthError(f"authentication failed for {user} at {self.where} "
                            f"({exc.text[:120]}); check the user name and password") from None

    def _oauth2_login(self, password: PasswordSource) -> None:
        """SASL XOAUTH2 / OAUTHBEARER with an initial response; one retry with a
        fresh token, because a refused token is most often an expired one."""
        user = self.endpoint.user
        mech = self.endpoint.auth.upper()
        if mech == "PASSWORD":
            mech = "OAUTHBEARER" if "OAUTHBEARER" in self.caps.get("SASL", []) else "XOAUTH2"
        token: str | None = None  # the one the server refused, after the first attempt
        for attempt in (0, 1):
            token = password.oauth2_token(refused=token)
            if mech == "OAUTHBEARER":
                payload = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
            else:
                payload = f"user={user}\x01auth=Bearer {token}\x01\x01"
            what = f"authenticating (AUTH {mech})"
            self.wire.send(f"AUTH {mech} {base64.b64encode(payload.encode()).decode()}\r\n".encode())
            line = self.wire.line(what)
            if line.startswith(b"+ ") or line.rstrip() == b"+":
                # An error challenge (JSON status): the client must answer it
                # (an empty response; 0x01 for OAUTHBEARER) before the -ERR.
                self.wire.send(b"AQ==\r\n" if mech == "OAUTHBEARER" else b"\r\n")
                line = self.wire.line(what)
            if line.startswith(b"+OK"):
                return
            if not line.startswith(b"-ERR"):
                raise ProtocolError(f"{self.where} sent {line[:80]!r} while {what}")
            if attempt:
                raise Pop3ErrReply(line)

    def close(self, quit_: bool = True) -> bool:
        """End the session; with QUIT, True when the server confirmed it (deletions done)."""
        if self.closed:
            return False
        self.closed = True
        ok = False
        if quit_:
            with contextlib.suppress(MessageError, ConnectError, Pop3ErrReply):
                self.command("QUIT", "quitting")
                ok = True
        self.wire.close()
        return ok


class Pop3ErrReply(Exception):
    """A -ERR reply: the session is still usable."""

    def __init__(self, line: bytes) -> None:
        super().__init__(_text(line))
        self.line = line
        self.text = _text(line)


class Pop3Source:
    """Reads the maildrop of one POP3 account; implements :class:`SourceStore`.

    ``auth``: "auto" uses SASL PLAIN when CAPA offers it, USER/PASS otherwise;
    "apop" must be asked for (MD5 challenge-response needs the cleartext
    password on the server and adds nothing over TLS); "plain" / "user" force
    one mechanism.
    """

    def __init__(self, endpoint: Endpoint, password: PasswordSource, timeout: float = 60.0,
                 auth: str = "auto") -> None:
        self.endpoint = endpoint
        self._login = (password, timeout, auth)
        self.session = Pop3Session(endpoint, password, timeout, auth)
        self._listing: list[Listed] | None = None
        self.failed: list[str] = []  # messages that could not be fetched (-ERR on RETR)
        self.broken = False  # the stream is out of step: no DELE, no QUIT
        self.fingerprinted = False  # keys are TOP fingerprints (server has no UIDL)
        self.duplicate_keys: set[str] = set()

    def reconnect(self) -> None:
        """A new session after a dropped one (for :mod:`migrate.engine.retry`).

        The old session ends without QUIT, so the server applies none of its
        DELE marks (there are none during a transfer anyway). Message
        numbers belong to a session, so the listing is read again; refs are
        keyed by UIDL and map onto the new numbers.
        """
        self.session.close(quit_=False)
        password, timeout, auth = self._login
        self.session = Pop3Session(self.endpoint, password, timeout, auth)
        self._listing = None
        self.broken = False

    # -- listing ------------------------------------------------------------------------
    def listing(self) -> list[Listed]:
        """LIST + UIDL (or fingerprints) of this session, once per session."""
        if self._listing is None:
            self._listing = self._guard(self._read_listing)
        return self._listing

    @property
    def listed_count(self) -> int:
        """Messages in this session's listing (0 if it was never read)."""
        return len(self._listing or [])

    def _guard(self, fn: Callable[[], list[Listed]]) -> list[Listed]:
        try:
            return fn()
        except ProtocolError:
            self.broken = True
            raise

    def _read_listing(self) -> list[Listed]:
        s = self.session
        try:
            sizes = self._pairs(s.multiline("LIST", "listing the maildrop"), "LIST")
        except Pop3ErrReply as exc:
            raise ProtocolError(f"LIST refused by {s.where}: {exc.text}") from None
        keys: dict[int, str] = {}
        uidl_ok = "UIDL" in s.caps or not s.caps
        if uidl_ok:
            try:
                raw = s.multiline("UIDL", "listing unique ids")
                keys = {n: v.decode("latin-1") for n, v in self._pairs_raw(raw, "UIDL")}
            except Pop3ErrReply:
                uidl_ok = False
        if not uidl_ok:
            self.fingerprinted = True
            keys = self._fingerprints(sizes)
        out: list[Listed] = []
        seen: dict[str, int] = {}
        for number, size in sorted(sizes.items()):
            key = keys.get(number)
            if key is None:
                raise ProtocolError(f"{s.where} listed message {number} without a unique id")
            seen[key] = seen.get(key, 0) + 1
            out.append(Listed(number=number, key=key, size=size))
        self.duplicate_keys = {k for k, n in seen.items() if n > 1}
        return out

    def _pairs_raw(self, text: bytes, what: str) -> Iterator[tuple[int, bytes]]:
        for line in text.split(b"\r\n"):
            if not line:
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit():
                raise ProtocolError(f"{self.session.where} sent a malformed {what} line "
                                    f"{line[:80]!r}")
            yield int(parts[0]), parts[1]

    def _pairs(self, text: bytes, what: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for number, value in self._pairs_raw(text, what):
            if not value.isdigit():
                raise ProtocolError(f"{self.session.where} sent a malformed {what} size {value!r}")
            out[number] = int(value)
        return out

    def _fingerprints(self, sizes: dict[int, int]) -> dict[int, str]:
        """sha256(TOP n 0 + size) per message, for servers without UIDL (limits: module doc)."""
        out: dict[int, str] = {}
        numbers = sorted(sizes)
        for number, head in self._pipelined([f"TOP {n} 0" for n in numbers], numbers,
                                            "reading headers (TOP)", lambda n: 8 << 20):
            if head is None:
                raise ProtocolError(f"{self.session.where} refused TOP {number} 0 and has no "
                                    "UIDL: messages cannot be told apart across sessions")
            digest = hashlib.sha256(head + b"\0" + str(sizes[number]).encode()).hexdigest()
            out[number] = f"fp:{digest}"
        return out

    def _pipelined(self, commands: Sequence[str], numbers: Sequence[int], what: str,
                   limit_of: Callable[[int], int]) -> Iterator[tuple[int, bytes | None]]:
        """Send multi-line commands (pipelined when offered); yield (number, body or None on -ERR).

        If the consumer stops early, the remaining replies are still read, so
        the stream stays in step for DELE and QUIT.
        """
        s = self.session
        step = PIPELINE_CHUNK if s.pipelining else 1
        for start in range(0, len(commands), step):
            chunk = list(zip(commands[start:start + step], numbers[start:start + step], strict=True))
            s.wire.send(b"".join(c.encode() + b"\r\n" for c, _ in chunk))
            pending = len(chunk)
            try:
                for _cmd, number in chunk:
                    pending -= 1
                    try:
                        s.status_line(f"{what} for message {number}")
                    except Pop3ErrReply:
                        yield number, None
                        continue
                    body = s.wire.multiline(f"{what} for message {number}",
                                            limit_of(number))
                    yield number, body
            except (ProtocolError, ConnectError):
                self.broken = True
                raise
            finally:
                if pending and not self.broken:
                    self._drain_replies(chunk[len(chunk) - pending:], what)

    def _drain_replies(self, rest: Sequence[tuple[str, int]], what: str) -> None:
        for _cmd, number in rest:
            try:
                self.session.status_line(f"{what} for message {number}")
            except Pop3ErrReply:
                continue
            except (ProtocolError, ConnectError):
                self.broken = True
                return
            self.session.wire.multiline(what, 1 << 40)

    # -- SourceStore --------------------------------------------------------------------
    def list_folders(self) -> list[Folder]:
        return [INBOX]

    def status(self, folder: Folder) -> FolderStatus:
        return FolderStatus(uidvalidity=None, uidnext=None, messages=len(self.listing()))

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        """Every message of the maildrop; the archive's ``missing()`` drops what it holds."""
        for item in self.listing():
            yield MessageRef(key=item.key, size=item.size, uid=None)

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return iter(())

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        """RETR each ref (pipelined); a -ERR skips that message and records it in ``failed``."""
        by_key: dict[str, Listed] = {}
        for item in self.listing():
            by_key.setdefault(item.key, item)
        wanted = [by_key[r.key] for r in refs if r.key in by_key]
        if not wanted:
            return
        numbers = [w.number for w in wanted]
        sizes = {w.number: w for w in wanted}
        for number, body in self._pipelined(
                [f"RETR {n}" for n in numbers], numbers, "downloading (RETR)",
                lambda n: 2 * sizes[n].size + SLACK_BYTES):
            item = sizes[number]
            if body is None:
                self.failed.append(f"message {number} (UIDL {item.key}): the server refused RETR")
                continue
            if len(body) == item.size + 2 and body.endswith(b"\r\n"):
                body = body[:-2]  # the CRLF the server added before the terminator
            yield Message(key=item.key, raw=body, uid=None, flags=(), internaldate=None)

    # -- deletion (used by migrate.engine.retention only) -----------------------------------------
    def delete(self, numbers: Sequence[int]) -> int:
        """Mark messages of this session for deletion (takes effect only at QUIT)."""
        if self.broken:
            raise ProtocolError(f"the session with {self.session.where} is out of step; "
                                "not deleting anything")
        s = self.session
        step = PIPELINE_CHUNK if s.pipelining else 1
        marked = 0
        for start in range(0, len(numbers), step):
            chunk = numbers[start:start + step]
            s.wire.send(b"".join(f"DELE {n}\r\n".encode() for n in chunk))
            for n in chunk:
                try:
                    s.status_line(f"deleting message {n}")
                    marked += 1
                except Pop3ErrReply as exc:
                    self.failed.append(f"message {n}: DELE refused ({exc.text[:80]})")
                except ProtocolError:
                    self.broken = True
                    raise
        return marked

    def quit(self) -> bool:
        """QUIT: True when the server confirmed, i.e. the marked messages are gone."""
        if self.broken:
            self.session.close(quit_=False)
            return False
        return self.session.close(quit_=True)

    def close(self) -> None:
        # QUIT even without DELE, so the server ends the session cleanly; a
        # broken stream is just dropped (the server then deletes nothing).
        self.session.close(quit_=not self.broken)

__all__ = ["AUTH_METHODS", "INBOX", "Listed", "Pop3Source", "ProtocolError", "unstuff"]
