"""IMAP store, write side: the destination of ``restore`` and ``copy``.

Exactly once without a transaction that spans the server and us (see
:mod:`migrate.stores.imap_state` for the two-commit protocol). What this class adds:

- folders: each source folder is mapped (:mod:`migrate.folder_map`) and
  created when missing; a name the destination cannot hold is renamed
  predictably and reported;
- APPEND with flags, keywords and INTERNALDATE; one MULTIAPPEND per engine
  batch where offered (pipelined with LITERAL+), UIDs from UIDPLUS;
- finding messages already on the destination, put there by an earlier run
  that died before recording them (``doubt`` rows) or by another tool: same
  Message-ID (or header signature when there is none) and size, confirmed by
  the content sha256 of the fetched message, so a different message that
  merely shares a Message-ID is never taken for it. A destination UID that
  this job already recorded satisfies no second message, so a source that
  holds the same message twice gets it twice;
- per-message refusals (over quota, too big, rejected) are recorded and
  reported by folder and message; the run goes on and ends with exit 1.
  Keywords the destination refuses are dropped and reported, never fatal;
- APPENDs in batches bounded by bytes, sized from the measured upload rate so
  that a slow uplink is answered every few seconds, each batch with its own
  doubt/done commits (at most one batch is ever in doubt);
- the re-check of messages appended again after an unresolved doubt: an old
  APPEND that lands late leaves two copies, and the one this tool provably
  made (its own APPENDUID, identical bytes) is removed (docs/DESIGN.md,
  "In-doubt APPENDs");
- servers that rewrite what they store (8-bit header bytes, see
  :mod:`migrate.formats.rewrites`): a message is recognised by its
  rewrite-tolerant form too, so a rerun never appends it a second time.

Content is compared in the IMAP wire form (CRLF line ends; a NUL as
Dovecot stores it), because servers normalise bare LFs on output: a message
restored from an LF mbox comes back with CRLF and is still the same message.
It is sent with every bare LF as CRLF: APPEND takes an RFC 5322 message, whose
lines end in CRLF (RFC 3501 6.3.11, RFC 5322 2.3); Cyrus refuses a bare LF
("Message contains bare newlines") and Dovecot serves it as CRLF anyway, so
nothing a server would keep is changed (a bare CR, which both keep, is sent as
it is: docs/servers.md, "Bytes"). The archive keeps the source's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from migrate import clock
from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.config.profiles import Profile, folder_hints
from migrate.config.run_defaults import preset_of
from migrate.errors import ConnectError, MessageError, QuotaError, ThrottledError
from migrate.folder_map import FolderMapper, MapRule, Target
from migrate.formats import rewrites
from migrate.labels import DRAFT, SENT, SPAM, TRASH, canonical, folder_label, role
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import NullReporter, Reporter
from migrate.stores import imap_io
from migrate.stores.imap import (
    REPLY_SHAPE_ERRORS,
    THROTTLE_CODES,
    capabilities,
    connect_imap,
    list_imap_folders,
    personal_namespace,
    prefix_from_listing,
)
from migrate.stores.imap_state import JobState, Placement, Reappend

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_WS = re.compile(r"\s+")
# RFC 3501 atom-specials plus '\' (only system flags may start with it).
_ATOM_BAD = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})
SIG_HEADERS = ("date", "from", "to", "subject")
IDENT_FIELDS = "MESSAGE-ID DATE FROM TO SUBJECT"
HASH_FETCH_BYTES = 8 * 1024 * 1024
# One APPEND (MULTIAPPEND) carries at most this much, and aims to be answered
# within a quarter of --timeout at the upload rate measured so far.
APPEND_BATCH_BYTES = 8 * 1024 * 1024
FIRST_APPEND_BYTES = 256 * 1024  # before any rate is known
MIN_APPEND_BYTES = 64 * 1024
# Before the first answer tells the upload rate, an APPEND is given the time it needs
# at this rate (a slow DSL uplink) before its silence counts: its bytes may sit in a
# middlebox that acknowledges early, where no progress can be seen.
FLOOR_RATE = 50 * 1024
# How long a message appended again after an unresolved doubt is watched for a
# late first copy (docs/DESIGN.md, "In-doubt APPENDs": four times Linux's
# tcp_retries2 give-up time of ~15 minutes).
REAPPEND_WATCH = 3600.0


# -- message identity -------------------------------------------------------------
def appended_form(raw: bytes) -> bytes:
    """What APPEND sends for ``raw``: every bare LF as CRLF, all else unchanged (the same
    object when there is no bare LF: no copy of a large message)."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return _BARE_LF.sub(b"\r\n", raw)


def wire_form(raw: bytes) -> bytes:
    """The bytes an IMAP server gives back for ``raw``: CRLF line ends, NUL as 0x80."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _LINE_END.sub(b"\r\n", raw)
    if b"\0" in raw:
        raw = raw.replace(b"\0", b"\x80")
    return raw


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(wire_form(raw)).hexdigest()


def _head_lines(data: bytes) -> Iterator[bytes]:
    """``_LINE_END.split(data)``, lazily: a caller that stops at the blank line after the
    header never scans the body (splitting all of it was a copy's largest cost)."""
    start = 0
    for m in _LINE_END.finditer(data):
        yield data[start:m.start()]
        start = m.end()
    yield data[start:]


def header_fields(raw: bytes, names: Iterable[str], limit: int = 65536) -> dict[str, str]:
    """First value of each wanted header, unfolded; tolerant of any bytes."""
    wanted = set(names)
    out: dict[str, str] = {}
    current: str | None = None
    for line in _head_lines(raw[:limit]):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                out[current] += " " + line.decode("latin-1").strip()
            continue
        name, sep, value = line.partition(b":")
        key = name.decode("latin-1").strip().lower()
        current = None
        if sep and key in wanted and key not in out:
            out[key] = value.decode("latin-1").strip()
            current = key
    return {k: _WS.sub(" ", v).strip() for k, v in out.items()}


def _identity_of(fields: dict[str, str], loosen: Callable[[str], str] | None = None) -> str:
    msgid = fields.get("message-id", "")
    if msgid:
        return "id:" + (loosen(msgid) if loosen else msgid)
    sig = "\0".join(loosen(fields.get(h, "")) if loosen else fields.get(h, "")
                    for h in SIG_HEADERS)
    return "sig:" + hashlib.sha256(sig.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def identity(raw: bytes) -> str:
    """'id:<Message-ID>', or a signature of Date/From/To/Subject when there is none."""
    return _identity_of(header_fields(raw, ("message-id", *SIG_HEADERS)))


def loose_identity(raw: bytes) -> str:
    """:func:`identity` of the rewrite-tolerant header (see :mod:`migrate.formats.rewrites`)."""
    return _identity_of(header_fields(raw, ("message-id", *SIG_HEADERS)), rewrites.loosen)


def identities(raw: bytes) -> tuple[str, str]:
    """(:func:`identity`, :func:`loose_identity`) from one read of the header."""
    fields = header_fields(raw, ("message-id", *SIG_HEADERS))
    return _identity_of(fields), _identity_of(fields, rewrites.loosen)


def loose_hash(raw: bytes) -> str:
    """sha256 of the rewrite-tolerant wire form: equal for a message and a server's rewrite."""
    return rewrites.loose_hash(wire_form(raw))


def describe(raw: bytes) -> str:
    """A short human handle for a message in reports: Message-ID, else Subject."""
    fields = header_fields(raw, ("message-id", "subject"))
    if fields.get("message-id"):
        return f"Message-ID {fields['message-id'][:120]}"
    if fields.get("subject"):
        return f"Subject {fields['subject'][:120]!r}"
    return f"{len(raw)} bytes, no Message-ID or Subject"


def _as_bytes(resp: object) -> bytes:
    if isinstance(resp, bytes):
        return resp
    if isinstance(resp, str):
        return resp.encode()
    if isinstance(resp, list | tuple):
        return b" ".join(_as_bytes(x) for x in resp)
    return str(resp).encode()


def _uid_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.decode().split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        out.extend(range(min(lo, hi), max(lo, hi) + 1))
    return out


def classify_refusal(text: str) -> str:
    """A short reason for a NO to APPEND, from its response code."""
    upper = text.upper()
    if "[OVERQUOTA]" in upper or "QUOTA" in upper:
        return "over quota"
    if "[TOOBIG]" in upper or "[LIMIT]" in upper or "TOO LARGE" in upper or "TOO BIG" in upper:
        return "too large"
    return "rejected"


@dataclass
class MessageFailure:
    """A message the destination refused; the run went on without it."""

    folder: str
    key: str
    message: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"folder": self.folder, "key": self.key, "message": self.message, "error": self.error}

    def __str__(self) -> str:
        return f"{self.folder}: {self.message} (key {self.key}): {self.error}"


@dataclass
class _Item:
    msg: Message
    sha: str
    size: int
    ident: str
    flags: tuple[str, ...]
    loose_ident: str = ""
    loose_sha: str = ""
    slack: int = 0
    result_uid: int | None = None
    error: str | None = None
    dropped: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # Gmail labels to set once it is appended


@dataclass(frozen=True)
class _Want:
    """What identifies one message on the destination (from the source, or a state row)."""

    ident: str
    sha: str
    sizes: frozenset[int]
    loose_ident: str | None = None
    loose_sha: str | None = None
    slack: int = 0

    @classmethod
    def of(cls, row: Placement | Reappend) -> _Want:
        loose_ident = row.loose_ident
        if loose_ident is None and row.ident.startswith("id:"):
            loose_ident = "id:" + rewrites.loosen(row.ident[3:])  # a schema-1 row
        return cls(row.ident, row.sha256, frozenset({row.size, row.raw_size or row.size}),
                   loose_ident, row.loose_sha, row.size_slack)

    def size_ok(self, size: int) -> bool:
        top = max(self.sizes)
        return size in self.sizes or top - self.slack <= size <= top

    def same(self, sha: str, loose: str) -> bool:
        return sha == self.sha or (self.loose_sha is not None and loose == self.loose_sha)


@dataclass
class _DestIndex:
    """Messages in a destination folder that this job has not placed (yet)."""

    uidvalidity: int | None
    by_ident: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    by_loose: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    hashes: dict[int, tuple[str, str]] = field(default_factory=dict)  # uid: (sha256, loose)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)

    def add(self, uid: int, size: int, header: bytes) -> None:
        self.by_ident.setdefault(identity(header), []).append((uid, size))
        self.by_loose.setdefault(loose_identity(header), []).append((uid, size))

    def candidates(self, want: _Want) -> list[int]:
        entries = list(self.by_ident.get(want.ident, ()))
        if want.loose_ident is not None:
            entries += self.by_loose.get(want.loose_ident, ())
        return sorted({uid for uid, size in entries
                       if uid not in self.claimed and want.size_ok(size)})

    def sizes(self) -> dict[int, int]:
        return {uid: size for entries in self.by_ident.values() for uid, size in entries}

    def claim(self, uid: int) -> None:
        self.claimed.add(uid)


class ImapDestination:
    """A :class:`DestinationStore` writing to an IMAP account, with a :class:`JobState`."""

    def __init__(
        self,
        endpoint: Endpoint,
        password: PasswordSource,
        state: JobState,
        *,
        rules: Sequence[MapRule] = (),
        prefix: str = "",
        special_use: bool = True,
        dry_run: bool = False,
        reporter: Reporter | None = None,
        timeout: float = 60.0,
        source_profile: Profile | None = None,
        default_names: dict[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self.dry_run = dry_run
        self.reporter = reporter or NullReporter()
        self._password = password
        self._timeout = timeout
        self.client = connect_imap(endpoint, password, timeout)
        try:
            caps = capabilities(self.client, endpoint.host)
            self.delimiter, ns_prefix = self._namespace()
            self.dest_folders = list_imap_folders(self.client, endpoint.host, ns_prefix, ask=False)
        except BaseException:
            self.close()  # the retry wrapper opens a fresh one: leave no socket behind
            raise
        self.can_multiappend = "MULTIAPPEND" in caps
        self.uidplus = "UIDPLUS" in caps
        self.appendlimit: int | None = None
        for cap in caps:
            if cap.startswith("APPENDLIMIT="):
                with contextlib.suppress(ValueError):
                    self.appendlimit = int(cap.split("=", 1)[1])
        # A \Noselect placeholder (the "A" Dovecot lists for "A/B") holds no mail and
        # takes none: it counts as missing, so mail for it CREATEs it for real.
        self._existing = {self._fold(f.server_name) for f in self.dest_folders if f.selectable}
        # Provider presets name special folders where servers announce no
        # attributes, and say what to call one that must be created here.
        hints = folder_hints(source_profile, preset_of(endpoint),
                             [f.name for f in self.dest_folders])
        #: Gmail (X-GM-EXT-1): a message is appended once, into All Mail (Sent Mail,
        #: Drafts for those), and its labels are set with STORE X-GM-LABELS; a label
        #: folder's copy of a message already placed only adds the label (``link``).
        self.gmail = "X-GM-EXT-1" in caps
        self._all_mail = next((f for f in self.dest_folders if f.special_use == "\\All"
                               and f.selectable), None) if self.gmail else None
        # default_names: what to call a special folder neither side's preset names (the
        # archive folder of Gmail's unlabelled messages, "Archive").
        create = {**(default_names or {}), **hints.create_names}
        if self._all_mail is not None:
            create["\\Archive"] = self._all_mail.name  # Gmail's archive is All Mail
        self.mapper = FolderMapper(self.dest_folders, self.delimiter, rules, prefix, special_use,
                                   ns_prefix, extra_names=hints.extra_names, create_names=create)
        self.labels_set = 0
        self.labels_dropped: list[dict[str, str]] = []
        self.targets: dict[str, Target] = {}
        self.created: list[str] = []
        self.renamed: list[dict[str, str]] = []
        self.failures: list[MessageFailure] = []
        self.keywords_dropped: list[dict[str, str]] = []
        self.found_existing = 0
        self.resolved_doubts = 0
        self.late_removed: list[dict[str, str]] = []  # our second copies, removed
        self.duplicates_left: list[dict[str, str]] = []  # two copies we may not resolve
        self._created_now: set[str] = set()
        self._index: dict[str, _DestIndex] = {}
        self._uidvalidity: dict[str, int | None] = {}
        self._uidnext: dict[str, int] = {}  # a lower bound of each folder's UIDNEXT
        self._permanent: dict[str, frozenset[str] | None] = {}
        self._selected: str | None = None
        self._rate: float | None = None  # upload bytes per second, measured over APPENDs
        self._reappended_now: set[tuple[str, str]] = set()  # (folder, key) appended again

    # -- reconnecting (see migrate.engine.retry) ------------------------------------------------
    def reconnect(self) -> None:
        """A fresh connection after a drop; every per-connection cache is forgotten.

        The folder indexes go too: an APPEND cut mid-flight may have landed,
        and only a fresh listing can tell (:meth:`settle`). The old connection
        is reset, not closed: what our kernel still had queued of it is
        dropped instead of reaching the server after the re-check.
        """
        imap_io.abort(getattr(getattr(self.client, "_imap", None), "sock", None))
        with contextlib.suppress(Exception):
            self.client.shutdown()
        self._selected = None
        self._index.clear()
        self._created_now.clear()
        self.client = connect_imap(self.endpoint, self._password, self._timeout)

    def settle(self, folder: Folder) -> None:
        """Resolve this folder's in-doubt APPENDs against the server (after a reconnect)."""
        if folder.selectable and not self.dry_run and self.state.doubts(folder.name):
            self._resolve_doubts(folder.name)

    # -- set-up ------------------------------------------------------------------------
    def _namespace(self) -> tuple[str, str]:
        """(delimiter, personal namespace prefix) of the destination.

        Without a NAMESPACE answer we can read, the prefix is judged from the
        listing (a server that lists only INBOX and "INBOX." folders has one).
        """
        prefix, delim = personal_namespace(self.client, self.endpoint.host)
        try:
            if not delim:
                rows = self.client.list_folders("", "")
                found = rows[0][1] if rows and rows[0][1] else b"/"
                delim = found.decode() if isinstance(found, bytes) else str(found)
            if prefix is None:
                prefix = prefix_from_listing(self.client.list_folders())
        except (OSError, IMAPClientError, *REPLY_SHAPE_ERRORS) as exc:
            raise ConnectError(f"cannot read the folder layout of {self.endpoint.host}: {exc}"
                               ) from None
        return delim, prefix

    @staticmethod
    def _fold(server_name: str) -> str:
        return "INBOX" if server_name.upper() == "INBOX" else server_name

    def plan(self, folders: Sequence[Folder]) -> dict[str, Target]:
        """Map every source folder at once (one folder per special use, see folder_map)."""
        self.targets.update(self.mapper.map_all(folders))
        for target in self.targets.values():
            if target.note and not any(r["from"] == target.source for r in self.renamed):
                self.renamed.append({"from": target.source, "to": target.path, "why": target.note})
                self.reporter.warn(f"folder {target.source!r} becomes {target.path!r}: {target.note}")
        return dict(self.targets)

    def _target(self, folder: Folder) -> Target:
        if folder.name not in self.targets:
            self.plan([folder])
        return self.targets[folder.name]

    @contextlib.contextmanager
    def _talking(self, what: str, refused: str) -> Iterator[None]:
        """Map a command's failures: a drop is a lost connection (retried), a NO/BAD is
        ``refused`` plus the server's words (that folder or message fails alone)."""
        try:
            yield
        except IMAPClientAbortError:
            raise self._guard(what) from None
        except IMAPClientError as exc:
            raise MessageError(f"{refused}: {exc}") from None
        except OSError:
            raise self._guard(what) from None

    def _guard(self, what: str, exc: BaseException | None = None) -> ConnectError:
        reason = f" ({str(exc)[:160]})" if exc is not None and str(exc) else ""
        return ConnectError(f"connection to {self.endpoint.host} lost while {what}{reason}; "
                            "run the same command again to resume")

    # -- folders -----------------------------------------------------------------------
    def _ensure_folder(self, target: Target) -> None:
        name = self._fold(target.server_name)
        if name in self._existing:
            return
        if self.dry_run:
            self._existing.add(name)
            self.created.append(target.path)
            return
        try:
            self.client.create_folder(target.server_name)
        except IMAPClientAbortError:
            raise self._guard(f"creating folder {target.path!r}") from None
        except IMAPClientError as exc:
            if "ALREADYEXISTS" not in str(exc).upper() and "EXISTS" not in str(exc).upper():
                raise MessageError(f"cannot create folder {target.path!r} on "
                                   f"{self.endpoint.host}: {exc}") from None
        except OSError:
            raise self._guard(f"creating folder {target.path!r}") from None
        # Only now is it there: a CREATE cut by a dropped connection is sent again.
        self._existing.add(name)
        self.created.append(target.path)
        with contextlib.suppress(IMAPClientError):
            self.client.subscribe_folder(target.server_name)
        self._created_now.add(name)

    def _dest_uidvalidity(self, server_name: str) -> int | None:
        if server_name not in self._uidvalidity:
            try:
                st = self.client.folder_status(server_name, ["UIDVALIDITY"])
                self._uidvalidity[server_name] = int(st[b"UIDVALIDITY"])
            except IMAPClientAbortError:
                raise self._guard(f"reading the status of {server_name!r}") from None
            except IMAPClientError:
                self._uidvalidity[server_name] = None
            except OSError:
                raise self._guard(f"reading the status of {server_name!r}") from None
        return self._uidvalidity[server_name]

    def _select(self, server_name: str) -> None:
        """SELECT (read-write: EXAMINE shows no PERMANENTFLAGS) and note the allowed keywords."""
        if self._selected == server_name:
            return
        try:
            info = self.client.select_folder(server_name)
        except IMAPClientAbortError:
            raise self._guard(f"opening {server_name!r}") from None
        except IMAPClientError as exc:
            raise MessageError(f"cannot open folder {server_name!r} on the destination: {exc}"
                               ) from None
        except OSError:
            raise self._guard(f"opening {server_name!r}") from None
        self._selected = server_name
        perm = info.get(b"PERMANENTFLAGS")
        if perm is None:
            self._permanent[server_name] = None
        else:
            flags = {(f.decode() if isinstance(f, bytes) else str(f)).lower() for f in perm}
            self._permanent[server_name] = None if "\\*" in flags else frozenset(flags)
        uv = info.get(b"UIDVALIDITY")
        if uv is not None:
            self._uidvalidity[server_name] = int(uv)
        nxt = info.get(b"UIDNEXT")
        if nxt is not None:
            self._uidnext[server_name] = max(self._uidnext.get(server_name, 0), int(nxt))

    # -- finding messages already there ----------------------------------------------
    def _index_for(self, server_name: str) -> _DestIndex:
        """Unclaimed messages of a destination folder, by identity and size (built once a run)."""
        if server_name in self._index:
            return self._index[server_name]
        uv = self._dest_uidvalidity(server_name)
        index = _DestIndex(uidvalidity=uv)
        self._index[server_name] = index
        if self._fold(server_name) in self._created_now:
            return index  # made by this run: nothing in it but what we recorded
        self._select(server_name)
        uv = self._uidvalidity.get(server_name)
        index.uidvalidity = uv
        uids = self._search(server_name, ["ALL"])
        claimed = self.state.claimed_uids(server_name, uv)
        self._scan(server_name, index, [u for u in uids if u not in claimed])
        return index

    def _search(self, server_name: str, criteria: list[Any]) -> list[int]:
        self._select(server_name)
        with self._talking(f"listing {server_name!r}",
                           f"cannot list folder {server_name!r} on the destination"):
            return sorted(set(self.client.search(criteria)))

    def _scan(self, server_name: str, index: _DestIndex, uids: Sequence[int]) -> None:
        """Sizes and identity headers of ``uids`` into ``index``."""
        with self._talking(f"listing {server_name!r}",
                           f"cannot list folder {server_name!r} on the destination"):
            for start in range(0, len(uids), 1000):
                data = self.client.fetch(list(uids[start:start + 1000]),
                                         ["RFC822.SIZE", f"BODY.PEEK[HEADER.FIELDS ({IDENT_FIELDS})]"])
                for uid, item in data.items():
                    header = next((v for k, v in item.items()
                                   if isinstance(k, bytes) and k.startswith(b"BODY[HEADER")), b"")
                    index.add(uid, int(item.get(b"RFC822.SIZE", 0)), bytes(header or b""))

    def _hashes(self, server_name: str, index: _DestIndex, uids: Iterable[int]) -> None:
        """Fetch and hash candidate messages (bounded batches), caching the results."""
        todo = sorted({u for u in uids if u not in index.hashes})
        if not todo:
            return
        self._select(server_name)
        sizes = index.sizes()
        batch: list[int] = []
        total = 0
        for uid in [*todo, -1]:
            if uid < 0 or (batch and total + sizes.get(uid, 0) > HASH_FETCH_BYTES):
                with self._talking(f"reading {server_name!r}",
                                   f"cannot read folder {server_name!r} on the destination"):
                    data = self.client.fetch(batch, ["BODY.PEEK[]", "FLAGS"])
                for got, item in data.items():
                    body = item.get(b"BODY[]")
                    if body is not None:
                        wire = wire_form(bytes(body))
                        index.hashes[got] = (hashlib.sha256(wire).hexdigest(),
                                             rewrites.loose_hash(wire))
                        index.flags[got] = tuple(
                            f.decode() if isinstance(f, bytes) else str(f)
                            for f in item.get(b"FLAGS", ()))
                batch, total = [], 0
            if uid >= 0:
                batch.append(uid)
                total += sizes.get(uid, 0)

    def _match(self, server_name: str, index: _DestIndex,
               wanted: Sequence[_Want]) -> list[int | None]:
        """For each wanted message: an unclaimed destination UID holding it, or None."""
        cands = [index.candidates(w) for w in wanted]
        if not any(cands):
            return [None] * len(wanted)
        self._hashes(server_name, index, (u for c in cands for u in c))
        out: list[int | None] = []
        for want, cand in zip(wanted, cands, strict=True):
            uid = next((u for u in cand if u not in index.claimed and u in index.hashes
                        and want.same(*index.hashes[u])), None)
            if uid is not None:
                index.claim(uid)
            out.append(uid)
        return out

    def _resolve_doubts(self, src_folder: str) -> None:
        """Settle APPENDs a killed run or a dropped connection left unrecorded.

        Found on the destination: done. Not found: not appended, *so far*;
        the old APPEND's bytes may still be on their way, so each such
        message is watched (a ``reappends`` row) until :data:`REAPPEND_WATCH`
        has passed since it was sent, and :meth:`_check_late` removes our own
        second copy should the first one land after all.
        """
        doubts = self.state.doubts(src_folder)
        by_dest: dict[str, list[Placement]] = {}
        for p in doubts:
            by_dest.setdefault(p.dest_folder, []).append(p)
        now = clock.now().timestamp()
        for server_name, rows in by_dest.items():
            if self._fold(server_name) not in self._existing:
                self.state.forget(src_folder, [p.src_key for p in rows])
                continue
            index = self._gmail_candidates(server_name, rows) or self._index_for(server_name)
            uids = self._match(server_name, index, [_Want.of(p) for p in rows])
            cached = self._index.get(server_name)
            if cached is not None and cached is not index:
                for uid in uids:
                    if uid is not None:
                        cached.claim(uid)
            found = [replace(p, state="done", dest_uid=uid, dest_uidvalidity=index.uidvalidity)
                     for p, uid in zip(rows, uids, strict=True) if uid is not None]
            # Killed between APPEND and its labels: they are set now, before "done".
            self._store_labels(server_name, [(p.dest_uid, p.labels) for p in found
                                             if p.dest_uid is not None and p.labels])
            misses = [p for p, uid in zip(rows, uids, strict=True) if uid is None]
            records = [self._watch_record(src_folder, p, index.uidvalidity, now) for p in misses
                       if (p.sent_at or now) + REAPPEND_WATCH > now
                       and (p.dest_uidvalidity is None or p.dest_uidvalidity == index.uidvalidity)]
            self.state.missed(src_folder, found, misses, records)
            self.resolved_doubts += len(rows)

    def _gmail_candidates(self, server_name: str, rows: Sequence[Placement]) -> _DestIndex | None:
        """Gmail: the doubted messages' candidates, found account-wide by Message-ID.

        Gmail's search (X-GM-RAW ``rfc822msgid:``, "Extension of the SEARCH command" in
        https://developers.google.com/gmail/imap/imap-extensions) finds a message in All
        Mail however large the account, so a rerun after a kill fetches the headers of
        a few candidates instead of listing the whole folder. None (list the folder)
        for a server without it, or a doubted message without a Message-ID.
        """
        if self._all_mail is None or not all(p.ident.startswith("id:<") for p in rows):
            return None
        self._select(server_name)
        uv = self._uidvalidity.get(server_name)
        found: set[int] = set()
        for p in rows:
            query = "rfc822msgid:" + p.ident[3:].strip().strip("<>")
            found.update(self._search(server_name, ["X-GM-RAW", query]))
        claimed = self.state.claimed_uids(server_name, uv)
        index = _DestIndex(uidvalidity=uv)
        self._scan(server_name, index, sorted(found - claimed))
        return index

    def _watch_record(self, src_folder: str, p: Placement, uidvalidity: int | None,
                      now: float) -> Reappend:
        """The watch on a doubted message found missing (see :meth:`_resolve_doubts`).

        ``settle_by``: a run that appends it again waits at its end until the
        old APPEND, had it still been moving, would have arrived: its
        expected duration at the rate measured then (or one ``--timeout``
        when none was), plus one ``--timeout`` of silence the link was
        allowed without being called dead.
        """
        sent = p.sent_at if p.sent_at is not None else now
        eta = p.eta if p.eta is not None else self._timeout
        return Reappend(src_folder=src_folder, src_key=p.src_key, dest_folder=p.dest_folder,
                        dest_uidvalidity=uidvalidity, uidnext_before=p.dest_uidnext,
                        doubted_at=sent, settle_by=min(sent + eta + self._timeout,
                                                       sent + REAPPEND_WATCH),
                        expires_at=sent + REAPPEND_WATCH, sha256=p.sha256, size=p.size,
                        raw_size=p.raw_size, ident=p.ident, loose_ident=p.loose_ident,
                        loose_sha=p.loose_sha, size_slack=p.size_slack)

    # -- a late first copy of a message appended again --------------------------------
    def _check_late(self, server_name: str) -> None:
        """Look for late first copies of re-appended messages in one destination folder.

        Costs one ``UID SEARCH UID n:*`` when nothing arrived since the last
        look; otherwise the new, unclaimed messages are listed and compared.
        When a copy with the same identity and content has appeared, the
        copy to remove is the one this tool provably made: its APPENDUID is
        recorded, and its bytes as the server holds them must equal the late
        copy's byte for byte. It goes with ``UID STORE +FLAGS (\\Deleted)`` and
        ``UID EXPUNGE`` of that one UID (UIDPLUS), never a plain EXPUNGE;
        the late copy stays and the state points at it. Anything less
        certain is reported as a duplicate (exit 1) and left alone.
        """
        records = self.state.reappends(server_name)
        if not records or self.dry_run:
            return
        now = clock.now().timestamp()
        if self._fold(server_name) not in self._existing:
            for r in records:
                self.state.end_watch(r)
            return
        self._select(server_name)
        uv = self._uidvalidity.get(server_name)
        live: list[Reappend] = []
        for r in records:
            if r.dest_uidvalidity is not None and uv is not None and r.dest_uidvalidity != uv:
                self.state.end_watch(r)  # the folder was made anew: its old UIDs mean nothing
            else:
                live.append(r)
        if not live:
            return
        seen = min(r.seen_uidnext or r.uidnext_before or 1 for r in live)
        arrived = [u for u in self._search(server_name, ["UID", f"{seen}:*"]) if u >= seen]
        fresh = [r for r in live if arrived and (r.seen_uidnext is None
                                                 or max(arrived) >= r.seen_uidnext)]
        settled: set[str] = set()
        if fresh:
            low = min(r.uidnext_before or 1 for r in fresh)
            uids = [u for u in self._search(server_name, ["UID", f"{low}:*"]) if u >= low]
            claimed = self.state.claimed_uids(server_name, uv)
            index = _DestIndex(uidvalidity=uv)
            self._scan(server_name, index, [u for u in uids if u not in claimed])
            settled = {r.src_key for r in fresh if self._settle_late(server_name, index, r, uv)}
            self.state.watched_up_to([r for r in fresh if r.src_key not in settled],
                                     max(uids, default=seen - 1) + 1)
        for r in live:
            if r.expires_at <= now and r.src_key not in settled:
                self.state.end_watch(r)  # past its window, and looked at a last time above

    def _settle_late(self, server_name: str, index: _DestIndex, r: Reappend,
                     uv: int | None) -> bool:
        """One watched message against the folder's unclaimed copies; True when settled."""
        want = _Want.of(r)
        cands = [u for u in index.candidates(want) if u != r.reappend_uid]
        if not cands:
            return False
        self._hashes(server_name, index, cands)
        copies = [u for u in cands if u in index.hashes and want.same(*index.hashes[u])]
        if not copies:
            return False
        late = copies[0]
        p = self.state.lookup(r.src_folder, [r.src_key]).get(r.src_key)
        folder = r.src_folder
        if p is not None and p.state == "doubt":
            return False  # its second APPEND is in doubt itself: settled first, next time
        if p is None or p.state != "done":
            # Not appended a second time (yet): the late copy is the message.
            placed = Placement(src_key=r.src_key, dest_folder=server_name, sha256=r.sha256,
                               size=r.size, raw_size=r.raw_size, ident=r.ident,
                               flags=index.flags.get(late, ()), src_uid=p.src_uid if p else None,
                               dest_uidvalidity=uv, dest_uid=late, state="done",
                               loose_ident=r.loose_ident, loose_sha=r.loose_sha,
                               size_slack=r.size_slack)
            self.state.end_watch(r, placed)
            index.claim(late)
            return True
        if r.reappend_uid is None or p.dest_uid != r.reappend_uid:
            if p.dest_uid is None and len(copies) < 2:
                return False  # no UIDPLUS: our own second copy is among the unclaimed ones
            why = ("this server gave no APPENDUID to tell which copy mailmigrate made"
                   if p.dest_uid is None else "the copy recorded for it is not the one "
                   "mailmigrate appended again, so which copy is ours cannot be proven")
            self._duplicate(folder, server_name, late, "the earlier, interrupted APPEND landed "
                            f"after this message was appended again; {why}")
            self.state.end_watch(r)
            return True
        ours = r.reappend_uid
        same, ours_flags = self._same_bytes(server_name, ours, late)
        if same is None:  # our copy is gone (moved or deleted by the user): keep theirs
            self.state.end_watch(r, replace(p, dest_uid=late, dest_uidvalidity=uv))
        elif not same or not self.uidplus:
            why = ("the server holds the two copies with different bytes" if not same
                   else "this server has no UIDPLUS (UID EXPUNGE), so it cannot remove just one")
            self._duplicate(folder, server_name, late, f"an earlier, interrupted APPEND landed late;"
                            f" {why}")
            self.state.end_watch(r)
        else:
            self._remove_ours(server_name, ours, late, ours_flags)
            self.state.end_watch(r, replace(p, dest_uid=late, dest_uidvalidity=uv))
            self.late_removed.append({"folder": folder, "key": r.src_key,
                                      "removed_uid": str(ours), "kept_uid": str(late)})
            self.reporter.warn(f"{folder}: an APPEND interrupted earlier landed late (UID {late}); "
                               f"removed the second copy mailmigrate had made (UID {ours})")
        index.claim(late)
        return True

    def _same_bytes(self, server_name: str, ours: int,
                    late: int) -> tuple[bool | None, tuple[str, ...]]:
        """(do the two UIDs hold the same bytes, None if ours is gone; our copy's flags)."""
        with self._talking(f"reading {server_name!r}",
                           f"cannot read folder {server_name!r} on the destination"):
            data = self.client.fetch([ours, late], ["BODY.PEEK[]", "FLAGS"])
        mine, theirs = data.get(ours, {}).get(b"BODY[]"), data.get(late, {}).get(b"BODY[]")
        if mine is None:
            return None, ()
        flags = tuple(f.decode() if isinstance(f, bytes) else str(f)
                      for f in data[ours].get(b"FLAGS", ()))
        return theirs is not None and bytes(mine) == bytes(theirs), flags

    def _remove_ours(self, server_name: str, ours: int, late: int, flags: tuple[str, ...]) -> None:
        """Our flags onto the copy that stays, then \\Deleted + UID EXPUNGE of our UID alone."""
        keep = [f for f in flags if f.lower() not in ("\\deleted", "\\recent")]
        with self._talking(f"removing a second copy in {server_name!r}",
                           f"cannot remove the second copy (UID {ours}) in {server_name!r}"):
            if keep:
                self.client.add_flags([late], keep, silent=True)
            self.client.add_flags([ours], ["\\Deleted"], silent=True)
            self.client.uid_expunge([ours])

    def _duplicate(self, folder: str, server_name: str, uid: int, why: str) -> None:
        entry = {"folder": folder, "destination": server_name, "uid": str(uid), "why": why}
        self.duplicates_left.append(entry)
        self.reporter.warn(f"{folder}: a message is twice in {server_name!r} (one of them UID "
                           f"{uid}): {why}; remove one copy by hand")

    def finish_run(self) -> None:
        """The end-of-run look for late first copies, in every watched folder.

        When this run appended a watched message again and its old APPEND
        might still be on the way (``settle_by``), wait for that first, with
        one cheap look per folder and second, then look a last time.
        """
        if self.dry_run:
            return

        def ours() -> list[Reappend]:
            return [r for r in self.state.reappends()
                    if (r.src_folder, r.src_key) in self._reappended_now]

        now = clock.now().timestamp()
        wait = max((r.settle_by - now for r in ours()), default=0.0)
        if wait > 0:
            self.reporter.warn(f"waiting up to {wait:.0f} s for APPENDs interrupted earlier to "
                               "land, so that no message is left twice")
            deadline = time.monotonic() + wait
            while (mine := ours()) and time.monotonic() < deadline:
                for name in sorted({r.dest_folder for r in mine}):
                    self._check_late(name)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        for name in sorted({r.dest_folder for r in self.state.reappends()}):
            self._check_late(name)

    # -- DestinationStore ---------------------------------------------------------------
    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        target = self._target(folder)
        if not folder.selectable:
            return FolderCheckpoint()  # a \Noselect parent: its children's CREATE makes it
        self._ensure_folder(target)
        cp = self.state.checkpoint(folder.name, target.server_name, status)
        if self.dry_run:
            return cp
        if self.state.doubts(folder.name):
            self._resolve_doubts(folder.name)
            cp = self.state.checkpoint(folder.name, target.server_name, status)
        self._check_late(target.server_name)
        return cp

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        done = self.state.done_keys(folder.name, [r.key for r in refs])
        return [r for r in refs if r.key not in done]

    def _flags_for(self, server_name: str, flags: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(flags to send, keywords dropped): no \\Recent, no malformed or refused keywords."""
        allowed = self._permanent.get(server_name)
        keep: list[str] = []
        dropped: list[str] = []
        for flag in flags:
            low = flag.lower()
            if low == "\\recent":
                continue
            if low in SYSTEM_FLAGS:
                keep.append(flag)
            elif not flag or _ATOM_BAD.search(flag) or (allowed is not None and low not in allowed):
                dropped.append(flag)
            else:
                keep.append(flag)
        return tuple(sorted(set(keep))), tuple(dropped)

    def _item(self, dest: str, msg: Message) -> _Item:
        wire = wire_form(msg.raw)
        flags, dropped = self._flags_for(dest, msg.flags)
        ident, loose_ident = identities(msg.raw)
        return _Item(msg, hashlib.sha256(wire).hexdigest(), len(wire), ident, flags,
                     loose_ident=loose_ident, loose_sha=rewrites.loose_hash(wire),
                     slack=rewrites.header_slack(wire), dropped=dropped)

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        if not messages or self.dry_run:
            return 0
        target = self._target(folder)
        if self._all_mail is None:
            return self._add_into(folder, target.server_name, messages, {})
        # Gmail: each message goes once into its carrier folder, with its labels.
        groups: dict[str, list[Message]] = {}
        labels: dict[str, tuple[str, ...]] = {}
        for msg in messages:
            carrier, labels[msg.key] = self._gmail_placement(target, msg.labels)
            groups.setdefault(carrier, []).append(msg)
        return sum(self._add_into(folder, carrier, group, labels)
                   for carrier, group in groups.items())

    def _add_into(self, folder: Folder, dest: str, messages: Sequence[Message],
                  labels: dict[str, tuple[str, ...]]) -> int:
        """Append ``messages`` of source ``folder`` to destination folder ``dest``, exactly
        once; with ``labels`` ({key: Gmail labels}) set on each before it counts as done."""
        index = self._index_for(dest)
        if dest not in self._permanent:
            self._select(dest)
        uv = index.uidvalidity
        items = [self._item(dest, msg) for msg in messages]
        for it in items:
            it.labels = labels.get(it.msg.key, ())
        watched = self.state.pending_reappends(folder.name, [it.msg.key for it in items])
        # 1. Already on the destination (an earlier tool, a manual copy, an APPEND of an
        #    earlier run that landed late): claim, do not append.
        found = self._match(dest, index, [
            _Want(it.ident, it.sha, frozenset({it.size, it.msg.size}), it.loose_ident,
                  it.loose_sha, it.slack) for it in items])
        done: list[Placement] = []
        todo: list[_Item] = []
        for it, uid in zip(items, found, strict=True):
            if uid is not None:
                done.append(self._placement(it, dest, uv, "done", uid))
                self.found_existing += 1
            elif self.appendlimit is not None and it.msg.size > self.appendlimit:
                it.error = f"too large ({it.msg.size} bytes; the destination's APPENDLIMIT is " \
                           f"{self.appendlimit})"
                todo.append(it)
            else:
                todo.append(it)
        too_big = [it for it in todo if it.error is not None]
        for it in too_big:
            self._fail(folder, it)
        self._store_labels(dest, [(p.dest_uid, p.labels) for p in done
                                  if p.dest_uid is not None and p.labels])
        if done or too_big:
            self.state.done_with_reappends(
                folder.name, [*done, *(self._placement(it, dest, uv, "failed") for it in too_big)],
                {}, [p.src_key for p in done if p.src_key in watched])
        added = 0
        for batch in self._append_batches([it for it in todo if it.error is None]):
            # 2. In doubt, durably, before the server sees a byte; with what a late
            #    copy would look like (its UID can only be at or above UIDNEXT now).
            sent_at = clock.now().timestamp()
            eta = sum(it.size for it in batch) / self._rate if self._rate else None
            self.state.record(folder.name, [
                self._placement(it, dest, uv, "doubt", uidnext=self._uidnext.get(dest),
                                sent_at=sent_at, eta=eta) for it in batch])
            # 3. APPEND (and, on Gmail, the labels), then 4. done (or failed) in one commit.
            self._append(dest, batch)
            uv = self._uidvalidity.get(dest, uv)
            self._store_labels(dest, [(it.result_uid, it.labels) for it in batch
                                      if it.error is None and it.result_uid and it.labels])
            after: list[Placement] = []
            for it in batch:
                if it.error is not None:
                    self._fail(folder, it)
                    after.append(self._placement(it, dest, uv, "failed"))
                else:
                    if it.dropped:
                        self._report_dropped(folder, it)
                    after.append(self._placement(it, dest, uv, "done", it.result_uid))
                    added += 1
            again = {it.msg.key: it.result_uid for it in batch
                     if it.error is None and it.msg.key in watched}
            self.state.done_with_reappends(folder.name, after, again)
            self._reappended_now.update((folder.name, key) for key in again)
            quota = [it for it in batch if (it.error or "").startswith("over quota")]
            if quota:
                # Every further APPEND would be refused too: stop clearly, keep what is done.
                raise QuotaError(f"{self.endpoint.host} is over quota: {len(quota)} messages of "
                                 f"{folder.name!r} refused ({(quota[0].error or '')[:160]}); free "
                                 "space or raise the quota, then run the same command again")
        return added

    # -- Gmail: one message, many labels ---------------------------------------------
    def _dest_folder(self, server_name: str) -> Folder:
        """The destination folder ``server_name`` as listed (or as made by this run)."""
        for f in self.dest_folders:
            if f.server_name == server_name or (f.name.upper() == "INBOX" == server_name.upper()):
                return f
        return Folder(name=server_name, server_name=server_name, delimiter=self.delimiter)

    def _dest_label(self, server_name: str) -> str | None:
        """The Gmail label a destination folder stands for (None: All Mail, Spam, Trash)."""
        folder = self._dest_folder(server_name)
        return folder_label(folder) if role(folder) in ("label", "view") else None

    def _use_folder(self, use: str) -> str | None:
        return next((f.server_name for f in self.dest_folders
                     if f.special_use == use and f.selectable), None)

    def _gmail_placement(self, target: Target, labels: Sequence[str] | None
                         ) -> tuple[str, tuple[str, ...]]:
        """(folder to APPEND to, labels to set after) for one message bound for ``target``.

        Into All Mail, with every label set by STORE X-GM-LABELS; a sent message into
        Sent Mail and a draft into Drafts (their system labels come with the folder;
        Gmail's documentation shows no STORE of \\Sent or \\Draft); Spam and Trash
        take their messages as they are. The labels are the message's own (the
        source's X-GM-LABELS, a Takeout's X-Gmail-Labels) and the target folder's, a
        user label put through --map and --prefix like a folder name.
        """
        dest = self._dest_folder(target.server_name)
        assert self._all_mail is not None
        if role(dest) == "outside":
            return target.server_name, ()
        wanted: list[str] = []
        own = self._dest_label(target.server_name)
        for label in [*(canonical(x) for x in labels or ()), *([own] if own else [])]:
            if label in (SPAM, TRASH):
                continue
            if not label.startswith("\\") and label != own:
                label = self.mapper.map_name(label).path
            if label not in wanted:
                wanted.append(label)
        carrier = self._all_mail.server_name
        for system, use in ((DRAFT, "\\Drafts"), (SENT, "\\Sent")):
            folder = self._use_folder(use)
            if system in wanted and folder is not None:
                carrier = folder
                break
        implied = self._dest_label(carrier)
        return carrier, tuple(x for x in wanted if x != implied and x not in (SENT, DRAFT))

    def _store_labels(self, server_name: str, pairs: Sequence[tuple[int | None, Sequence[str] | None]]
                      ) -> None:
        """STORE +X-GM-LABELS, one command per label for all the UIDs that get it.

        Adding a label twice changes nothing, so a rerun after a kill sets them again
        without harm. A label the server refuses is reported and dropped; the
        message stays (it is there, with its other labels).
        """
        by_label: dict[str, list[int]] = {}
        for uid, labels in pairs:
            for label in labels or ():
                if uid is not None:
                    by_label.setdefault(label, []).append(uid)
        if not by_label or self.dry_run:
            return
        self._select(server_name)
        done: set[int] = set()
        for label, uids in sorted(by_label.items()):
            try:
                self.client.add_gmail_labels(sorted(set(uids)), [label], silent=True)
                done.update(uids)
            except IMAPClientAbortError:
                raise self._guard(f"setting labels in {server_name!r}") from None
            except OSError:
                raise self._guard(f"setting labels in {server_name!r}") from None
            except IMAPClientError as exc:
                for uid in uids:
                    self.labels_dropped.append({"folder": server_name, "uid": str(uid),
                                                "label": label, "error": str(exc)[:160]})
                self.reporter.warn(f"{server_name}: label {label!r} refused for {len(uids)} "
                                   f"messages ({str(exc)[:120]}); they keep their other labels")
        self.labels_set += len(done)

    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        """Refs whose message (by the source's gid) this job already put on a Gmail account."""
        if self._all_mail is None or self.dry_run:
            return set()
        if role(self._dest_folder(self._target(folder).server_name)) == "outside":
            return set()
        held = self._held(refs)
        return {r.key for r in refs if r.gid in held}

    def _held(self, refs: Sequence[MessageRef]) -> dict[str, Placement]:
        held = self.state.held([r.gid for r in refs if r.gid])
        return {gid: p for gid, p in held.items()
                if p.dest_uidvalidity is not None
                and p.dest_uidvalidity == self._dest_uidvalidity(p.dest_folder)}

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        """A label folder's copy of a message already on Gmail: the label, not a second copy.

        STORE +X-GM-LABELS of the folder's label on the message where it was put, then
        the placement (pointing at that message) in one commit.
        """
        if self._all_mail is None or self.dry_run:
            return 0
        target = self._target(folder)
        held = self._held(refs)
        _, own = self._gmail_placement(target, ())
        rows: list[Placement] = []
        by_carrier: dict[str, list[tuple[int | None, Sequence[str]]]] = {}
        for ref in refs:
            p = held.get(ref.gid or "")
            if p is None:
                continue
            by_carrier.setdefault(p.dest_folder, []).append(
                (p.dest_uid, [x for x in own if x != self._dest_label(p.dest_folder)]))
            rows.append(replace(p, src_key=ref.key, src_uid=ref.uid, state="done",
                                labels=tuple(own) or p.labels))
        for carrier, pairs in by_carrier.items():
            self._store_labels(carrier, pairs)
        self.state.record(folder.name, rows)
        return len(rows)

    def _append_batches(self, items: Sequence[_Item]) -> Iterable[list[_Item]]:
        """Consecutive batches no larger than what the link carries in a quarter of
        ``--timeout`` at the measured rate (one message alone when it is larger)."""
        batch: list[_Item] = []
        total = 0
        for it in items:
            if batch and total + it.size > self._append_budget():
                yield batch
                batch, total = [], 0
            batch.append(it)
            total += it.size
        if batch:
            yield batch

    def _append_budget(self) -> int:
        if self._rate is None:
            return FIRST_APPEND_BYTES
        target = max(1.0, self._timeout / 4)
        return int(min(APPEND_BATCH_BYTES, max(MIN_APPEND_BYTES, self._rate * target)))

    def _measured(self, nbytes: int, seconds: float) -> None:
        sample = nbytes / max(seconds, 1e-3)
        self._rate = sample if self._rate is None else (self._rate + sample) / 2

    def _placement(self, it: _Item, dest: str, uv: int | None, state: str,
                   uid: int | None = None, *, uidnext: int | None = None,
                   sent_at: float | None = None, eta: float | None = None) -> Placement:
        return Placement(src_key=it.msg.key, dest_folder=dest, sha256=it.sha, size=it.size,
                         raw_size=it.msg.size, ident=it.ident, flags=it.flags, src_uid=it.msg.uid,
                         dest_uidvalidity=uv, dest_uid=uid, state=state, error=it.error,
                         dest_uidnext=uidnext, sent_at=sent_at, eta=eta,
                         loose_ident=it.loose_ident, loose_sha=it.loose_sha, size_slack=it.slack,
                         gid=it.msg.gid, labels=it.labels or None)

    def _fail(self, folder: Folder, it: _Item) -> None:
        failure = MessageFailure(folder.name, it.msg.key, describe(it.msg.raw), it.error or "")
        self.failures.append(failure)
        self.reporter.warn(f"not copied: {failure}")

    def _report_dropped(self, folder: Folder, it: _Item) -> None:
        self.keywords_dropped.append({"folder": folder.name, "key": it.msg.key,
                                      "message": describe(it.msg.raw),
                                      "keywords": " ".join(it.dropped)})
        self.reporter.warn(f"{folder.name}: keywords {' '.join(it.dropped)} refused by the "
                           f"destination, dropped for {describe(it.msg.raw)}")

    # -- APPEND ------------------------------------------------------------------------
    @staticmethod
    def _date(it: _Item) -> datetime | None:
        d = it.msg.internaldate
        if d is not None and d.tzinfo is None:
            d = d.replace(tzinfo=UTC)  # a naive time would be sent in *our* zone
        return d

    def _entry(self, it: _Item, flags: tuple[str, ...]) -> dict[str, Any]:
        raw = it.msg.raw
        # The wire form as long as the message: no line end was changed, so there is no
        # bare LF to send as CRLF (two scans of the message fewer).
        entry: dict[str, Any] = {"msg": raw if it.size == len(raw) else appended_form(raw),
                                 "flags": flags}
        date = self._date(it)
        if date is not None:
            entry["date"] = date
        return entry

    def _append(self, dest: str, items: Sequence[_Item]) -> None:
        if not items:
            return
        if self.can_multiappend and len(items) > 1:
            typ, text = self._send(dest, [self._entry(it, it.flags) for it in items])
            if typ == "OK":
                uids = self._uids(dest, text, len(items))
                for it, uid in zip(items, uids, strict=True):
                    it.result_uid = uid
                return
            # One message spoiled the atomic batch: find it one by one.
        for it in items:
            self._append_one(dest, it)

    def _append_one(self, dest: str, it: _Item) -> None:
        typ, text = self._send(dest, [self._entry(it, it.flags)])
        keywords = tuple(f for f in it.flags if not f.startswith("\\"))
        if typ != "OK" and keywords and classify_refusal(text) == "rejected":
            # Perhaps the keywords: try once without them, and say so.
            plain = tuple(f for f in it.flags if f.startswith("\\"))
            typ2, text2 = self._send(dest, [self._entry(it, plain)])
            if typ2 == "OK":
                it.flags, it.dropped, typ, text = plain, (*it.dropped, *keywords), typ2, text2
        if typ == "OK":
            it.result_uid = self._uids(dest, text, 1)[0]
        else:
            it.error = f"{classify_refusal(text)}: {text.strip()[:200]}"

    def _send(self, dest: str, entries: list[dict[str, Any]]) -> tuple[str, str]:
        """One APPEND (MULTIAPPEND when several): (status, response text); NO/BAD are returned.

        A NO that says "later" ([THROTTLED], [UNAVAILABLE]; [LIMIT] is "too large") is raised
        as :class:`ThrottledError` instead: nothing was appended, the batch is
        still in doubt, and the retry wrapper backs off, settles and re-sends.
        """
        typ, text = self._send_raw(dest, entries)
        if typ != "OK" and any(code in text.upper() for code in THROTTLE_CODES[:2]):
            raise ThrottledError(f"{self.endpoint.host} asked us to slow down while appending to "
                                 f"{dest!r} ({text.strip()[:160]})")
        return typ, text

    def _send_raw(self, dest: str, entries: list[dict[str, Any]]) -> tuple[str, str]:
        """One APPEND on the wire. While it is, a close (or our death) resets the connection
        and drops what is unsent, so no rest of it reaches the server after we are gone."""
        sock = getattr(self.client._imap, "sock", None)
        imap_io.discard_unsent(sock, True)
        nbytes = sum(len(e["msg"]) for e in entries)
        progress = imap_io.progress_of(self.client._imap)
        if progress is not None:
            progress.expect(nbytes / (self._rate or FLOOR_RATE))  # moving, if out of our sight
        started = time.monotonic()
        try:
            if self.can_multiappend:
                typ, data = self.client.multiappend(dest, entries)
                typ = typ.decode() if isinstance(typ, bytes) else str(typ)
                result = typ.upper(), _as_bytes(data).decode("utf-8", "replace")
            else:
                entry = entries[0]
                resp = self.client.append(dest, entry["msg"], entry["flags"], entry.get("date"))
                result = "OK", _as_bytes(resp).decode("utf-8", "replace")
        except (IMAPClientAbortError, OSError) as exc:
            raise self._guard(f"appending to {dest!r}", exc) from None
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            result = "NO", str(exc)
        self._measured(nbytes, time.monotonic() - started)
        imap_io.discard_unsent(sock, False)
        return result

    def _uids(self, dest: str, text: str, count: int) -> list[int | None]:
        match = _APPENDUID.search(text.encode())
        if match is None:
            return [None] * count
        try:  # RFC 4315 append-uid; a bent one (":4") means the UIDs are not known
            uids = _uid_set(match.group(2))
        except ValueError:
            return [None] * count
        self._uidvalidity[dest] = int(match.group(1))
        if uids:
            self._uidnext[dest] = max(self._uidnext.get(dest, 0), max(uids) + 1)
        if len(uids) != count:
            return [None] * count
        return list(uids)

    # -- flags of messages already copied ------------------------------------------------
    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        """Bring flags (and Gmail labels) changed at the source since the last run to the
        copies we made, in the folder each copy is in (on Gmail, where it was put)."""
        if not changes or self.dry_run:
            return 0
        target = self._target(folder)
        placed = self.state.lookup(folder.name, [c.key for c in changes])
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        new_flags: dict[str, tuple[str, ...]] = {}
        relabel: dict[str, tuple[Placement, tuple[str, ...]]] = {}
        for change in changes:
            p = placed.get(change.key)
            if p is None or p.state != "done" or p.dest_uid is None:
                continue
            if p.dest_uidvalidity != self._dest_uidvalidity(p.dest_folder):
                continue
            if p.dest_folder not in self._permanent:
                self._select(p.dest_folder)
            flags, _ = self._flags_for(p.dest_folder, change.flags)
            if flags != p.flags:
                groups.setdefault((p.dest_folder, flags), []).append(p.dest_uid)
                new_flags[change.key] = flags
            if self._all_mail is not None and change.labels is not None:
                labels = self._gmail_placement(target, change.labels)[1]
                if set(labels) != set(p.labels or ()):
                    relabel[change.key] = (p, labels)
        for (dest, flags), uids in groups.items():
            self._select(dest)
            try:
                self.client.set_flags(uids, list(flags), silent=True)
            except IMAPClientAbortError:
                raise self._guard(f"setting flags in {dest!r}") from None
            except IMAPClientError as exc:
                raise MessageError(f"cannot set flags in {target.path!r}: {exc}") from None
            except OSError:
                raise self._guard(f"setting flags in {dest!r}") from None
        self._relabel(list(relabel.values()))
        self.state.set_flags(folder.name, new_flags)
        self.state.set_labels(folder.name, {k: v[1] for k, v in relabel.items()})
        return len(set(new_flags) | set(relabel))

    def _relabel(self, todo: Sequence[tuple[Placement, tuple[str, ...]]]) -> None:
        """Labels added and taken off at the source since the last run (Gmail to Gmail)."""
        for p, labels in todo:
            assert p.dest_uid is not None
            gone = [x for x in p.labels or () if x not in labels]
            self._store_labels(p.dest_folder, [(p.dest_uid, [x for x in labels
                                                             if x not in (p.labels or ())])])
            if gone:
                self._select(p.dest_folder)
                with self._talking(f"setting labels in {p.dest_folder!r}",
                                   f"cannot take labels off in {p.dest_folder!r}"):
                    self.client.remove_gmail_labels([p.dest_uid], gone, silent=True)

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        if not folder.selectable or self.dry_run:
            return
        self._check_late(self._target(folder).server_name)
        self.state.finish(folder.name, status, complete)

    def summary(self) -> dict[str, Any]:
        """What the run did to the destination, beyond message counts (for --json and the log)."""
        return {
            "folders_created" if not self.dry_run else "folders_to_create": list(self.created),
            "folders_renamed": list(self.renamed),
            "folder_map": {src: t.path for src, t in sorted(self.targets.items())},
            "found_on_destination": self.found_existing,
            "in_doubt_resolved": self.resolved_doubts,
            "late_duplicates_removed": list(self.late_removed),
            "duplicates_left": list(self.duplicates_left),
            "message_errors": [f.as_dict() for f in self.failures],
            "keywords_dropped": list(self.keywords_dropped),
            **({"labels_set": self.labels_set, "labels_dropped": list(self.labels_dropped)}
               if self.gmail else {}),
        }

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                self.client.shutdown()


__all__ = ["ImapDestination", "MessageFailure", "content_hash", "describe", "identity", "wire_form"]
