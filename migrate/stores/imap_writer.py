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
  Keywords the destination refuses are dropped and reported, never fatal.

Content is compared in the IMAP wire form (CRLF line ends; a NUL as
Dovecot stores it), because servers normalise bare LFs on output: a message
restored from an LF mbox comes back with CRLF and is still the same message.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.config.profiles import Profile, folder_hints
from migrate.config.run_defaults import preset_of
from migrate.errors import ConnectError, MessageError, QuotaError, ThrottledError
from migrate.folder_map import FolderMapper, MapRule, Target
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import NullReporter, Reporter
from migrate.stores.imap import (
    REPLY_SHAPE_ERRORS,
    THROTTLE_CODES,
    connect_imap,
    list_imap_folders,
    personal_namespace,
    prefix_from_listing,
)
from migrate.stores.imap_state import JobState, Placement

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_WS = re.compile(r"\s+")
# RFC 3501 atom-specials plus '\' (only system flags may start with it).
_ATOM_BAD = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})
SIG_HEADERS = ("date", "from", "to", "subject")
IDENT_FIELDS = "MESSAGE-ID DATE FROM TO SUBJECT"
HASH_FETCH_BYTES = 8 * 1024 * 1024


# -- message identity -------------------------------------------------------------
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


def header_fields(raw: bytes, names: Iterable[str], limit: int = 65536) -> dict[str, str]:
    """First value of each wanted header, unfolded; tolerant of any bytes."""
    wanted = set(names)
    out: dict[str, str] = {}
    current: str | None = None
    for line in _LINE_END.split(raw[:limit]):
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


def identity(raw: bytes) -> str:
    """'id:<Message-ID>', or a signature of Date/From/To/Subject when there is none."""
    fields = header_fields(raw, ("message-id", *SIG_HEADERS))
    msgid = fields.get("message-id", "")
    if msgid:
        return "id:" + msgid
    sig = "\0".join(fields.get(h, "") for h in SIG_HEADERS)
    return "sig:" + hashlib.sha256(sig.encode("utf-8", "surrogateescape")).hexdigest()[:32]


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
    result_uid: int | None = None
    error: str | None = None
    dropped: tuple[str, ...] = ()


@dataclass
class _DestIndex:
    """Messages in a destination folder that this job has not placed (yet)."""

    uidvalidity: int | None
    by_ident: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)

    def candidates(self, ident: str, sizes: set[int]) -> list[int]:
        return [uid for uid, size in self.by_ident.get(ident, ()) if size in sizes]

    def claim(self, ident: str, uid: int) -> None:
        entries = self.by_ident.get(ident, [])
        self.by_ident[ident] = [e for e in entries if e[0] != uid]


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
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self.dry_run = dry_run
        self.reporter = reporter or NullReporter()
        self._password = password
        self._timeout = timeout
        self.client = connect_imap(endpoint, password, timeout)
        caps = {c.decode().upper() if isinstance(c, bytes) else str(c).upper()
                for c in self.client.capabilities()}
        self.can_multiappend = "MULTIAPPEND" in caps
        self.appendlimit: int | None = None
        for cap in caps:
            if cap.startswith("APPENDLIMIT="):
                with contextlib.suppress(ValueError):
                    self.appendlimit = int(cap.split("=", 1)[1])
        self.delimiter, ns_prefix = self._namespace()
        self.dest_folders = list_imap_folders(self.client, endpoint.host, ns_prefix, ask=False)
        # A \Noselect placeholder (the "A" Dovecot lists for "A/B") holds no mail and
        # takes none: it counts as missing, so mail for it CREATEs it for real.
        self._existing = {self._fold(f.server_name) for f in self.dest_folders if f.selectable}
        # Provider presets name special folders where servers announce no
        # attributes, and say what to call one that must be created here.
        hints = folder_hints(source_profile, preset_of(endpoint),
                             [f.name for f in self.dest_folders])
        self.mapper = FolderMapper(self.dest_folders, self.delimiter, rules, prefix, special_use,
                                   ns_prefix, extra_names=hints.extra_names,
                                   create_names=hints.create_names)
        self.targets: dict[str, Target] = {}
        self.created: list[str] = []
        self.renamed: list[dict[str, str]] = []
        self.failures: list[MessageFailure] = []
        self.keywords_dropped: list[dict[str, str]] = []
        self.found_existing = 0
        self.resolved_doubts = 0
        self._created_now: set[str] = set()
        self._index: dict[str, _DestIndex] = {}
        self._uidvalidity: dict[str, int | None] = {}
        self._permanent: dict[str, frozenset[str] | None] = {}
        self._selected: str | None = None

    # -- reconnecting (see migrate.engine.retry) ------------------------------------------------
    def reconnect(self) -> None:
        """A fresh connection after a drop; every per-connection cache is forgotten.

        The folder indexes go too: an APPEND cut mid-flight may have landed,
        and only a fresh listing can tell (:meth:`settle`).
        """
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

    def _guard(self, what: str) -> ConnectError:
        return ConnectError(f"connection to {self.endpoint.host} lost while {what}; "
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
        try:
            uids = self.client.search(["ALL"])
            claimed = self.state.claimed_uids(server_name, uv)
            todo = sorted(u for u in uids if u not in claimed)
            for start in range(0, len(todo), 1000):
                data = self.client.fetch(todo[start:start + 1000],
                                         ["RFC822.SIZE", f"BODY.PEEK[HEADER.FIELDS ({IDENT_FIELDS})]"])
                for uid, item in data.items():
                    header = next((v for k, v in item.items()
                                   if isinstance(k, bytes) and k.startswith(b"BODY[HEADER")), b"")
                    size = int(item.get(b"RFC822.SIZE", 0))
                    index.by_ident.setdefault(identity(bytes(header or b"")), []).append((uid, size))
        except IMAPClientAbortError:
            raise self._guard(f"listing {server_name!r}") from None
        except IMAPClientError as exc:
            raise MessageError(f"cannot list folder {server_name!r} on the destination: {exc}"
                               ) from None
        except OSError:
            raise self._guard(f"listing {server_name!r}") from None
        return index

    def _hashes(self, server_name: str, index: _DestIndex, uids: Iterable[int]) -> None:
        """Fetch and hash candidate messages (bounded batches), caching the results."""
        todo = sorted({u for u in uids if u not in index.hashes})
        if not todo:
            return
        self._select(server_name)
        sizes = {uid: size for entries in index.by_ident.values() for uid, size in entries}
        batch: list[int] = []
        total = 0
        for uid in [*todo, -1]:
            if uid < 0 or (batch and total + sizes.get(uid, 0) > HASH_FETCH_BYTES):
                try:
                    data = self.client.fetch(batch, ["BODY.PEEK[]"])
                except IMAPClientAbortError:
                    raise self._guard(f"reading {server_name!r}") from None
                except OSError:
                    raise self._guard(f"reading {server_name!r}") from None
                for got, item in data.items():
                    body = item.get(b"BODY[]")
                    if body is not None:
                        index.hashes[got] = content_hash(bytes(body))
                batch, total = [], 0
            if uid >= 0:
                batch.append(uid)
                total += sizes.get(uid, 0)

    def _match(self, server_name: str, index: _DestIndex,
               wanted: Sequence[tuple[str, set[int], str]]) -> list[int | None]:
        """For each (identity, sizes, sha256): an unclaimed destination UID holding it, or None."""
        cands = [index.candidates(ident, sizes) for ident, sizes, _ in wanted]
        if not any(cands):
            return [None] * len(wanted)
        self._hashes(server_name, index, (u for c in cands for u in c))
        out: list[int | None] = []
        taken: set[int] = set()
        for (ident, _, sha), cand in zip(wanted, cands, strict=True):
            uid = next((u for u in cand if u not in taken and index.hashes.get(u) == sha), None)
            if uid is not None:
                taken.add(uid)
                index.claim(ident, uid)
            out.append(uid)
        return out

    def _resolve_doubts(self, src_folder: str) -> None:
        """Settle APPENDs a killed run left unrecorded: found on the destination, or not sent."""
        doubts = self.state.doubts(src_folder)
        by_dest: dict[str, list[Placement]] = {}
        for p in doubts:
            by_dest.setdefault(p.dest_folder, []).append(p)
        for server_name, rows in by_dest.items():
            if self._fold(server_name) not in self._existing:
                self.state.forget(src_folder, [p.src_key for p in rows])
                continue
            index = self._index_for(server_name)
            uids = self._match(server_name, index,
                               [(p.ident, {p.size, p.raw_size}, p.sha256) for p in rows])
            found = [replace(p, state="done", dest_uid=uid, dest_uidvalidity=index.uidvalidity)
                     for p, uid in zip(rows, uids, strict=True) if uid is not None]
            self.state.record(src_folder, found)
            self.state.forget(src_folder, [p.src_key for p, uid in zip(rows, uids, strict=True)
                                           if uid is None])
            self.resolved_doubts += len(rows)

    # -- DestinationStore ---------------------------------------------------------------
    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        target = self._target(folder)
        if not folder.selectable:
            return FolderCheckpoint()  # a \Noselect parent: its children's CREATE makes it
        self._ensure_folder(target)
        cp = self.state.checkpoint(folder.name, target.server_name, status)
        if self.dry_run or not self.state.doubts(folder.name):
            return cp
        self._resolve_doubts(folder.name)
        return self.state.checkpoint(folder.name, target.server_name, status)

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

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        if not messages or self.dry_run:
            return 0
        target = self._target(folder)
        dest = target.server_name
        index = self._index_for(dest)
        if dest not in self._permanent:
            self._select(dest)
        uv = index.uidvalidity
        items: list[_Item] = []
        for msg in messages:
            wire = wire_form(msg.raw)
            flags, dropped = self._flags_for(dest, msg.flags)
            items.append(_Item(msg, hashlib.sha256(wire).hexdigest(), len(wire), identity(msg.raw),
                               flags, dropped=dropped))
        # 1. Already on the destination (an earlier tool, a manual copy): claim, do not append.
        found = self._match(dest, index, [(it.ident, {it.size, it.msg.size}, it.sha) for it in items])
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
        sendable = [it for it in todo if it.error is None]
        # 2. In doubt, durably, before the server sees a byte.
        self.state.record(folder.name, [*done, *(self._placement(it, dest, uv, "doubt")
                                                 for it in sendable)])
        # 3. APPEND, then 4. done (or failed) in one commit.
        self._append(dest, sendable)
        uv = self._uidvalidity.get(dest, uv)
        after: list[Placement] = []
        for it in todo:
            if it.error is not None:
                self._fail(folder, it)
                after.append(self._placement(it, dest, uv, "failed"))
            else:
                if it.dropped:
                    self._report_dropped(folder, it)
                after.append(self._placement(it, dest, uv, "done", it.result_uid))
        self.state.record(folder.name, after)
        quota = [it for it in todo if (it.error or "").startswith("over quota")]
        if quota:
            # Every further APPEND would be refused too: stop clearly, keep what is done.
            raise QuotaError(f"{self.endpoint.host} is over quota: {len(quota)} messages of "
                             f"{folder.name!r} refused ({(quota[0].error or '')[:160]}); free space "
                             "or raise the quota, then run the same command again")
        return sum(1 for it in todo if it.error is None)

    def _placement(self, it: _Item, dest: str, uv: int | None, state: str,
                   uid: int | None = None) -> Placement:
        return Placement(src_key=it.msg.key, dest_folder=dest, sha256=it.sha, size=it.size,
                         raw_size=it.msg.size, ident=it.ident, flags=it.flags, src_uid=it.msg.uid,
                         dest_uidvalidity=uv, dest_uid=uid, state=state, error=it.error)

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
        entry: dict[str, Any] = {"msg": it.msg.raw, "flags": flags}
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
        try:
            if self.can_multiappend:
                typ, data = self.client.multiappend(dest, entries)
                typ = typ.decode() if isinstance(typ, bytes) else str(typ)
                return typ.upper(), _as_bytes(data).decode("utf-8", "replace")
            entry = entries[0]
            resp = self.client.append(dest, entry["msg"], entry["flags"], entry.get("date"))
            return "OK", _as_bytes(resp).decode("utf-8", "replace")
        except (IMAPClientAbortError, OSError):
            raise self._guard(f"appending to {dest!r}") from None
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            return "NO", str(exc)

    def _uids(self, dest: str, text: str, count: int) -> list[int | None]:
        match = _APPENDUID.search(text.encode())
        if match is None:
            return [None] * count
        try:  # RFC 4315 append-uid; a bent one (":4") means the UIDs are not known
            uids = _uid_set(match.group(2))
        except ValueError:
            return [None] * count
        self._uidvalidity[dest] = int(match.group(1))
        if len(uids) != count:
            return [None] * count
        return list(uids)

    # -- flags of messages already copied ------------------------------------------------
    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        """Bring flags changed at the source since the last run to the copies we made."""
        if not changes or self.dry_run:
            return 0
        target = self._target(folder)
        dest = target.server_name
        placed = self.state.lookup(folder.name, [c.key for c in changes])
        uv = self._dest_uidvalidity(dest)
        groups: dict[tuple[str, ...], list[int]] = {}
        new_flags: dict[str, tuple[str, ...]] = {}
        for change in changes:
            p = placed.get(change.key)
            if p is None or p.state != "done" or p.dest_uid is None or p.dest_uidvalidity != uv:
                continue
            if dest not in self._permanent:
                self._select(dest)
            flags, _ = self._flags_for(dest, change.flags)
            if flags != p.flags:
                groups.setdefault(flags, []).append(p.dest_uid)
                new_flags[change.key] = flags
        if not groups:
            return 0
        self._select(dest)
        try:
            for flags, uids in groups.items():
                self.client.set_flags(uids, list(flags), silent=True)
        except IMAPClientAbortError:
            raise self._guard(f"setting flags in {dest!r}") from None
        except IMAPClientError as exc:
            raise MessageError(f"cannot set flags in {target.path!r}: {exc}") from None
        except OSError:
            raise self._guard(f"setting flags in {dest!r}") from None
        self.state.set_flags(folder.name, new_flags)
        return len(new_flags)

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        if not folder.selectable or self.dry_run:
            return
        self.state.finish(folder.name, status, complete)

    def summary(self) -> dict[str, Any]:
        """What the run did to the destination, beyond message counts (for --json and the log)."""
        return {
            "folders_created" if not self.dry_run else "folders_to_create": list(self.created),
            "folders_renamed": list(self.renamed),
            "folder_map": {src: t.path for src, t in sorted(self.targets.items())},
            "found_on_destination": self.found_existing,
            "in_doubt_resolved": self.resolved_doubts,
            "message_errors": [f.as_dict() for f in self.failures],
            "keywords_dropped": list(self.keywords_dropped),
        }

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                self.client.shutdown()


__all__ = ["ImapDestination", "MessageFailure", "content_hash", "describe", "identity", "wire_form"]
