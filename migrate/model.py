"""The few value types every store and the engine agree on.

Stores translate their protocol's notions (IMAP UIDs, POP3 UIDLs, archive
rows) into these, so that the engine's loop never needs to know which store
it is talking to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

# RFC 6154 special-use attributes we recognise, in a stable order.
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


@dataclass(frozen=True)
class Folder:
    """A folder as the archive sees it.

    ``name`` is the decoded Unicode path with '/' between levels whatever the
    server's delimiter was, relative to the server's personal namespace
    (``Archiv/2019`` for Cyrus's ``INBOX.Archiv.2019``); ``server_name`` is
    what the source calls it (for IMAP the decoded name with the server's own
    delimiter and prefix), kept so that the source can be asked for it again
    without re-deriving it. ``namespace`` is the prefix ``name`` is relative
    to, as a '/'-path ("INBOX" there, "" where the server has none).
    """

    name: str
    server_name: str = ""
    delimiter: str | None = "/"
    special_use: str | None = None
    selectable: bool = True
    attributes: tuple[str, ...] = ()
    namespace: str = ""

    @property
    def full_name(self) -> str:
        """The '/'-path with the namespace prefix: how archives made before names
        were relative recorded the folder (INBOX itself is never prefixed)."""
        if not self.namespace or self.name.upper() == "INBOX":
            return self.name
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class FolderStatus:
    """What a cheap STATUS tells about a folder: enough to skip it when unchanged."""

    uidvalidity: int | None
    uidnext: int | None
    messages: int
    highestmodseq: int | None = None


@dataclass(frozen=True)
class MessageRef:
    """A message known by key and size, before its bytes are fetched.

    ``key`` identifies the message within its folder at the source: the UID
    (as text) for IMAP, the UIDL for POP3, the row id for an archive. Size
    lets the engine bound each fetch batch by bytes rather than by count.
    """

    key: str
    size: int
    uid: int | None = None
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    #: One message the source shows in several folders has one ``gid`` (Gmail's
    #: X-GM-MSGID): a destination that already holds it links it instead of a second
    #: download (see ``LinkingDestination``). ``labels`` (Gmail's X-GM-LABELS; None
    #: when the source has none) and ``thread`` (X-GM-THRID) ride along.
    gid: str | None = None
    labels: tuple[str, ...] | None = None
    thread: str | None = None


@dataclass(frozen=True)
class Message:
    """A whole message: raw bytes exactly as the source returned them, plus metadata."""

    key: str
    raw: bytes
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    uid: int | None = None
    sha256: str = field(default="", compare=False)
    #: As on :class:`MessageRef`: the message's identity across the source's folders,
    #: its labels and its thread, where the source has them.
    gid: str | None = None
    labels: tuple[str, ...] | None = None
    thread: str | None = None

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.raw).hexdigest())

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class FlagChange:
    """New flags for a message already at the destination, keyed like MessageRef."""

    key: str
    flags: tuple[str, ...]
    uid: int | None = None
    #: The message's labels now (None: the source has no labels, or they did not change).
    labels: tuple[str, ...] | None = None


@dataclass
class FolderCheckpoint:
    """What the destination already holds of a source folder.

    ``last_uid`` is the highest UID stored for the current UIDVALIDITY: a
    resumed or incremental run asks the source only for UIDs above it.
    ``uidnext``/``highestmodseq`` are those of the last *completed* pass, so
    an unchanged STATUS lets the folder be skipped without selecting it.
    ``partial`` marks a folder last visited with a filter (``--since``): UIDs
    below ``last_uid`` may be missing, so the next unfiltered run lists all.
    """

    uidvalidity: int | None = None
    last_uid: int = 0
    uidnext: int | None = None
    highestmodseq: int | None = None
    messages: int = 0
    partial: bool = False


def normalise_flags(flags: object) -> tuple[str, ...]:
    """Flags as sorted unique text, whatever bytes/str mix a library handed us.

    \\Recent is dropped: it is session state, not a property of the message.
    """
    out: set[str] = set()
    for f in flags or ():  # type: ignore[attr-defined]
        s = f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f)
        if s and s.lower() != "\\recent":
            out.add(s)
    return tuple(sorted(out))
