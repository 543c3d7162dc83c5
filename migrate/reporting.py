"""The Reporter protocol: what the engine, and the stores, tell while they work.

It sits below every layer so that a store can warn (a folder renamed on the
way, keywords the server refused) without knowing who listens. The ways of
showing it (bars, log lines) live in :mod:`migrate.engine.progress`; tests and
library callers use :class:`NullReporter` or :class:`RecordingReporter`.
"""

from __future__ import annotations

from typing import Any, Protocol

from migrate.results import FolderResult, TransferResult


class Reporter(Protocol):
    def start(self, folders: int) -> None: ...
    def planned(self, expected: dict[str, int]) -> None: ...
    def folder_start(self, folder: str, expected_messages: int) -> None: ...
    def advance(self, messages: int, nbytes: int) -> None: ...
    def folder_done(self, result: FolderResult) -> None: ...
    def warn(self, text: str) -> None: ...
    def finish(self, result: TransferResult) -> None: ...


class NullReporter:
    """Says nothing (--quiet, and library use)."""

    def start(self, folders: int) -> None:
        pass

    def planned(self, expected: dict[str, int]) -> None:
        """Messages each folder is expected to transfer, from STATUS (or the archive)
        before the first message moves; a total that does not grow as folders open."""

    def folder_start(self, folder: str, expected_messages: int) -> None:
        pass

    def advance(self, messages: int, nbytes: int) -> None:
        pass

    def folder_done(self, result: FolderResult) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def finish(self, result: TransferResult) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps every event, for tests and for callers that render later."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self, folders: int) -> None:
        self.events.append(("start", folders))

    def planned(self, expected: dict[str, int]) -> None:
        self.events.append(("planned", dict(expected)))

    def folder_start(self, folder: str, expected_messages: int) -> None:
        self.events.append(("folder_start", folder))

    def advance(self, messages: int, nbytes: int) -> None:
        self.events.append(("advance", (messages, nbytes)))

    def folder_done(self, result: FolderResult) -> None:
        self.events.append(("folder_done", result))

    def warn(self, text: str) -> None:
        self.events.append(("warn", text))
