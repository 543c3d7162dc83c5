"""Progress: what the engine tells, and the ways to show it.

The engine calls a :class:`Reporter`; the CLI picks tqdm bars on a TTY,
timestamped log lines (stdlib :mod:`logging`) otherwise, or nothing with
--quiet; ``--log-file`` adds the log lines to a file, whatever the terminal
shows. Everything goes to stderr: stdout is reserved for data (the --json
summary, ``ls`` output).

The run's total comes before the first message moves (the engine's first
pass of STATUS, see :meth:`Reporter.planned`), so the bar's ETA is true from
the start instead of growing as folders open. When a TTY run ends the bars
make room for a per-folder table; when it is interrupted,
:func:`release_terminal` clears them first, so the last line is readable.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from migrate.reporting import NullReporter, Reporter
from migrate.results import FolderResult, TransferResult

#: The logger every progress and error line goes through; its handlers are
#: the terminal (off a TTY) and the --log-file.
LOGGER = logging.getLogger("mailmigrate")
LOGGER.addHandler(logging.NullHandler())  # never logging's "last resort" stderr printer
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)
_FORMAT = logging.Formatter("%(asctime)s mailmigrate: %(message)s", "%Y-%m-%dT%H:%M:%S%z")
#: ``extra`` for a record that only the log file should get (the terminal has
#: its own copy of the line, printed without a timestamp).
FILE_ONLY = {"file_only": True}


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def _handler(name: str) -> logging.Handler | None:
    return next((h for h in LOGGER.handlers if h.get_name() == name), None)


def log_to_file(path: Path) -> None:
    """Append every log line, with its timestamp, to ``path`` (``--log-file``)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.set_name("file")
    handler.setFormatter(_FORMAT)
    LOGGER.addHandler(handler)


def log_to_stderr(level: int = logging.NOTSET) -> None:
    """Log lines with timestamps on stderr (when it is not a terminal); ``level``:
    only those at least that grave (a fleet shows its own progress, and its warnings)."""
    if _handler("stderr") is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name("stderr")
        handler.setLevel(level)
        handler.setFormatter(_FORMAT)
        handler.addFilter(_NotFileOnly())
        LOGGER.addHandler(handler)


def has_log_file() -> bool:
    return _handler("file") is not None


def close_logs() -> None:
    """Flush and drop the handlers (the end of a command; tests run several in one process)."""
    for handler in list(LOGGER.handlers):
        if handler.get_name() in ("file", "stderr"):
            LOGGER.removeHandler(handler)
            handler.close()


def human_bytes(n: float) -> str:
    """Decimal units throughout (1 MB = 10**6 bytes), as ``--rate 2MB`` takes them."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop returns at GB


def _eta(done: int, total: int, elapsed: float) -> str:
    if done <= 0 or total <= done or elapsed <= 0:
        return ""
    left = elapsed * (total - done) / done
    return f", about {int(left // 60)} min {int(left % 60)} s left"


class LogReporter(NullReporter):
    """Plain, timestamped lines, for cron mails and log files (no TTY)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = LOGGER,
                 interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._folder = ""
        self._count = 0
        self._bytes = 0
        self._total = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def _say(self, text: str) -> None:
        # One record per line: worker threads (--max-connections) warn too.
        self.logger.info(text)

    def start(self, folders: int) -> None:
        self._t0 = self._last = time.monotonic()
        self._say(f"{folders} folders to check")

    def planned(self, expected: dict[str, int]) -> None:
        self._total = sum(expected.values())
        if self._total:
            busy = sum(1 for n in expected.values() if n)
            self._say(f"{self._total} messages to transfer in {busy} folder{'s' if busy != 1 else ''}")

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
            of = f" of {self._total}" if self._total >= self._count else ""
            self._say(f"{self._count}{of} messages, {human_bytes(self._bytes)} so far "
                      f"(latest folder: {self._folder}"
                      f"{_eta(self._count, self._total, now - self._t0)})")

    def folder_done(self, result: FolderResult) -> None:
        if result.error:
            self._say(f"{result.name}: FAILED: {result.error}")
        elif result.new_messages or result.flags_updated:
            self._say(f"{result.name}: {result.new_messages} new "
                      f"({human_bytes(result.new_bytes)}), {result.flags_updated} flag updates")

    def warn(self, text: str) -> None:
        self.logger.warning(f"warning: {text}")

    def finish(self, result: TransferResult) -> None:
        took = time.monotonic() - self._t0
        verb = "would transfer" if result.dry_run else "transferred"
        self._say(f"done: {verb} {result.new_messages} messages "
                  f"({human_bytes(result.new_bytes)}) in {took:.1f}s; "
                  f"{len(result.errors)} folder errors")


def summary_table(result: TransferResult, seconds: float | None = None) -> list[str]:
    """The per-folder table a TTY run ends with: every folder that moved or failed,
    the unchanged ones counted in one line, and a total."""
    rows = [f for f in result.folders if f.new_messages or f.flags_updated or f.error or f.vanished]
    quiet = len(result.folders) - len(rows)
    width = max([len("folder"), len("total"), *(len(f.name) for f in rows)])
    width = min(width, 40)
    verb = "would copy" if result.dry_run else "new"
    lines = [f"{'folder':<{width}}  {verb:>10}  {'size':>10}  {'flags':>6}"]
    for f in rows:
        name = f.name if len(f.name) <= width else f.name[: width - 3] + "..."
        note = f"  FAILED: {f.error}" if f.error else ""
        lines.append(f"{name:<{width}}  {f.new_messages:>10}  {human_bytes(f.new_bytes):>10}  "
                     f"{f.flags_updated:>6}{note}")
    if quiet:
        lines.append(f"({quiet} folder{'s' if quiet != 1 else ''} with nothing new)")
    took = f"  in {seconds:.1f} s" if seconds is not None else ""
    lines.append(f"{'total':<{width}}  {result.new_messages:>10}  {human_bytes(result.new_bytes):>10}  "
                 f"{result.flags_updated:>6}{took}")
    return lines


_ACTIVE: list[TqdmReporter] = []


def release_terminal() -> None:
    """Clear the bars of a run that stops early (Ctrl-C, an error), so that the
    line printed next starts below them instead of on top of them."""
    while _ACTIVE:
        _ACTIVE.pop().close_bars()


class TqdmReporter(NullReporter):
    """Bars on a TTY: folders checked, and messages copied out of the run's total
    (known before the first message moves; one bar for all, since with
    --max-connections several folders advance at once). At the end the bars give
    way to a per-folder table."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._overall: Any = None
        self._messages: Any = None
        self._expected: dict[str, int] = {}
        self._bytes = 0
        self._t0 = time.monotonic()
        _ACTIVE.append(self)

    def start(self, folders: int) -> None:
        self._t0 = time.monotonic()
        self._overall = self._tqdm(total=folders, unit="folder", desc="folders", position=0,
                                   leave=False, file=sys.stderr)

    def planned(self, expected: dict[str, int]) -> None:
        self._expected = dict(expected)
        self._messages = self._tqdm(total=sum(expected.values()), unit="msg", desc="messages",
                                    position=1, leave=False, file=sys.stderr)

    def folder_start(self, folder: str, expected_messages: int) -> None:
        if self._messages is None:  # a caller that plans nothing: grow as folders open
            self.planned({})
        if folder not in self._expected:
            self._expected[folder] = max(expected_messages, 0)
            self._messages.total += self._expected[folder]
        self._messages.set_postfix_str(f"{human_bytes(self._bytes)}, {folder[:30]}", refresh=False)
        self._messages.refresh()

    def advance(self, messages: int, nbytes: int) -> None:
        if self._messages is not None:
            self._bytes += nbytes
            self._messages.update(messages)
            self._messages.set_postfix_str(human_bytes(self._bytes), refresh=False)

    def folder_done(self, result: FolderResult) -> None:
        if self._overall is not None:
            self._overall.update(1)
        # A folder that moved fewer than STATUS promised (--since, vanished
        # messages) takes its remainder off the total, so the bar ends at 100%.
        short = self._expected.pop(result.name, 0) - result.new_messages
        if self._messages is not None and short > 0:
            self._messages.total = max(self._messages.total - short, self._messages.n)
            self._messages.refresh()
        if result.error:
            self._tqdm.write(f"{result.name}: FAILED: {result.error}", file=sys.stderr)

    def warn(self, text: str) -> None:
        self._tqdm.write(f"warning: {text}", file=sys.stderr)

    def close_bars(self) -> None:
        for name in ("_messages", "_overall"):  # the lower bar first
            bar = getattr(self, name)
            if bar is not None:
                bar.close()
                setattr(self, name, None)

    def finish(self, result: TransferResult) -> None:
        self.close_bars()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for line in summary_table(result, time.monotonic() - self._t0):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


class TeeReporter(NullReporter):
    """Tells several reporters the same (the bars on the terminal and the log file)."""

    def __init__(self, reporters: Iterable[Reporter]) -> None:
        self.reporters = list(reporters)

    def start(self, folders: int) -> None:
        for r in self.reporters:
            r.start(folders)

    def planned(self, expected: dict[str, int]) -> None:
        for r in self.reporters:
            r.planned(expected)

    def folder_start(self, folder: str, expected_messages: int) -> None:
        for r in self.reporters:
            r.folder_start(folder, expected_messages)

    def advance(self, messages: int, nbytes: int) -> None:
        for r in self.reporters:
            r.advance(messages, nbytes)

    def folder_done(self, result: FolderResult) -> None:
        for r in self.reporters:
            r.folder_done(result)

    def warn(self, text: str) -> None:
        for r in self.reporters:
            r.warn(text)

    def finish(self, result: TransferResult) -> None:
        for r in self.reporters:
            r.finish(result)


def make_reporter(quiet: bool, tty: bool | None = None) -> Reporter:
    """Bars on a terminal, timestamped lines elsewhere, nothing with ``quiet``;
    plus the log file's lines when ``--log-file`` is given (even with ``quiet``)."""
    tty = sys.stderr.isatty() if tty is None else tty
    reporters: list[Reporter] = []
    if not quiet and tty:
        reporters.append(TqdmReporter())
        if has_log_file():
            reporters.append(LogReporter(_FileOnlyLogger()))
    elif not quiet:
        log_to_stderr()
        reporters.append(LogReporter())
    elif has_log_file():
        reporters.append(LogReporter(_FileOnlyLogger()))
    if not reporters:
        return NullReporter()
    return reporters[0] if len(reporters) == 1 else TeeReporter(reporters)


class _FileOnlyLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """:data:`LOGGER`, but only its file gets the lines (the terminal shows bars)."""

    def __init__(self) -> None:
        super().__init__(LOGGER, FILE_ONLY)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = FILE_ONLY
        return msg, kwargs
