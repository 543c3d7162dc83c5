"""IMAP store (read side) on imapclient.

Design points that matter for fidelity and speed:
- bodies are fetched with BODY.PEEK[] from an EXAMINEd folder, so the
  source's \\Seen flags never change;
- INTERNALDATE is kept offset-aware (``normalise_times=False``);
- fetches go in batches bounded by bytes (the engine sizes them from
  RFC822.SIZE), because imapclient holds a whole response in memory;
- an unchanged folder costs one STATUS: UIDVALIDITY, UIDNEXT and, where the
  server has CONDSTORE, HIGHESTMODSEQ tell the engine to skip it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

import imapclient
from imapclient import imap_utf7
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError, ProtocolError
from imapclient.response_parser import parse_response

from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.errors import (
    AuthError,
    ConnectError,
    FolderError,
    MessageError,
    SetupError,
    ThrottledError,
)
from migrate.folders import make_folder, special_use_of
from migrate.labels import canonical, folder_label, role
from migrate.model import (
    FlagChange,
    Folder,
    FolderCheckpoint,
    FolderStatus,
    Message,
    MessageRef,
    normalise_flags,
)
from migrate.stores import imap_io
from migrate.stores.imap_fetch import uid_fetch, uid_fetch_from

_T = TypeVar("_T")
LIST_CHUNK = 2000  # UIDs per RFC822.SIZE / FLAGS listing command
# STATUS commands sent before their answers are read: their answers (~100 bytes each)
# stay far below any socket buffer, so neither side can block the other.
STATUS_PIPELINE = 50
# Largest literal accepted outside a body fetch (folder names, headers): a
# server that announces more is lying or hostile.
LISTING_LITERAL_LIMIT = 1 << 20
LITERAL_SLACK = 1 << 20


class OversizedLiteral(MessageError):
    """The server announced a literal far larger than the message it had listed."""


THROTTLE_CODES = ("[THROTTLED]", "[UNAVAILABLE]", "[LIMIT]")


def _throttled(exc: BaseException, host: str) -> None:
    """Raise :class:`ThrottledError` when a NO/BAD carries a "slow down" response code.

    [THROTTLED] and [UNAVAILABLE] (RFC 5530) say "later"; [LIMIT] says "this
    request is too big": backing off and fetching in halves helps both.
    """
    text = str(exc)
    upper = text.upper()
    if any(code in upper for code in THROTTLE_CODES):
        raise ThrottledError(f"{host} asked us to slow down ({text.strip()[:160]})") from None


def bound_literals(client: imapclient.IMAPClient, limit: list[int], where: str) -> None:
    """Refuse literals above ``limit[0]`` bytes before reading them.

    imaplib reads an announced literal with one ``file.read(size)``, which
    allocates ``size`` bytes up front: a server announcing {3000000000}
    would take the memory bound with it. The caller moves the limit (the
    listed RFC822.SIZE of the batch, with slack) before each command.
    """
    imap = client._imap
    read = imap.read

    def bounded(size: int) -> bytes:
        if size > limit[0]:
            raise OversizedLiteral(f"{where} announced {size} bytes where at most {limit[0]} "
                                   "were expected; message skipped")
        data: bytes = read(size)
        return data

    imap.read = bounded


def quiet_imaplib(client: imapclient.IMAPClient) -> None:
    """Turn off the debug output imapclient switches on in imaplib.

    IMAPClient sets ``imaplib.IMAP4.debug = 5`` on every connection, so that
    imaplib formats a ``repr()`` of every line, every literal and every whole
    untagged response for a logger that then drops it: for a bulk FETCH that
    is most of the CPU time and a second copy of each batch in memory. Level 0
    keeps imaplib's own small ring of the last commands (used in its errors).
    """
    client._imap.debug = 0


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Verified TLS by default; a private CA can be trusted with --cafile."""
    return ssl.create_default_context(cafile=endpoint.cafile)


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> SetupError:
    return SetupError(f"TLS certificate of {where} not trusted ({exc.verify_message}); "
                      "use --cafile for a private CA")


def _unreachable(where: str, exc: BaseException) -> ConnectError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = f"cannot connect to {where}: {reason}; check the host name, port and network"
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
        return SetupError(text)  # no such name: trying again cannot help
    return ConnectError(text)


def login_refusal(exc: LoginError) -> bool:
    """True when the server refused the login (a tagged NO or BAD), False when the
    connection dropped under it.

    imapclient raises LoginError for both: it wraps whatever imaplib raised,
    and imaplib raises ``abort`` for an EOF, a reset or a BYE. A BYE that
    names [AUTHENTICATIONFAILED] (RFC 5530) is a refusal all the same.
    """
    text = str(exc).upper()
    if "[AUTHENTICATIONFAILED]" in text or "[AUTHORIZATIONFAILED]" in text:
        return True
    return not isinstance(exc.__context__, IMAPClientAbortError | OSError)


def connect_imap(endpoint: Endpoint, password: PasswordSource,
                 timeout: float = 60.0) -> imapclient.IMAPClient:
    """Connect, secure and log in, mapping every failure to a typed error.

    A connection that drops anywhere in here (greeting, TLS, CAPABILITY,
    LOGIN/AUTHENTICATE) is a :class:`ConnectError`, which the retry wrappers
    retry; only the server's explicit refusal is an :class:`AuthError` (exit 3).
    ``timeout`` is "no byte moved for that long" (:mod:`migrate.stores.imap_io`).
    """
    where = f"{endpoint.host}:{endpoint.port}"
    context = tls_context(endpoint) if endpoint.tls != "none" else None
    try:
        client = imapclient.IMAPClient(
            endpoint.host, port=endpoint.port, ssl=endpoint.tls == "implicit",
            ssl_context=context, timeout=timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        raise _untrusted(where, exc) from None
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS handshake with {where} failed ({exc.reason}); "
                           "check the port and that the server speaks TLS there") from None
    except (OSError, IMAPClientError) as exc:
        raise _unreachable(where, exc) from None
    quiet_imaplib(client)
    client.normalise_times = False
    try:
        imap_io.install(client._imap, timeout)
        if endpoint.tls == "starttls":
            if not client.has_capability("STARTTLS"):
                client.shutdown()
                raise SetupError(
                    f"{where} does not offer STARTTLS; use imaps:// "
                    "(or ?tls=none for a loopback test server)"
                )
            client._imap.sock.settimeout(timeout)  # the handshake: one bounded wait
            client.starttls(context)
            imap_io.install(client._imap, timeout)
        _login(client, endpoint, password)
    except LoginError as exc:
        _quiet_close(client)
        text = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        text = re.sub(r"^b(['\"])(.*)\1$", r"\2", text.strip())  # imapclient's str(bytes)
        if not login_refusal(exc):
            raise ConnectError(f"connection to {where} lost during login ({text[:120]})"
                               ) from None
        if any(code in text.upper() for code in THROTTLE_CODES):
            # A refusal for now, not for these credentials: Dovecot's per-user
            # connection cap answers NO [UNAVAILABLE], providers [LIMIT].
            raise ThrottledError(f"{where} refused the login for now ({text.strip()[:160]})") from None
        raise AuthError(
            f"authentication failed for {endpoint.user} at {where} ({text.strip()[:120]}); "
            "check the user name and password"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        _quiet_close(client)
        raise _untrusted(where, exc) from None
    except (OSError, ssl.SSLError, IMAPClientError) as exc:
        _quiet_close(client)
        raise ConnectError(f"connection to {where} failed during login: {exc}") from None
    return client


def capabilities(client: imapclient.IMAPClient, host: str) -> set[str]:
    """The server's capabilities, upper-case; a drop while asking is a ConnectError."""
    try:
        caps = client.capabilities()
    except (OSError, IMAPClientError) as exc:
        raise ConnectError(f"connection to {host} lost while reading its capabilities ({exc})"
                           ) from None
    return {c.decode().upper() if isinstance(c, bytes) else str(c).upper() for c in caps}


def _login(client: imapclient.IMAPClient, endpoint: Endpoint, password: PasswordSource) -> None:
    """LOGIN with a password, or SASL XOAUTH2 / OAUTHBEARER with an access token.

    A refused token is most often an expired one (a reconnect an hour into a
    run), so the token command runs once more and the login is tried again;
    a second refusal is a real authentication failure. A dropped connection
    is no refusal: it goes up at once (the token is not marked as refused).
    """
    if not password.is_oauth2 and endpoint.auth == "password":
        client.login(endpoint.user, password.get())
        return
    if endpoint.auth == "password":  # token given, mechanism not: prefer the standard one
        mech = "OAUTHBEARER" if client.has_capability("AUTH=OAUTHBEARER") else "XOAUTH2"
    else:
        mech = endpoint.auth.upper()
    token: str | None = None  # the one the server refused, after the first attempt
    for attempt in (0, 1):
        token = password.oauth2_token(refused=token)
        try:
            if mech == "OAUTHBEARER":
                client.oauthbearer_login(endpoint.user, token)
            else:
                client.oauth2_login(endpoint.user, token)
            return
        except LoginError as exc:
            if attempt or not login_refusal(exc):
                raise


def _quiet_close(client: imapclient.IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


# What imapclient raises when a reply has a shape it cannot parse (beside its
# ProtocolError): the connection is still in step (imaplib read the whole
# response first), so the caller may fall back or fail that folder alone.
REPLY_SHAPE_ERRORS = (ProtocolError, ValueError, TypeError, IndexError, KeyError, AttributeError)


def _special_use_on_request(client: imapclient.IMAPClient,
                            listed: list[tuple[Any, Any, Any]]) -> dict[Any, tuple[Any, ...]]:
    """{folder name: attributes} from ``LIST "" "*" RETURN (SPECIAL-USE)``.

    RFC 6154 lets a server announce SPECIAL-USE yet mark its folders only when
    asked this way; a plain LIST then shows no \\Sent anywhere. Asked only in
    that case (one more round trip), and any failure just keeps the plain
    listing: the folder names still work as a fallback.
    """
    if not client.has_capability("SPECIAL-USE") or any(
            special_use_of(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
            for flags, _, _ in listed):
        return {}
    try:
        # imapclient has no LIST-EXTENDED call; its own list parser reads the answer.
        typ, data = client._imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
        if typ != "OK":
            return {}
        typ, data = client._imap._untagged_response(typ, data, "LIST")
        return {name: tuple(flags) for flags, _, name in client._proc_folder_list(data)}
    except (OSError, IMAPClientError, *REPLY_SHAPE_ERRORS):
        return {}


def _number(value: Any) -> int | None:
    """An IMAP number from a parsed reply, or None when it is not one (NIL, a word)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if text.isdigit():
            return int(text)
    return None


_PARENS = re.compile(rb"\([^()]*\)")


def lenient_search_reply(lines: Any) -> list[int] | None:
    """UIDs from SEARCH response lines, with any "(MODSEQ n)" group set aside; None when
    something else is there."""
    out: list[int] = []
    for line in lines if isinstance(lines, list | tuple) else [lines]:
        if line is None:
            continue
        if not isinstance(line, bytes):
            return None
        for token in _PARENS.sub(b" ", line).split():
            if not token.isdigit():
                return None
            out.append(int(token))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def personal_namespace(client: imapclient.IMAPClient, host: str) -> tuple[str | None, str | None]:
    """(prefix, delimiter) of the personal namespace (RFC 2342); ("", None) for none.

    Cyrus and Courier answer (("INBOX." ".")), Dovecot usually (("" "/")).
    The prefix is None when the server does not say (no NAMESPACE, or an
    answer that cannot be parsed): :func:`list_imap_folders` then judges by
    the listing.
    """
    if not client.has_capability("NAMESPACE"):
        return None, None
    try:
        ns = client.namespace()
        if not ns.personal:
            return "", None
        prefix, delim = ns.personal[0]
        return _text(prefix), (_text(delim) or None)
    except (IMAPClientAbortError, OSError) as exc:
        raise ConnectError(f"connection to {host} lost while asking for its namespace: {exc}"
                           ) from None
    except (IMAPClientError, *REPLY_SHAPE_ERRORS):  # NO, BAD, or a shape we cannot read
        return None, None


def prefix_from_listing(listed: list[tuple[Any, Any, Any]]) -> str:
    """"INBOX." when every folder is INBOX or below "INBOX." (a prefix server that
    did not say so in a form we could read); else ""."""
    names = [_text(name) for _, _, name in listed]
    delims = {_text(d) for _, d, _ in listed if d}
    below = [n for n in names if n.upper().startswith("INBOX.")]
    if delims == {"."} and below and all(n.upper() == "INBOX" or n in below for n in names):
        return "INBOX."
    return ""


def list_imap_folders(client: imapclient.IMAPClient, host: str,
                      namespace_prefix: str | None = None, *, ask: bool = True) -> list[Folder]:
    """Every folder of an account (decoded, '/'-pathed, relative to the personal
    namespace), parents before children.

    Shared by the read side and the write side (which needs the
    destination's folders and their special-use attributes). The namespace
    is asked for unless the caller did (``ask=False``; ``namespace_prefix``
    None then means the server did not say).
    """
    if ask and namespace_prefix is None:
        namespace_prefix = personal_namespace(client, host)[0]
    try:
        listed = client.list_folders()
    except (IMAPClientAbortError, OSError) as exc:
        raise ConnectError(f"LIST failed on {host}: {exc}") from None
    except REPLY_SHAPE_ERRORS as exc:
        raise FolderError(f"the folder list of {host} cannot be read ({_text(exc)[:160]}); "
                          "nothing can be copied without it") from None
    except IMAPClientError as exc:
        raise ConnectError(f"LIST failed on {host}: {exc}") from None
    if namespace_prefix is None:
        namespace_prefix = prefix_from_listing(listed)
    on_request = _special_use_on_request(client, listed)
    folders: dict[str, Folder] = {}
    for flags, delimiter, name in listed:
        attrs = [f.decode() if isinstance(f, bytes) else str(f)
                 for f in (*flags, *on_request.get(name, ()))]
        delim = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
        server_name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        folder = make_folder(server_name, delim, attrs, namespace_prefix)
        folders[folder.name] = folder
    # Parents the server did not list (some servers omit them) still shape the tree.
    for folder in list(folders.values()):
        parts = folder.name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in folders and folder.delimiter:
                levels = folder.server_name.split(folder.delimiter)
                depth = len(levels) - (len(parts) - i)
                server_parent = folder.delimiter.join(levels[:depth])
                folders[parent] = make_folder(server_parent, folder.delimiter, ["\\Noselect"],
                                              namespace_prefix)
    return sorted(folders.values(), key=lambda f: f.name)


# X-GM-EXT-1 (https://developers.google.com/gmail/imap/imap-extensions): the message's
# unique ID, its thread and its labels, fetched with the listing so that a message shown
# in several label folders is known as one before any body moves.
GM_ITEMS = ("FLAGS", "INTERNALDATE", "X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS")


def gmail_labels(value: Any) -> tuple[str, ...]:
    """X-GM-LABELS as text: modified UTF-7 decoded, system labels in one spelling."""
    out: list[str] = []
    for item in value if isinstance(value, list | tuple) else ():
        if isinstance(item, int):
            item = str(item).encode()  # a label that is all digits is parsed as a number
        elif item is None:
            item = b"NIL"  # imapclient's reading of the atom NIL; a label is an astring
        text = imap_utf7.decode(item) if isinstance(item, bytes) else str(item)
        label = canonical(text)
        if label and label not in out:
            out.append(label)
    return tuple(out)


def gmail_meta(folder: Folder, item: dict[bytes, Any]
               ) -> tuple[str | None, tuple[str, ...] | None, str | None]:
    """(X-GM-MSGID, X-GM-LABELS, X-GM-THRID) of one FETCH item.

    The folder's own label is added where the answer leaves it out (Gmail does not
    always list the label of the selected folder): a message listed in "Work" has
    the label Work, whatever the answer says.
    """
    gid = _number(item.get(b"X-GM-MSGID"))
    thread = _number(item.get(b"X-GM-THRID"))
    labels = gmail_labels(item.get(b"X-GM-LABELS", ()))
    own = folder_label(folder) if role(folder) == "label" else None
    if own is not None and own not in labels:
        labels = (*labels, own)
    return (str(gid) if gid is not None else None, labels,
            str(thread) if thread is not None else None)


class ImapSource:
    """Reads folders and messages from an IMAP account."""

    def __init__(self, endpoint: Endpoint, password: PasswordSource, timeout: float = 60.0):
        self.endpoint = endpoint
        self._password = password
        self._timeout = timeout
        self._limit = [LISTING_LITERAL_LIMIT]
        self.client = self._connect()
        caps = capabilities(self.client, endpoint.host)
        self.condstore = "CONDSTORE" in caps or "QRESYNC" in caps
        #: Gmail (X-GM-EXT-1): every listed message carries its X-GM-MSGID (the ``gid``
        #: that lets a destination link a message it holds instead of fetching it
        #: again), its X-GM-THRID and X-GM-LABELS.
        self.gmail = "X-GM-EXT-1" in caps
        self._selected: str | None = None
        self._exists = LIST_CHUNK + 1  # messages in the selected folder (EXISTS)
        self._uidvalidity: dict[str, int] = {}

    def _connect(self) -> imapclient.IMAPClient:
        client = connect_imap(self.endpoint, self._password, self._timeout)
        bound_literals(client, self._limit, self.endpoint.host)
        return client

    def reconnect(self) -> None:
        """Drop the connection and log in afresh (for :mod:`migrate.engine.retry`).

        After a socket error imapclient's state is unknown (a half-read
        response may sit in its buffer), so the old client is never reused:
        a new one is made and the next call SELECTs its folder again.
        """
        imap_io.abort(getattr(self.client._imap, "sock", None))
        _quiet_close(self.client)
        self._selected = None
        self._limit[0] = LISTING_LITERAL_LIMIT
        self.client = self._connect()

    # -- helpers ----------------------------------------------------------------
    def _select(self, folder: Folder) -> None:
        if self._selected != folder.server_name:
            try:
                info = self.client.select_folder(folder.server_name, readonly=True)
            except (IMAPClientAbortError, OSError) as exc:
                raise self._guard(f"opening {folder.name!r}", exc) from None
            except REPLY_SHAPE_ERRORS as exc:
                raise self._shape(f"SELECT {folder.name!r}", exc) from None
            except IMAPClientError as exc:
                _throttled(exc, self.endpoint.host)
                raise MessageError(f"cannot open folder {folder.name!r}: {exc}") from None
            self._exists = int(info.get(b"EXISTS", LIST_CHUNK + 1))
            seen = self._uidvalidity.get(folder.server_name)
            now = _number(info.get(b"UIDVALIDITY"))
            if seen is not None and now is not None and now != seen:
                # UIDs from STATUS no longer name the same messages: nothing of
                # this folder may be stored under them in this run.
                raise FolderError(
                    f"UIDVALIDITY of folder {folder.name!r} changed during the run "
                    f"({seen} -> {now}); the folder is skipped now and "
                    "scanned afresh by the next run")
            self._selected = folder.server_name

    def _guard(self, what: str, exc: BaseException | None = None) -> ConnectError:
        """A lost connection, with the server's reason when it said goodbye (BYE)."""
        reason = str(exc) if isinstance(exc, IMAPClientAbortError) else ""
        if reason.startswith(("socket error", "command:", "unexpected", "TLS")):
            reason = ""  # imaplib's own words, not the server's
        bye = getattr(getattr(self.client, "_imap", None), "untagged_responses", {}).get("BYE")
        if bye:
            last = bye[-1]
            reason = last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)
        if reason:
            return ThrottledError(f"{self.endpoint.host} closed the connection while {what} "
                                  f"(server said: {reason[:160]})")
        return ConnectError(f"connection to {self.endpoint.host} lost while {what}")

    def _shape(self, what: str, exc: BaseException) -> FolderError:
        """A reply we cannot read: that folder fails alone (retrying cannot help)."""
        return FolderError(f"{self.endpoint.host} answered {what} in a form that cannot be read "
                           f"({type(exc).__name__}: {str(exc)[:120]}); the folder is skipped "
                           "and tried again by the next run")

    def _search(self, criteria: list[Any], folder: Folder, what: str) -> list[int]:
        """UID SEARCH; a reply imapclient cannot parse is read leniently.

        Cyrus answers a CONDSTORE search that matches nothing with
        ``* SEARCH (MODSEQ 12)``, which RFC 7162's grammar does not allow (the
        MODSEQ item follows at least one number) and imapclient refuses.
        """
        try:
            return list(self.client.search(criteria))
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"{what} {folder.name!r}", exc) from None
        except REPLY_SHAPE_ERRORS:
            pass
        except IMAPClientError as exc:
            _throttled(exc, self.endpoint.host)
            raise MessageError(f"cannot {what} {folder.name!r}: {exc}") from None
        try:
            data = self.client._raw_command_untagged(
                b"SEARCH", imapclient.imapclient._normalise_search_criteria(criteria, None))
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"{what} {folder.name!r}", exc) from None
        except IMAPClientError as exc:
            raise MessageError(f"cannot {what} {folder.name!r}: {exc}") from None
        uids = lenient_search_reply(data)
        if uids is None:
            raise self._shape(f"SEARCH in {folder.name!r}", ValueError(repr(data)[:80]))
        return uids

    # -- SourceStore --------------------------------------------------------------
    def list_folders(self) -> list[Folder]:
        return list_imap_folders(self.client, self.endpoint.host)

    def transfer_order(self, folders: Sequence[Folder]) -> list[list[Folder]]:
        """Gmail: All Mail, Spam and Trash first (every message is in exactly one of
        them), the label folders after, so that they only link (base.OrderedSource)."""
        if not self.gmail:
            return [list(folders)]
        first = [f for f in folders if role(f) in ("all", "outside")]
        return [first, [f for f in folders if f not in first]]

    def status(self, folder: Folder) -> FolderStatus:
        items = self._status_items()
        st = self._status(folder, items)
        if st is None and self.condstore:
            st = self._status(folder, items[:3])  # the plain STATUS, without CONDSTORE
        if st is None:
            raise self._shape(f"STATUS {folder.name!r}", ValueError("no MESSAGES/UIDNEXT/"
                                                                     "UIDVALIDITY"))
        uidvalidity, uidnext, messages, modseq = st
        self._uidvalidity[folder.server_name] = uidvalidity
        return FolderStatus(uidvalidity=uidvalidity, uidnext=uidnext, messages=messages,
                            highestmodseq=modseq)

    def statuses(self, folders: Sequence[Folder]) -> list[FolderStatus | MessageError]:
        """STATUS of every folder, pipelined (RFC 3501 §5.5): sent STATUS_PIPELINE at a
        time and answered together, so a run's first step costs one round trip per
        STATUS_PIPELINE folders, not one per folder (a no-op run over a 30 ms link with
        15 folders: 15 round trips fewer). A folder whose answer is not a readable OK
        is asked again on its own (:meth:`status`: its error, its fallbacks)."""
        out: list[FolderStatus | MessageError] = []
        for start in range(0, len(folders), STATUS_PIPELINE):
            chunk = folders[start:start + STATUS_PIPELINE]
            for folder, answer in zip(chunk, self._pipelined_status(chunk), strict=True):
                if answer is None:
                    try:
                        out.append(self.status(folder))
                    except MessageError as exc:
                        out.append(exc)
                    continue
                uidvalidity, uidnext, messages, modseq = answer
                self._uidvalidity[folder.server_name] = uidvalidity
                out.append(FolderStatus(uidvalidity=uidvalidity, uidnext=uidnext,
                                        messages=messages, highestmodseq=modseq))
        return out

    def _pipelined_status(self, folders: Sequence[Folder]
                          ) -> list[tuple[int, int, int, int | None] | None]:
        """The answers to one pipelined STATUS per folder: the values, or None for a
        NO, a BAD or a reply that cannot be read. The commands go out in one write,
        formed and tagged as imaplib's ``_command`` forms them (the names quoted by
        imapclient, never a literal), before the first answer is read; imaplib files
        each untagged STATUS before its tagged completion, which comes before the next
        command's answers (one connection answers in order)."""
        items = self._status_items()
        imap = self.client._imap
        what = ("(" + " ".join(items) + ")").encode("ascii")
        answers: list[tuple[int, int, int, int | None] | None] = []
        try:
            for typ in ("OK", "NO", "BAD"):  # as _command does: these belong to one command
                imap.untagged_responses.pop(typ, None)
            tags: list[bytes] = []
            lines: list[bytes] = []
            for folder in folders:
                tags.append(imap._new_tag())
                lines.append(tags[-1] + b" STATUS "
                             + self.client._normalise_folder(folder.server_name) + b" " + what
                             + b"\r\n")
            imap.send(b"".join(lines))
            for tag in tags:
                try:
                    typ, data = imap._command_complete("STATUS", tag)
                except IMAPClientAbortError:
                    raise
                except IMAPClientError:  # BAD: asked again alone, which says why
                    answers.append(None)
                    continue
                typ, data = imap._untagged_response(typ, data, "STATUS")
                answers.append(self._status_answer(data, items) if typ == "OK" else None)
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard("reading the status of the folders", exc) from None
        return answers

    def _status_items(self) -> list[str]:
        return ["MESSAGES", "UIDNEXT", "UIDVALIDITY", *(("HIGHESTMODSEQ",) if self.condstore else ())]

    @staticmethod
    def _status_answer(data: list[Any], items: list[str]
                       ) -> tuple[int, int, int, int | None] | None:
        """One untagged STATUS answer read as imapclient's ``folder_status`` reads it."""
        try:
            response = parse_response([d for d in data if d is not None])
            pairs = list(response[-1])
            return ImapSource._status_values(dict(zip(pairs[::2], pairs[1::2], strict=True)),
                                             items)
        except REPLY_SHAPE_ERRORS:
            return None

    def _status(self, folder: Folder, items: list[str]
                ) -> tuple[int, int, int, int | None] | None:
        """(UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ), or None for a reply we
        cannot read (RFC 3501 status-att-list, RFC 7162 HIGHESTMODSEQ)."""
        try:
            st = self.client.folder_status(folder.server_name, items)
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"reading the status of {folder.name!r}", exc) from None
        except REPLY_SHAPE_ERRORS:
            return None
        except IMAPClientError as exc:
            _throttled(exc, self.endpoint.host)
            raise MessageError(f"STATUS failed for folder {folder.name!r}: {exc}") from None
        return self._status_values(st, items)

    @staticmethod
    def _status_values(st: Any, items: list[str]) -> tuple[int, int, int, int | None] | None:
        if not isinstance(st, dict):
            return None
        values = [_number(st.get(key)) for key in (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES")]
        if any(v is None for v in values):
            return None
        uidvalidity, uidnext, messages = (int(v or 0) for v in values)
        modseq = _number(st.get(b"HIGHESTMODSEQ")) if "HIGHESTMODSEQ" in items else None
        if "HIGHESTMODSEQ" in items and modseq is None:
            return None  # asked for and unreadable: the plain STATUS decides
        return uidvalidity, uidnext, messages, modseq

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        self._select(folder)
        first = checkpoint.last_uid + 1
        items = ["RFC822.SIZE", *(GM_ITEMS if self.gmail else ())]
        if since is None and self._exists <= LIST_CHUNK:
            # A folder this small answers "UID FETCH n:* RFC822.SIZE" in one bounded
            # response: one round trip, where SEARCH and then FETCH take two. SEARCH
            # stays for a date filter and for large folders (listed in chunks).
            sizes = self._listing(folder, uid_fetch_from, self.client, first, items)
            for uid in sorted(sizes):
                yield self._ref(folder, uid, sizes[uid])
            return
        criteria: list[Any] = ["UID", f"{first}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        # A set: a server that lists a UID twice gets it fetched once.
        uids = sorted({u for u in self._search(criteria, folder, "list messages of")
                       if u > checkpoint.last_uid})
        for start in range(0, len(uids), LIST_CHUNK):
            chunk = uids[start:start + LIST_CHUNK]
            sizes = self._listing(folder, uid_fetch, self.client, chunk, items)
            for uid in chunk:
                data = sizes.get(uid)
                if data is not None:  # None: expunged meanwhile
                    yield self._ref(folder, uid, data)

    def _ref(self, folder: Folder, uid: int, data: dict[bytes, Any]) -> MessageRef:
        """One listed message; on Gmail with its X-GM-MSGID, labels, thread, flags, date."""
        size = _number(data.get(b"RFC822.SIZE")) or 0
        if not self.gmail:
            return MessageRef(key=str(uid), uid=uid, size=size)
        internaldate = data.get(b"INTERNALDATE")
        gid, labels, thread = gmail_meta(folder, data)
        return MessageRef(key=str(uid), uid=uid, size=size,
                          flags=normalise_flags(data.get(b"FLAGS", ())),
                          internaldate=internaldate if isinstance(internaldate, datetime) else None,
                          gid=gid, labels=labels, thread=thread)

    def _listing(self, folder: Folder, command: Callable[..., _T], *args: Any) -> _T:
        """Run one listing command, with the listing's error mapping."""
        try:
            return command(*args)
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"listing {folder.name!r}", exc) from None
        except REPLY_SHAPE_ERRORS as exc:
            raise self._shape(f"FETCH RFC822.SIZE in {folder.name!r}", exc) from None
        except IMAPClientError as exc:
            _throttled(exc, self.endpoint.host)
            raise MessageError(f"cannot list messages of {folder.name!r}: {exc}") from None

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        if checkpoint.last_uid <= 0:
            return
        self._select(folder)
        criteria: list[Any] = ["UID", f"1:{checkpoint.last_uid}"]
        if self.condstore and checkpoint.highestmodseq:
            # Only messages whose metadata changed since the last complete pass.
            try:
                uids = self._search([*criteria, "MODSEQ", str(checkpoint.highestmodseq + 1)],
                                    folder, "read flags of")
            except FolderError:
                # A CONDSTORE answer we cannot read: the plain way, every FLAGS.
                uids = self._search(criteria, folder, "read flags of")
        else:
            uids = self._search(criteria, folder, "read flags of")
        uids = sorted(u for u in set(uids) if u <= checkpoint.last_uid)
        try:
            for start in range(0, len(uids), LIST_CHUNK):
                data = uid_fetch(self.client, uids[start:start + LIST_CHUNK],
                                 ["FLAGS", "X-GM-LABELS"] if self.gmail else ["FLAGS"])
                for uid in sorted(data):
                    yield FlagChange(key=str(uid), uid=uid,
                                     flags=normalise_flags(data[uid].get(b"FLAGS", ())),
                                     labels=gmail_meta(folder, data[uid])[1] if self.gmail
                                     else None)
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"reading flags of {folder.name!r}", exc) from None
        except REPLY_SHAPE_ERRORS as exc:
            raise self._shape(f"FETCH FLAGS in {folder.name!r}", exc) from None
        except IMAPClientError as exc:
            _throttled(exc, self.endpoint.host)
            raise MessageError(f"cannot read flags of {folder.name!r}: {exc}") from None

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        self._select(folder)
        uids = [r.uid for r in refs if r.uid is not None]
        if not uids:
            return
        # No literal may exceed what was listed for the batch (plus slack for
        # servers whose RFC822.SIZE is slightly off).
        self._limit[0] = 2 * max(r.size for r in refs) + LITERAL_SLACK
        try:
            data = uid_fetch(self.client, uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE",
                                                 *(GM_ITEMS[2:] if self.gmail else ())])
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"fetching from {folder.name!r}", exc) from None
        except REPLY_SHAPE_ERRORS as exc:
            raise MessageError(f"{self.endpoint.host} answered FETCH in {folder.name!r} in a form "
                               f"that cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
                               ) from None
        except IMAPClientError as exc:
            _throttled(exc, self.endpoint.host)
            raise MessageError(f"FETCH failed in {folder.name!r}: {exc}") from None
        finally:
            self._limit[0] = LISTING_LITERAL_LIMIT
        wanted = set(uids)
        for uid in sorted(data):
            if uid not in wanted:
                continue
            item = data.pop(uid)
            raw = item.get(b"BODY[]")
            if raw is None:
                continue  # vanished or unreadable: stays "new" for the next run
            internaldate = item.get(b"INTERNALDATE")
            gid, labels, thread = gmail_meta(folder, item) if self.gmail else (None, None, None)
            yield Message(
                key=str(uid), uid=uid, raw=bytes(raw),
                flags=normalise_flags(item.get(b"FLAGS", ())),
                internaldate=internaldate if isinstance(internaldate, datetime) else None,
                gid=gid, labels=labels, thread=thread,
            )

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:
            _quiet_close(self.client)
