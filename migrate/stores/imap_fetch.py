"""UID FETCH for bulk reads: imaplib speaks the protocol, a lean parser reads the answer.

imapclient's response parser tokenises every byte outside the literals one
Python step at a time and builds a generator chain per response; for a batch
of bodies that is most of the client's CPU, and it runs while the archive
thread waits for the GIL. Here imaplib still sends the command and reads the
reply (tags, literals straight from the socket into one ``bytes`` each, BYE,
NO and BAD, exactly as ``IMAPClient.fetch`` does), and each untagged FETCH
response is then read with one regular expression per item when it has the
shape servers send for the items we ask for: ``UID``, ``FLAGS``,
``INTERNALDATE``, ``RFC822.SIZE``, ``MODSEQ``, a ``BODY[]`` literal, and Gmail's
``X-GM-MSGID``, ``X-GM-THRID`` and ``X-GM-LABELS`` (RFC 3501 §7.4.2, RFC 7162
§3.1.4, developers.google.com/gmail/imap/imap-extensions). Any response in
another shape (a quoted body, an item we did not ask for, odd spacing) goes to
imapclient's own parser, one response at a time, so the result is what ``IMAPClient.fetch``
returns: ``{uid: {b"SEQ": n, b"FLAGS": (...), ...}}``, with unsolicited
responses for other messages dropped.

One difference, on purpose: a FETCH response without a UID is an unsolicited
update keyed by sequence number (RFC 3501 §7.4.2: the server sends UID in every
response to UID FETCH), so it is dropped here, where imapclient would file it
under a UID equal to that sequence number. And another: a Gmail label that is an
atom stays bytes (imapclient turns ``2019`` into a number and ``NIL`` into None).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import Any

import imapclient
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

FetchData = dict[int, dict[bytes, Any]]

_HEAD = re.compile(rb"(\d+) \(")
# One item and the space after it; BODY[] ends the segment with its literal.
_ITEM = re.compile(
    rb"UID (?P<uid>\d+)"
    rb"|FLAGS \((?P<flags>[^()\"{}\[\]\r\n]*)\)"
    rb"|INTERNALDATE \"(?P<date>[^\"\\\r\n]*)\""
    rb"|RFC822\.SIZE (?P<size>\d+)"
    rb"|MODSEQ \((?P<modseq>\d+)\)"
    rb"|BODY\[\] (?:\{(?P<literal>\d+)\}\Z|(?P<nil>NIL))"
    rb"|X-GM-(?P<gmnumber>MSGID|THRID) (?P<gmvalue>\d+)"
    rb"|X-GM-LABELS \((?P<labels>(?:[^()\"{}\r\n]|\"(?:[^\"\\\r\n]|\\.)*\")*)\)"
)
# One label of X-GM-LABELS: a quoted string or an atom (RFC 3501 astring).
_LABEL = re.compile(rb'"((?:[^"\\\r\n]|\\.)*)"|([^\s"]+)')
_ESCAPE = re.compile(rb"\\(.)")


class _Unusual(Exception):
    """A response this parser does not read; imapclient's parser will."""


def uid_set(uids: Iterable[int]) -> bytes:
    """Sorted UIDs as an RFC 3501 sequence set with ranges ("1:400,402").

    imapclient lists every UID; for a 2,000-message listing that is a 12 KB
    command line where runs of consecutive UIDs, the usual case, take a few bytes.
    """
    out: list[bytes] = []
    run_start = prev = -2
    for uid in sorted(set(uids)):
        if uid == prev + 1:
            prev = uid
            continue
        if run_start >= 0:
            out.append(b"%d" % run_start if run_start == prev else b"%d:%d" % (run_start, prev))
        run_start = prev = uid
    if run_start >= 0:
        out.append(b"%d" % run_start if run_start == prev else b"%d:%d" % (run_start, prev))
    return b",".join(out)


def uid_fetch(client: imapclient.IMAPClient, uids: Sequence[int], items: Sequence[str]) -> FetchData:
    """``client.fetch(uids, items)`` with the lean parser; same result, same errors.

    Errors are imapclient's: a NO or BAD raises ``IMAPClientError``, a lost
    connection or a BYE ``IMAPClientAbortError`` (or ``OSError``).
    """
    if not uids:
        return {}
    return _fetch(client, uid_set(uids), items, set(uids))


class _From:
    """The UIDs from ``first`` on (what ``first:*`` asks for, without the one message
    RFC 3501 §6.4.8 adds when ``first`` is above the largest UID)."""

    def __init__(self, first: int) -> None:
        self.first = first

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and uid >= self.first


def uid_fetch_from(client: imapclient.IMAPClient, first: int, items: Sequence[str]) -> FetchData:
    """Every message from UID ``first`` on, in one round trip (no SEARCH first)."""
    return _fetch(client, b"%d:*" % first, items, _From(first))


def _fetch(client: imapclient.IMAPClient, uids: bytes, items: Sequence[str],
           wanted: Container[int]) -> FetchData:
    imap = client._imap
    tag = imap._command("UID", "FETCH", uids, "(" + " ".join(items).upper() + ")")
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    return parse_fetch(data, wanted)


def parse_fetch(data: list[Any], wanted: Container[int]) -> FetchData:
    """imaplib's untagged FETCH data as ``{uid: items}`` for the UIDs in ``wanted``."""
    out: FetchData = {}
    for group in _responses(data):
        try:
            parsed = [_parse(group)]
        except _Unusual:
            parsed = []
            for values in parse_fetch_response(group, False, False).values():
                parsed.append((values.pop(b"UID", None), values))
        for uid, values in parsed:
            if uid is not None and uid in wanted:
                out.setdefault(uid, {}).update(values)
    return out


def _responses(data: list[Any]) -> Iterator[list[Any]]:
    """imaplib's FETCH list, one response at a time: (text, literal) pairs end with a text."""
    group: list[Any] = []
    for element in data:
        if element is None:
            continue
        group.append(element)
        if isinstance(element, bytes):
            yield group
            group = []
    if group:
        yield group


def _parse(group: list[Any]) -> tuple[int | None, dict[bytes, Any]]:
    """(uid, items) of one response in the common shape (uid None: unsolicited)."""
    first = group[0][0] if isinstance(group[0], tuple) else group[0]
    head = _HEAD.match(first)
    if head is None:
        raise _Unusual
    values: dict[bytes, Any] = {b"SEQ": int(head.group(1))}
    uid: int | None = None
    pos = head.end()
    last = len(group) - 1
    closed = False
    for index, element in enumerate(group):
        text, literal = element if isinstance(element, tuple) else (element, None)
        if index:
            pos = 0
        end = len(text)
        while pos < end:
            if text[pos] == 0x20:  # the space between items
                pos += 1
                continue
            if index == last and pos == end - 1 and text[pos] == 0x29:  # the closing ")"
                closed = True
                break
            m = _ITEM.match(text, pos)
            if m is None:
                raise _Unusual
            kind = m.lastgroup
            if kind == "uid":
                uid = int(m.group("uid"))
            elif kind == "flags":
                flags = tuple(m.group("flags").split())
                if any(f.isdigit() or f.upper() == b"NIL" for f in flags):
                    raise _Unusual  # imapclient reads these atoms as numbers and None
                values[b"FLAGS"] = flags
            elif kind == "date":
                values[b"INTERNALDATE"] = _date(m.group("date"))
            elif kind == "size":
                values[b"RFC822.SIZE"] = int(m.group("size"))
            elif kind == "modseq":
                values[b"MODSEQ"] = (int(m.group("modseq")),)
            elif kind == "literal":
                if literal is None or len(literal) != int(m.group("literal")):
                    raise _Unusual
                values[b"BODY[]"] = literal
                literal = None
            elif kind == "gmvalue":
                values[b"X-GM-" + m.group("gmnumber")] = int(m.group("gmvalue"))
            elif kind == "labels":
                values[b"X-GM-LABELS"] = _labels(m.group("labels"))
            else:  # BODY[] NIL
                values[b"BODY[]"] = None
            pos = m.end()
        if literal is not None:  # a literal for an item we did not read
            raise _Unusual
    if not closed:
        raise _Unusual
    return uid, values


def _labels(text: bytes) -> tuple[bytes, ...]:
    """X-GM-LABELS's list, each label as its bytes (still modified UTF-7).

    Google's extension page shows labels as astrings: ``(\\Inbox \\Sent Important
    "Muy Importante")``. An atom stays text here: imapclient would make ``007`` the
    number 7 and ``NIL`` None, and the label would come back as another one.
    """
    out: list[bytes] = []
    for m in _LABEL.finditer(text):
        quoted, atom = m.groups()
        out.append(_ESCAPE.sub(rb"\1", quoted) if quoted is not None else atom)
    return tuple(out)


def _date(text: bytes) -> Any:
    try:
        return parse_to_datetime(text, normalise=False)
    except ValueError:
        return None  # as imapclient: an unreadable INTERNALDATE is no date


__all__ = ["FetchData", "parse_fetch", "uid_fetch", "uid_fetch_from", "uid_set"]
