"""What a transfer returns: per-folder counts and errors, and the run's totals.

These types sit below every layer because the engine fills them, the
reporters show them, the CLI renders them as JSON, and library callers read
them; none of those should need the engine to name a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FolderResult:
    name: str
    new_messages: int = 0
    new_bytes: int = 0
    flags_updated: int = 0
    unchanged: bool = False
    vanished: int = 0
    error: str | None = None
    #: Left (wholly or in part) for the next run: the run's budget was spent.
    deferred: bool = False
    #: Messages the destination already held under the source's ``gid`` (Gmail's
    #: X-GM-MSGID) and recorded here without fetching their bodies again.
    linked: int = 0
    linked_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "folder": self.name, "new_messages": self.new_messages, "new_bytes": self.new_bytes,
            "flags_updated": self.flags_updated, "unchanged": self.unchanged,
            "vanished": self.vanished, "error": self.error, "deferred": self.deferred,
            "linked": self.linked,
        }


@dataclass
class TransferResult:
    folders: list[FolderResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def new_messages(self) -> int:
        return sum(f.new_messages for f in self.folders)

    @property
    def new_bytes(self) -> int:
        return sum(f.new_bytes for f in self.folders)

    @property
    def flags_updated(self) -> int:
        return sum(f.flags_updated for f in self.folders)

    @property
    def downloads_saved(self) -> int:
        """Bodies not fetched again: messages linked by ``gid`` (a Gmail label folder)."""
        return sum(f.linked for f in self.folders)

    @property
    def bytes_saved(self) -> int:
        return sum(f.linked_bytes for f in self.folders)

    @property
    def more(self) -> bool:
        """True when the run stopped at its budget with folders left to do."""
        return any(f.deferred for f in self.folders)

    @property
    def errors(self) -> list[str]:
        return [f"{f.name}: {f.error}" for f in self.folders if f.error]

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "folders": len(self.folders),
            "new_messages": self.new_messages,
            "new_bytes": self.new_bytes,
            "flags_updated": self.flags_updated,
            "downloads_saved": self.downloads_saved,
            "bytes_saved": self.bytes_saved,
            "errors": self.errors,
            "more": self.more,
            "per_folder": [f.as_dict() for f in self.folders],
        }
