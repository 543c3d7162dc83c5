"""What a running batch shows: a live bar and the accounts in flight on a TTY, lines otherwise.

Progress goes to stderr (stdout is for data); the child processes are quiet,
so this is the only voice of a batch. On a terminal: one bar of accounts
finished, with the bytes moved, and under it the accounts in flight. Without
one (cron, a log file): a line per finished or failed account. ``--log-file`` gets
those lines in any case (with ``--quiet`` and beside the bar too).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from migrate.engine.progress import FILE_ONLY, LOGGER, has_log_file, human_bytes
from migrate.fleet.ledger import AccountRow, ChunkReport
from migrate.fleet.passes import PassSummary


class QuietProgress:
    def start(self, mode: str, rows: Sequence[AccountRow]) -> None:
        pass

    def chunk_started(self, row: AccountRow, pass_: str) -> None:
        pass

    def chunk_done(self, row: AccountRow, pass_: str, report: ChunkReport, finished: bool,
                   failed: bool) -> None:
        pass

    def finish(self, summary: PassSummary) -> None:
        pass


class LineProgress(QuietProgress):
    """One line per account that finished or failed, and per failed attempt: on stderr
    (unless ``terminal`` is False) and in the --log-file, if one is open."""

    def __init__(self, terminal: bool = True) -> None:
        self._t0 = time.monotonic()
        self._total = 0
        self._ended = 0
        self._terminal = terminal

    def _say(self, text: str) -> None:
        if self._terminal:
            print(f"mailmigrate: [{time.monotonic() - self._t0:7.1f}s] {text}", file=sys.stderr,
                  flush=True)
        LOGGER.info(text, extra=FILE_ONLY)  # the file's line has its own timestamp

    def start(self, mode: str, rows: Sequence[AccountRow]) -> None:
        self._total = len(rows)
        self._say(f"batch {mode}: {len(rows)} accounts")

    def chunk_done(self, row: AccountRow, pass_: str, report: ChunkReport, finished: bool,
                   failed: bool) -> None:
        if failed:
            self._ended += 1
            self._say(f"({self._ended}/{self._total}) FAILED {row.label}: {report.error}")
        elif not report.ok:
            self._say(f"retrying {row.label} (attempt {row.attempts} failed: {report.error})")
        elif finished:
            self._ended += 1
            what = (f"{row.messages} messages, {human_bytes(row.bytes)}" if pass_ != "verify"
                    else _verify_text(report))
            errors = f", {row.errors} errors" if row.errors and pass_ != "verify" else ""
            self._say(f"({self._ended}/{self._total}) {pass_} done: {row.label}: {what}{errors}")

    def finish(self, summary: PassSummary) -> None:
        self._say(f"batch {summary.mode}: {summary.finished} of {summary.accounts} accounts "
                  f"finished, {len(summary.failed)} failed, {summary.messages} messages, "
                  f"{human_bytes(summary.bytes)} in {summary.wall_s:.1f} s")


class TtyProgress(QuietProgress):
    """A tqdm bar of accounts (bytes moved in its postfix) and a line of accounts in flight;
    ``lines`` (the --log-file's) hears everything too."""

    def __init__(self, lines: QuietProgress | None = None) -> None:
        self._bar: Any = None
        self._flight: Any = None
        self._active: dict[int, str] = {}
        self._bytes = 0
        self._lines = lines or QuietProgress()

    def start(self, mode: str, rows: Sequence[AccountRow]) -> None:
        from tqdm import tqdm

        self._lines.start(mode, rows)

        self._bar = tqdm(total=len(rows), desc=f"batch {mode}", unit="acct", file=sys.stderr,
                         position=0, dynamic_ncols=True)
        self._flight = tqdm(total=0, bar_format="{desc}", file=sys.stderr, position=1,
                            dynamic_ncols=True)

    def _show(self) -> None:
        names = ", ".join(self._active.values()) or "-"
        self._flight.set_description_str(f"in flight: {names}")
        self._bar.set_postfix_str(human_bytes(self._bytes))

    def chunk_started(self, row: AccountRow, pass_: str) -> None:
        self._active[row.id] = row.label.split(" -> ")[0]
        self._show()

    def chunk_done(self, row: AccountRow, pass_: str, report: ChunkReport, finished: bool,
                   failed: bool) -> None:
        self._lines.chunk_done(row, pass_, report, finished, failed)
        self._active.pop(row.id, None)
        self._bytes += report.bytes
        if failed:
            self._bar.write(f"FAILED {row.label}: {report.error}", file=sys.stderr)
        if failed or finished:
            self._bar.update(1)
        self._show()

    def finish(self, summary: PassSummary) -> None:
        self._flight.close()
        self._bar.close()
        self._lines.finish(summary)


def _verify_text(report: ChunkReport) -> str:
    from migrate.fleet.probe import summary_line

    return summary_line(report.verify) if report.verify else "counted"


def make_progress(quiet: bool) -> QuietProgress:
    """Bar, lines or nothing on stderr; the --log-file's lines whichever (open it first)."""
    to_file = LineProgress(terminal=False) if has_log_file() else None
    if quiet:
        return to_file or QuietProgress()
    return TtyProgress(to_file) if sys.stderr.isatty() else LineProgress()


__all__ = ["LineProgress", "QuietProgress", "TtyProgress", "make_progress"]
