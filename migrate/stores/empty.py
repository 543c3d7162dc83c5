"""A destination that holds nothing and stores nothing: what --dry-run compares
against when the archive does not exist yet (so a dry run never creates it)."""

from __future__ import annotations

from collections.abc import Sequence

from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef


class EmptyDestination:
    def checkpoint(self, folder: Folder, status: FolderStatus) -> FolderCheckpoint:
        return FolderCheckpoint()

    def missing(self, folder: Folder, refs: Sequence[MessageRef]) -> list[MessageRef]:
        return list(refs)

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        return 0

    def update_flags(self, folder: Folder, changes: Sequence[FlagChange]) -> int:
        return 0

    def finish_folder(self, folder: Folder, status: FolderStatus, complete: bool = True) -> None:
        pass

    def close(self) -> None:
        pass
