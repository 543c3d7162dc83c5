"""The interfaces every store implements, as :class:`typing.Protocol` s.

A source lists folders and messages and fetches bytes; a destination says
what it already holds (its checkpoint) and stores batches durably. The
engine only talks to these, so a new store is one class, proven by the same
conformance tests as the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from migrate.errors import MessageError
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef


@runtime_checkable
class SourceStore(Protocol):
    """Where messages come from (IMAP, POP3, an archive)."""

    def list_folders(self) -> list[Folder]:
        """Every folder, parents (even \\Noselect ones) before children."""
        ...

    def status(self, folder: Folder) -> FolderStatus:
        """A cheap look at the folder: must not transfer message bodies."""
        ...

    def list_new(
        self, folder: Folder, checkpoint: FolderCheckpoint, since: date | None = None
    ) -> Iterator[MessageRef]:
        """Messages the destination may not have yet, in the order to fetch them.

        IMAP lists UIDs above ``checkpoint.last_uid``; stores without UIDs list
        everything and leave the filtering to the destination's ``missing``.
        ``since`` keeps only messages whose INTERNALDATE is on or after it.
        """
        ...

    def flag_changes(
        self, folder: Folder, checkpoint: FolderCheckpoint, status: FolderStatus
    ) -> Iterator[FlagChange]:
        """Flags of already-transferred messages that may have changed."""
        ...

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        """The messages for ``refs`` (one bounded batch), in any order.

        A message that cannot be fetched raises :class:`MessageError` from the
        iterator only if nothing else can be salvaged; otherwise it is
        skipped and reported through ``failed``.
        """
        ...

    def close(self) -> None: ...


class HasStatus(Protocol):
    """What :func:`statuses_of` needs of a source."""

    def status(self, folder: Folder) -> FolderStatus: ...


def statuses_of(source: HasStatus, folders: Sequence[Folder], *, pipelined: bool = True
                ) -> list[FolderStatus | MessageError]:
    """The STATUS of each folder, or the error that folder alone gets: through the
    source's ``statuses`` where it has one and ``pipelined`` allows it (IMAP pipelines
    them: one round trip), else one ``status`` call per folder."""
    many = getattr(source, "statuses", None) if pipelined else None
    if callable(many):
        answers: list[FolderStatus | MessageError] = list(many(folders))
        return answers
    out: list[FolderStatus | MessageError] = []
    for folder in folders:
        try:
            out.append(source.status(folder))
        except MessageError as exc:
            out.append(exc)
    return out


@runtime_checkable
class DestinationStore(Protocol):
    """Where messages go (an archive, an IMAP server)."""

    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        """Create the folder if needed and say what is already held of it.

        When ``status.uidvalidity`` differs from the stored one, the store
        detaches its old UIDs (keeping the messages) and returns an empty
        checkpoint, so the folder is scanned again without duplicates.
        """
        ...

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        """The subset of ``refs`` not yet stored for this folder."""
        ...

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        """Store a batch durably, with its checkpoint, all or nothing.

        Returns how many were newly stored (a message already held under the
        same key is not stored again). When this returns, the batch survives
        kill -9 and power loss.
        """
        ...

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        """Record changed flags; returns how many rows changed."""
        ...

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        """The folder is done up to ``status``: remember it for the next no-op check.

        ``complete=False`` (a filtered pass, e.g. ``--since``) records the folder
        as partial: no skip on the next run, and ``checkpoint().partial`` is True
        until a complete pass clears it.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class OrderedSource(Protocol):
    """A source whose folders share messages, and which says which to transfer first.

    Gmail's All Mail (with Spam and Trash) holds every message once; its label folders
    show the same messages again. Done first, All Mail's messages are held by the
    time any label folder is read, so every label folder only links (see
    :class:`LinkingDestination`), even with several connections reading at once.
    """

    def transfer_order(self, folders: Sequence[Folder]) -> list[list[Folder]]:
        """Groups of ``folders`` to transfer one group after the other (folders left
        out come last)."""
        ...


@runtime_checkable
class IndependentFolders(Protocol):
    """A destination whose folders do not depend on one another: what ``missing`` says
    of one folder cannot change when a batch of another folder is stored (an archive:
    a placement per folder and UID; content shared by hash as it is stored).

    On one connection the engine may then fetch a folder's first batch while the last
    batch of the folder before is still being stored, instead of the source waiting
    at every folder boundary (measured on the peer benchmark's 15 folders: the writer
    stood idle about 1 s of 7). An IMAP destination does not say this: a folder it
    writes to may be the target of several source folders.
    """

    folders_independent: bool


@runtime_checkable
class LinkingDestination(Protocol):
    """A destination that holds a message once however many folders show it.

    A source that knows one message in several folders (Gmail: a label is a
    folder, X-GM-MSGID is the message) says so with ``MessageRef.gid``. The engine
    asks the destination which of a batch it already holds by gid, and has it
    record those in this folder as well (an archive adds a placement of the
    stored content; a Gmail destination adds the label), so their bodies are
    fetched once for the whole account. Everything else in a batch goes the
    usual way: fetched and stored. A destination without these methods (or one
    that returns nothing) simply gets every message fetched.
    """

    def linkable(self, folder: Folder, refs: Sequence[MessageRef]) -> set[str]:
        """Keys of ``refs`` whose ``gid`` this destination already holds (no writes)."""
        ...

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        """Record ``refs`` (all linkable) in ``folder`` durably, like ``add_messages`` but
        without bytes, with the folder's checkpoint; returns how many were recorded."""
        ...


@runtime_checkable
class RetentionIndex(Protocol):
    """Archives that can say when a message was durably stored (for POP3 retention)."""

    def archived_at(self, folder: Folder, keys: Sequence[str]) -> dict[str, datetime]:
        """{key: when it was committed} for the keys (POP3 UIDLs) this archive holds."""
        ...


class ArchiveReader(Protocol):
    """The read side of an archive, for ``ls``, ``verify`` and (later) restore."""

    def list_folders(self) -> list[Folder]: ...

    def folder_summary(self) -> list[tuple[Folder, int, int]]:
        """(folder, message count, total bytes) per folder, in name order."""
        ...

    def iter_messages(self, folder: Folder) -> Iterable[Message]:
        """Messages of a folder, one at a time (bounded memory)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class KeyedArchiveReader(ArchiveReader, Protocol):
    """An archive that can list refs by stable key and read messages back by key.

    What makes an archive a :class:`SourceStore` for restore (see
    :mod:`migrate.stores.archive_source`): the engine lists refs, asks the
    destination which are missing, then fetches only those, a bounded batch
    at a time.
    """

    def message_refs(self, folder: Folder) -> Iterator[MessageRef]: ...

    def read_messages(self, folder: Folder, keys: Sequence[str]) -> Iterator[Message]: ...
