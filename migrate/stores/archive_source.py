"""Our own archives (SQLite or mbox tree) as the source of a restore.

An archive has no UIDs of its own to resume by, so every ref is keyed by
the archive's stable row id, ``status`` carries no UIDVALIDITY (the engine
then lists every ref and lets the destination's state say which are
missing), and ``fetch`` reads just the missing ones, one bounded batch at a
time, sha256-checked by the archive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.base import KeyedArchiveReader


class ArchiveSource:
    """Adapts a :class:`KeyedArchiveReader` to the :class:`SourceStore` protocol."""

    def __init__(self, archive: KeyedArchiveReader, identity: str) -> None:
        self.archive = archive
        self.identity = identity
        self._counts: dict[str, int] = {}

    def list_folders(self) -> list[Folder]:
        summary = self.archive.folder_summary()
        self._counts = {f.name: n for f, n, _ in summary}
        return [f for f, _, _ in summary]

    def status(self, folder: Folder) -> FolderStatus:
        return FolderStatus(uidvalidity=None, uidnext=None, messages=self._counts.get(folder.name, 0))

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        for ref in self.archive.message_refs(folder):
            if since is not None and ref.internaldate is not None and ref.internaldate.date() < since:
                continue
            yield ref

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return iter(())

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        return self.archive.read_messages(folder, [r.key for r in refs])

    def close(self) -> None:
        self.archive.close()
