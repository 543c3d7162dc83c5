"""Progress: what the engine tells, and the ways to show it.

The engine calls a :class:`Reporter`; the CLI picks tqdm bars on a TTY,
plain log lines otherwise, or nothing with --quiet. Everything goes to
stderr: stdout is reserved for data (the --json summary, ``ls`` output).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from migrate.reporting import NullReporter
from migrate.results import FolderResult, TransferResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class LogReporter(NullReporter):
    """Plain lines on stderr, for cron mails and log files (no TTY)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._folder = ""
        self._count = 0
        self._bytes = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def _say(self, text: str) -> None:
        # One write per line: worker threads (--max-connections) warn too.
        self.stream.write(f"mailmigrate: {text}\n")
        self.stream.flush()

    def start(self, folders: int) -> None:
        self._t0 = self._last = time.monotonic()
        self._say(f"{folders} folders to check")

    def folder_start(self, folder: str, expected_messages: int) -> None:
        self._folder = folder

    def advance(self, messages: int, nbytes: int) -> None:
        # Totals for the run, not per folder: with --max-connections several
        # folders advance at once, and "so far" must mean the same thing.
        self._count += messages
        self._bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._say(f"{self._count} messages, {human_bytes(self._bytes)} so far "
                      f"(latest folder: {self._folder})")

    def folder_done(self, result: FolderResult) -> None:
        if result.error:
            self._say(f"{result.name}: FAILED: {result.error}")
        elif result.new_messages or result.flags_updated:
            self._say(f"{result.name}: {result.new_messages} new "
                      f"({human_bytes(result.new_bytes)}), {result.flags_updated} flag updates")

    def warn(self, text: str) -> None:
        self._say(f"warning: {text}")

    def finish(self, result: TransferResult) -> None:
        took = time.monotonic() - self._t0
        verb = "would transfer" if result.dry_run else "transferred"
        self._say(f"done: {verb} {result.new_messages} messages "
                  f"({human_bytes(result.new_bytes)}) in {took:.1f}s; "
                  f"{len(result.errors)} folder errors")


class TqdmReporter(NullReporter):
    """Bars on a TTY: folders checked, and messages copied (the total grows as each
    folder is looked at; one bar for all, since with --max-connections several
    folders advance at once)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._overall: Any = None
        self._folder: Any = None
        self._log = LogReporter()

    def start(self, folders: int) -> None:
        self._overall = self._tqdm(total=folders, unit="folder", desc="folders", position=0,
                                   leave=True, file=sys.stderr)

    def folder_start(self, folder: str, expected_messages: int) -> None:
        if self._folder is None:
            self._folder = self._tqdm(total=0, unit="msg", desc="messages", position=1,
                                      leave=False, file=sys.stderr)
            self._bytes = 0
        self._folder.total = (self._folder.total or 0) + max(expected_messages, 0)
        self._folder.set_postfix_str(f"{human_bytes(self._bytes)}, {folder[:30]}", refresh=False)
        self._folder.refresh()

    def advance(self, messages: int, nbytes: int) -> None:
        if self._folder is not None:
            self._bytes += nbytes
            self._folder.update(messages)
            self._folder.set_postfix_str(human_bytes(self._bytes), refresh=False)

    def folder_done(self, result: FolderResult) -> None:
        if self._overall is not None:
            self._overall.update(1)
        if result.error:
            self._tqdm.write(f"{result.name}: FAILED: {result.error}", file=sys.stderr)

    def warn(self, text: str) -> None:
        self._tqdm.write(f"warning: {text}", file=sys.stderr)

    def finish(self, result: TransferResult) -> None:
        for bar in (self._folder, self._overall):
            if bar is not None:
                bar.close()
        self._log.finish(result)
