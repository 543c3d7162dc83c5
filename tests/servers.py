"""What every real test server offers, so that one test runs against each.

``DovecotServer`` (tests/dovecot.py) and ``CyrusServer`` (tests/cyrus.py) both
satisfy :class:`MailServer`; the ``server`` fixture in tests/conftest.py is
parametrised over :data:`SERVERS`, and ``account`` / ``imap`` are built on it.
A test that needs one server's own tools (doveadm, Dovecot's quota plugin)
asks for ``dovecot`` by name and runs there only.

The attributes below are the differences a test may need to know. How each
server changes what it stores is established by tests/test_fixture.py
(Dovecot) and tests/test_servers.py (both) and described in the docstring of
tests/seeding.py; :meth:`MailServer.stored` is the rule those tests pin down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from dovecot import User

#: The server kinds the ``server`` fixture is parametrised over.
SERVERS = ("dovecot", "cyrus")

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
# A header line's 8-bit bytes; the header ends at the first empty line.
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
# RFC 5322 field name: printable US-ASCII except ':', then the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+:")


class MailServer(Protocol):
    #: "dovecot" or "cyrus"
    kind: str
    host: str
    imap_port: int
    pop3_port: int
    #: implicit TLS ports; the certificate is for localhost/127.0.0.1, signed by ``ca_file``
    imaps_port: int
    pop3s_port: int
    ca_file: Path
    #: the hierarchy delimiter ('/' or '.')
    separator: str
    #: the personal namespace prefix ("" on Dovecot here, "INBOX." on Cyrus)
    namespace_prefix: str
    #: {folder: special-use attribute} created for every new user
    special_use: dict[str, str]
    #: CREATE "A/B/C" leaves "A" and "A/B" as \Noselect placeholders (Dovecot) or
    #: makes them real, selectable mailboxes (Cyrus)
    noselect_parents: bool
    #: INTERNALDATE comes back in UTC (Cyrus) rather than the server's local zone
    internaldate_utc: bool

    def add_user(self) -> User: ...

    def start(self) -> MailServer: ...

    def stop(self) -> None: ...

    def log_text(self) -> str: ...


def stored(kind: str, raw: bytes, *, as_sent: bool = False) -> bytes | None:
    """What BODY[] returns after APPENDing ``raw`` to a server of ``kind``; None: refused.

    By default ``raw`` goes through ``seeding.append`` (imaplib's APPEND, which
    turns every CR, LF and CRLF into CRLF before sending); ``as_sent=True`` is
    for bytes sent unchanged (``bulk_append``'s MULTIAPPEND, and mailmigrate's
    own APPEND). Line ends: a bare LF comes back as CRLF from Dovecot and is
    refused by Cyrus ("Message contains bare newlines"); a bare CR is kept by
    both, except that Dovecot drops one at the very end. Dovecot stores a NUL
    as 0x80 and refuses only an empty message.
    Cyrus refuses a NUL, an empty message and a message with a header line
    that is not ``name:`` (a space before the colon, a body with no header;
    a first ``From `` envelope line is let through); it replaces every 8-bit
    byte of the top-level header with 'X' (``munge8bit: yes``, its default)
    and keeps 8-bit bytes in the body.
    """
    if not raw:
        return None
    if as_sent:
        if kind == "cyrus" and _BARE_LF.search(raw):
            return None
        out = _BARE_LF.sub(b"\r\n", raw)
    else:
        out = _LINE_END.sub(b"\r\n", raw)
    if kind == "dovecot":
        if as_sent and out.endswith(b"\r"):
            out = out[:-1]  # a lone CR at the very end is dropped
        return out.replace(b"\0", b"\x80")
    if b"\0" in out:
        return None
    head, sep, body = out.partition(b"\r\n\r\n")
    for n, line in enumerate(head.split(b"\r\n")):
        if n == 0 and line.startswith(b"From "):
            continue  # an mbox envelope line is let through
        if line and line[:1] not in b" \t" and not _FIELD_NAME.match(line):
            return None
    return _EIGHT_BIT.sub(b"X", head) + sep + body


__all__ = ["SERVERS", "MailServer", "stored"]
