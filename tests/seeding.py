r"""Seeding and inspection helpers for the test Dovecot (see tests/dovecot.py).

Folder names in these helpers are Unicode paths with '/' between levels
("A/B/C", "Forschung & Entwicklung", "日本語"), relative to the personal
namespace; they are translated to the server's hierarchy delimiter (asked
with LIST "" "") and given its personal namespace prefix (asked with
NAMESPACE: "" on Dovecot here, "INBOX." on Cyrus, so "A/B" is "INBOX.A.B"
there; INBOX stays INBOX).  IMAPClient does the modified UTF-7 encoding.
Works the same on every server of tests/servers.py.

What Dovecot 2.3.19 (Maildir, default settings, as configured in
tests/dovecot.py) does to APPENDed messages
=====================================================================

Established by tests/test_fixture.py (``test_corpus_round_trip`` and the
``test_append_*`` tests, which fail if any of this changes):

Bytes (BODY[] / BODY.PEEK[] / RFC822 output, POP3 RETR):

* Line endings are normalised on OUTPUT: every bare LF and every bare CR
  comes back as CRLF (``re.sub(rb"\r\n|\r|\n", b"\r\n", raw)`` is exactly
  what FETCH returns for every message tried, all 222 corpus files
  included).  A lone CR at the very end also becomes CRLF.  Pure-CRLF
  messages come back byte for byte (124 of the 222 corpus files; the 98 LF
  or mixed ones change only in that way).  The Maildir file on disk keeps
  the original bytes (``S=`` physical size in the file name), while
  RFC822.SIZE reports the CRLF size (``W=``), equal to len(BODY[]).
* A missing final newline is NOT added: "...no newline" comes back without
  CRLF at the end (unless the message ends in a bare CR, see above).
* Lines longer than 998 octets (5,000-byte body and header lines tested, the
  7,042/7,080-byte corpus lines) are kept unchanged: no wrapping, no folding.
* 8-bit bytes in headers and body (raw UTF-8, latin-1) are kept unchanged.
* A leading mbox "From " envelope line is kept as an ordinary first line
  (only its line ending is normalised); "From " / ">From " body lines are
  kept unchanged (no quoting, no unquoting).
* Messages without a header/body separator, with only a body, with
  trailing blank lines or trailing whitespace are kept unchanged.
* A NUL byte is replaced by 0x80 ("a\x00b" -> "a\x80b"); the corpus here
  contains no NUL.  An empty (0-byte) APPEND is refused: NO "Can't save a
  zero byte message".

Dates (INTERNALDATE):

* Maildir keeps INTERNALDATE as the file's mtime, so the INSTANT is kept
  (to the second) but the OFFSET given at APPEND is lost: FETCH returns the
  time in the Dovecot process's local zone (its TZ; e.g. APPEND
  "06-May-2020 07:08:09 +0200" comes back as "06-May-2020 10:38:09 +0530"
  with TZ=Asia/Kolkata, as "05:08:09 +0000" in a UTC container).  Compare
  INTERNALDATEs as instants (aware datetimes compare that way), never as
  strings or offsets.
* A future INTERNALDATE is silently replaced by "now".
* A date before 1970 comes back wrong: the negative time_t is read as an
  unsigned 32-bit value (1969-07-20 20:17 UTC -> 2105-08-27 02:45:16 UTC).
  1970-01-01 00:00:00 UTC itself is kept.

Flags: system flags and keywords ($Forwarded, $MDNSent, Junk, $label1) are
kept; FETCH FLAGS also reports \Recent (even under EXAMINE) in the first
session that sees a new message -- ``fetch_all`` drops it by default.

Folders: CREATE "A/B/C" also makes "A" and "A/B" appear, as \Noselect
(both layouts); use ``create_folder(..., parents=True)`` for real parents.

POP3: UIDL is ``%08Xu%08Xv`` = 8 hex digits of the IMAP UID followed by 8 of
UIDVALIDITY, in LOWER-case hex (Dovecot's X modifier), e.g. "000000016b090c57".

What Cyrus IMAP 3.6.1 (Debian, as configured in tests/cyrus.py) does
==================================================================

Established by tests/test_servers.py (``stored`` in tests/servers.py is
the rule, checked against all 222 corpus files and the byte edge cases):

Bytes:

* Line endings: ``append`` goes through imaplib's APPEND, which itself turns
  every bare CR and LF into CRLF before sending (true for the Dovecot notes
  above as well); sent unchanged (``bulk_append``, and mailmigrate's own
  MULTIAPPEND), a bare LF is REFUSED ("Message contains bare newlines") and
  a bare CR kept, where Dovecot serves a bare LF as CRLF and drops a lone CR
  at the very end (``servers.stored(..., as_sent=True)``). No final newline
  is added; long lines, "From " lines, trailing blanks and 8-bit BODY bytes
  are kept.
* Every 8-bit byte in the message HEADER is replaced by 'X' (``munge8bit:
  yes``, the default): "Subject: Grüße" comes back as "Subject: GrXXXXe"
  (UTF-8: one X per byte). 17 of the 222 corpus files are changed this way.
* Refused with NO: a NUL byte ("Message contains NUL characters"), an empty
  message ("Zero-length message literal"), and a header line that is not
  "name:" -- a space before the colon, a body without header, a continuation
  of nothing ("Message contains invalid header"; 8 corpus files). A first
  mbox "From " envelope line is let through.

Dates: INTERNALDATE is kept in UTC: the instant round-trips, the offset
comes back as +0000 (APPEND "06-May-2020 07:08:09 +0200" -> "05:08:09
+0000"). A future date is kept. 1970-01-01 00:00:00 UTC is taken as "no
date" and replaced by now; a date before 1970 is refused with BAD
("Invalid date-time").

Flags: system flags and keywords are kept; \Recent is reported first.

Folders: CREATE "INBOX.A.B.C" makes INBOX.A and INBOX.A.B real, selectable
mailboxes (no \Noselect placeholders, unlike Dovecot); DELETE of a mailbox
with children is refused ([HASCHILDREN]). Mailboxes created in the same
second may share a UIDVALIDITY (it is derived from the clock).

Protocol: imapclient's ``multiappend`` of bare messages (no flags) sends two
spaces between literals, which Cyrus refuses with BAD ("Missing required
argument"), so ``bulk_append`` always sends flags. imaplib sends an APPEND
literal and its closing CRLF in two writes; with Nagle's algorithm each such
APPEND waits ~40 ms for Cyrus's delayed ACK, so the helpers set TCP_NODELAY.

POP3: UIDL is "UIDVALIDITY.UID" in decimal (e.g. "1796119741.1"); APOP works
(``allowapop: yes``; sasldb keeps the cleartext).
"""

from __future__ import annotations

import csv
import poplib
import re
import socket
import ssl as _ssl
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from imapclient import IMAPClient

if TYPE_CHECKING:
    from dovecot import User
    from servers import MailServer

DATA_DIR = Path(__file__).resolve().parent / "data"
CORPUS_DIR = DATA_DIR / "corpus"

FetchedMessage = tuple[bytes, tuple[bytes, ...], datetime]


# -- connections -------------------------------------------------------------


def tls_context(server: MailServer) -> _ssl.SSLContext:
    """A client SSL context that trusts only the server's throw-away CA."""
    return _ssl.create_default_context(cafile=str(server.ca_file))


def imap_connect(server: MailServer, *, tls: bool = False) -> IMAPClient:
    """An unauthenticated IMAPClient (plain port, or the IMAPS port if tls)."""
    if tls:
        client = IMAPClient(
            "localhost", server.imaps_port, ssl=True, ssl_context=tls_context(server), timeout=30
        )
    else:
        client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=30)
    client.normalise_times = False
    sock = getattr(client._imap, "sock", None)
    if sock is not None:  # see "Protocol" above: Nagle costs 40 ms per APPEND on Cyrus
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def imap_login(server: MailServer, user: User, *, tls: bool = False) -> IMAPClient:
    """A logged-in IMAPClient with ``normalise_times = False`` (offset-aware dates)."""
    client = imap_connect(server, tls=tls)
    client.login(user.name, user.password)
    return client


def pop3(server: MailServer, user: User | None = None, *, tls: str = "") -> poplib.POP3:
    """A POP3 connection; logged in with USER/PASS if ``user`` is given.

    ``tls``: "" (plain), "stls" (plain port + STLS) or "pop3s" (implicit TLS).
    """
    if tls == "pop3s":
        conn: poplib.POP3 = poplib.POP3_SSL(
            "localhost", server.pop3s_port, context=tls_context(server), timeout=30
        )
    elif tls in ("", "stls"):
        conn = poplib.POP3(server.host, server.pop3_port, timeout=30)
        if tls == "stls":
            conn.stls(context=tls_context(server))
    else:
        raise ValueError(f"tls must be '', 'stls' or 'pop3s', not {tls!r}")
    if user is not None:
        conn.user(user.name)
        conn.pass_(user.password)
    return conn


# -- folders -----------------------------------------------------------------


def delimiter(client: IMAPClient) -> str:
    """The hierarchy delimiter, from LIST "" "" (cached on the client)."""
    cached = getattr(client, "_mm_delimiter", None)
    if cached is None:
        rows = client.list_folders("", "")
        if not rows or not rows[0][1]:
            raise RuntimeError(f'LIST "" "" gave no delimiter: {rows!r}')
        raw = rows[0][1]
        cached = raw.decode() if isinstance(raw, bytes) else raw
        client._mm_delimiter = cached  # type: ignore[attr-defined]
    return cached


def namespace_prefix(client: IMAPClient) -> str:
    """The personal namespace prefix ("" or e.g. "INBOX."), cached on the client."""
    cached = getattr(client, "_mm_namespace", None)
    if cached is None:
        cached = ""
        if client.has_capability("NAMESPACE"):
            personal = client.namespace().personal
            if personal:
                prefix = personal[0][0]
                cached = prefix.decode() if isinstance(prefix, bytes) else str(prefix or "")
        client._mm_namespace = cached  # type: ignore[attr-defined]
    return cached


def server_name(client: IMAPClient, name: str) -> str:
    """Translate a '/'-path to the server's name ("A/B" -> "A.B" on Maildir++,
    "INBOX.A.B" on Cyrus); INBOX stays INBOX."""
    sep = delimiter(client)
    parts = name.split("/")
    if sep != "/":
        bad = [p for p in parts if sep in p]
        if bad:
            raise ValueError(f"folder level {bad[0]!r} contains the server delimiter {sep!r}")
    joined = sep.join(parts)
    prefix = namespace_prefix(client)
    if not prefix or joined.upper() == "INBOX":
        return joined
    return prefix + joined


def path_name(client: IMAPClient, server: str) -> str:
    """The '/'-path of a server's folder name (the reverse of ``server_name``)."""
    prefix = namespace_prefix(client)
    if prefix and server.startswith(prefix):
        server = server[len(prefix):]
    return server.replace(delimiter(client), "/")


def create_folder(client: IMAPClient, name: str, *, parents: bool = False) -> str:
    """CREATE a folder given as a Unicode '/'-path; returns the server-side name.

    With ``parents=True`` every ancestor level is created first (and existing
    ones are left alone), so all levels are real, selectable mailboxes.
    """
    levels = name.split("/")
    todo = ["/".join(levels[: i + 1]) for i in range(len(levels))] if parents else [name]
    for path in todo:
        target = server_name(client, path)
        if parents and client.folder_exists(target):
            continue
        client.create_folder(target)
    return server_name(client, name)


def list_folders(client: IMAPClient) -> dict[str, tuple[bytes, ...]]:
    """All folders as {'/'-path: attribute tuple} (names translated back to '/',
    relative to the personal namespace)."""
    return {path_name(client, name): tuple(flags) for flags, _d, name in client.list_folders()}


# -- messages ----------------------------------------------------------------

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def append(
    client: IMAPClient,
    folder: str,
    raw: bytes,
    flags: Iterable[bytes | str] = (),
    internaldate: datetime | None = None,
) -> int:
    """APPEND ``raw`` to ``folder`` ('/'-path); returns the new UID (UIDPLUS).

    Use past, offset-aware dates for ``internaldate``: Dovecot silently
    replaces a future INTERNALDATE with "now", and a naive datetime would be
    sent in the *client's* local zone by IMAPClient.
    """
    if internaldate is not None and internaldate.tzinfo is None:
        raise ValueError("internaldate must be timezone-aware")
    resp = client.append(server_name(client, folder), raw, tuple(flags), internaldate)
    m = _APPENDUID.search(_as_bytes(resp))
    if not m:
        raise RuntimeError(f"APPEND response has no APPENDUID: {resp!r}")
    return int(m.group(2))


def fetch_all(client: IMAPClient, folder: str, *, keep_recent: bool = False) -> dict[int, FetchedMessage]:
    """{uid: (BODY[] bytes, flags, INTERNALDATE)} of every message in ``folder``.

    Uses EXAMINE (read-only) and BODY.PEEK[], so nothing (not even \\Seen)
    changes.  ``\\Recent`` is dropped from the flags unless ``keep_recent``.
    INTERNALDATE is offset-aware (``normalise_times`` is forced off).
    """
    saved = client.normalise_times
    client.normalise_times = False
    try:
        client.select_folder(server_name(client, folder), readonly=True)
        uids = client.search(["ALL"])
        result: dict[int, FetchedMessage] = {}
        # chunked so that a 2,000-message folder does not make one huge command
        for i in range(0, len(uids), 500):
            chunk = uids[i : i + 500]
            data = client.fetch(chunk, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            for uid, item in data.items():
                flags = tuple(item[b"FLAGS"])
                if not keep_recent:
                    flags = tuple(f for f in flags if f != b"\\Recent")
                result[uid] = (item[b"BODY[]"], flags, item[b"INTERNALDATE"])
        client.unselect_folder()
        return dict(sorted(result.items()))
    finally:
        client.normalise_times = saved


# -- synthetic messages ------------------------------------------------------

_BASE_DATE = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)


def seed_date(i: int) -> datetime:
    """A deterministic past date for message i (one hour apart, UTC)."""
    return _BASE_DATE + timedelta(hours=i)


def seed_message(i: int, size: int | None = None, *, tag: str = "seed") -> bytes:
    """A synthetic RFC 5322 message number ``i`` (CRLF line endings throughout).

    Unique ``Message-ID: <tag-i@mailmigrate.test>``, plausible From/To/Date/
    Subject/MIME headers, a short body.  With ``size`` the body is padded with
    76-character lines so that the message is exactly ``size`` bytes (if
    ``size`` is smaller than the unpadded message, it is returned unpadded).
    The message always ends with CRLF.
    """
    date = seed_date(i).strftime("%a, %d %b %Y %H:%M:%S +0000")
    head = (
        f"Message-ID: <{tag}-{i}@mailmigrate.test>\r\n"
        f"Date: {date}\r\n"
        f"From: Sender {i % 17} <sender{i % 17}@example.org>\r\n"
        f"To: Recipient <rcpt@example.net>\r\n"
        f"Subject: {tag} message {i}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"This is {tag} message number {i}.\r\n"
    ).encode("ascii")
    if size is None or size <= len(head):
        return head
    missing = size - len(head)
    line = (f"{tag}-{i} " * 20)[:76].encode("ascii") + b"\r\n"  # 78 bytes
    full, rest = divmod(missing, len(line))
    if missing < 2:  # widen the last body line instead of adding one
        return head[:-2] + b" " * missing + b"\r\n"
    if rest == 1:  # no 1-byte line can end in CRLF: make the last full line 1 longer
        return head + line * (full - 1) + line[:-2] + b".\r\n"
    body = line * full + (b"." * (rest - 2) + b"\r\n" if rest else b"")
    return head + body


def seed_messages(n: int, size: int | None = None, *, tag: str = "seed") -> Iterator[bytes]:
    """seed_message(0) .. seed_message(n-1)."""
    for i in range(n):
        yield seed_message(i, size, tag=tag)


def bulk_append(client: IMAPClient, folder: str, messages: Sequence[bytes] | Iterable[bytes]) -> list[int]:
    """APPEND many messages (no flags, no date) and return their UIDs.

    Uses MULTIAPPEND when the server offers it (both do): one command per
    100 messages.  Dovecot needs about 1 ms per message (2,000 messages: ~2 s).
    """
    msgs = list(messages)
    target = server_name(client, folder)
    if b"MULTIAPPEND" not in client.capabilities():
        return [append(client, folder, m) for m in msgs]
    uids: list[int] = []
    for i in range(0, len(msgs), 100):
        # flags always given: see "Protocol" above (Cyrus and imapclient's spacing)
        chunk = [{"msg": m, "flags": ()} for m in msgs[i : i + 100]]
        resp = client.multiappend(target, chunk)
        m = re.search(rb"\[APPENDUID \d+ ([0-9:,]+)\]", _as_bytes(resp))
        if not m:
            raise RuntimeError(f"MULTIAPPEND response has no APPENDUID: {resp!r}")
        uids.extend(_expand_uid_set(m.group(1).decode()))
    return uids


def _as_bytes(resp: object) -> bytes:
    """Flatten an imaplib/IMAPClient response (bytes, str or nested tuples) to bytes."""
    if isinstance(resp, bytes):
        return resp
    if isinstance(resp, str):
        return resp.encode()
    if isinstance(resp, list | tuple):
        return b" ".join(_as_bytes(x) for x in resp)
    return str(resp).encode()


def _expand_uid_set(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        a, _, b = part.partition(":")
        out.extend(range(int(a), int(b or a) + 1))
    return out


# -- corpus ------------------------------------------------------------------


def corpus_messages() -> list[tuple[str, bytes]]:
    """[(path relative to tests/data/corpus, raw bytes)] of every corpus message, sorted."""
    files = sorted(p for p in CORPUS_DIR.glob("*/*") if p.is_file())
    return [(p.relative_to(CORPUS_DIR).as_posix(), p.read_bytes()) for p in files]


def folder_multiset(server: MailServer, user: User,
                    folders: Iterable[str]) -> Counter[tuple[str, bytes]]:
    """{(folder, BODY[] bytes): how often} over those of ``folders`` that exist: what an
    account holds, UIDs aside, for exactly-once assertions."""
    client = imap_login(server, user)
    try:
        names = {n for _, _, n in client.list_folders()}
        return Counter((f, raw) for f in folders if server_name(client, f) in names
                       for raw, _, _ in fetch_all(client, f).values())
    finally:
        client.logout()


def corpus_index() -> dict[str, dict[str, str]]:
    """The rows of tests/data/corpus/INDEX.tsv keyed by path."""
    with open(CORPUS_DIR / "INDEX.tsv", newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f, delimiter="\t")}


__all__ = [
    "CORPUS_DIR",
    "FetchedMessage",
    "append",
    "bulk_append",
    "corpus_index",
    "corpus_messages",
    "create_folder",
    "delimiter",
    "fetch_all",
    "folder_multiset",
    "imap_connect",
    "imap_login",
    "list_folders",
    "namespace_prefix",
    "path_name",
    "pop3",
    "seed_date",
    "seed_message",
    "seed_messages",
    "server_name",
    "tls_context",
]
