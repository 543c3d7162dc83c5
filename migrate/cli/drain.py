"""`mailmigrate drain`: a POP3 maildrop into an archive, then (if asked) off the server.

drain is ``backup`` with a different source: the same engine, archives,
credentials, exit codes and ``--json``; POP3 is one more store. What it adds
is retention (:mod:`migrate.engine.retention`), which runs only after the engine
has committed everything, and progress by bytes, because POP3 tells the
size of every message up front (LIST) and counts alone say little when one
message is 20 MB.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from migrate.archive.open import open_archive
from migrate.cli.common import (
    CafileOpt,
    DryRunOpt,
    FormatOpt,
    InsecureOpt,
    JsonOpt,
    LockWaitOpt,
    LogFileOpt,
    LoginOptions,
    MaxBytesOpt,
    MaxTimeOpt,
    OAuth2Opt,
    Outcome,
    PassCmdOpt,
    PassEnvOpt,
    PassFileOpt,
    ProviderOpt,
    QuietOpt,
    RateOpt,
    RetriesOpt,
    RetryDelayOpt,
    TimeoutOpt,
    app,
    budget,
    check_archive_path,
    retry_policy,
    run_guarded,
    transfer_outcome,
)
from migrate.config.endpoints import parse_endpoint
from migrate.engine import progress
from migrate.engine.progress import LogReporter, human_bytes
from migrate.engine.ratelimit import limited
from migrate.engine.retry import RetryingSource, open_retrying, retry_call
from migrate.engine.transfer import TransferOptions, transfer
from migrate.errors import ConnectError
from migrate.model import FolderCheckpoint
from migrate.reporting import NullReporter, Reporter

if TYPE_CHECKING:
    from migrate.results import FolderResult, TransferResult

DeleteOpt = Annotated[bool, typer.Option(
    "--delete", help="Delete each message from the server once it is durably archived.")]
DeleteOlderOpt = Annotated[int | None, typer.Option(
    "--delete-older-than", metavar="DAYS",
    help="Delete only messages archived at least DAYS ago ('leave on server for N days').")]
AuthOpt = Annotated[str, typer.Option(
    "--auth", help="auto (SASL PLAIN if offered, else USER/PASS), plain, user or apop.")]


class ByteProgress(NullReporter):
    """Progress in bytes of the messages still to download (from LIST sizes).

    ``total`` is asked for when the engine starts the folder, i.e. after the
    listing and before the first byte of mail; a bar on a TTY (and a summary
    line when it ends), a timestamped line every ``interval`` seconds otherwise.
    """

    def __init__(self, total: Callable[[], tuple[int, int]], tty: bool,
                 interval: float = 10.0) -> None:
        self._total = total
        self._tty = tty
        self._interval = interval
        if not tty:
            progress.log_to_stderr()
        self._log = LogReporter(interval=interval)
        self._bar: Any = None
        self._todo_msgs = 0
        self._todo_bytes = 0
        self._msgs = 0
        self._bytes = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def start(self, folders: int) -> None:
        self._t0 = time.monotonic()

    def folder_start(self, folder: str, expected_messages: int) -> None:
        self._todo_msgs, self._todo_bytes = self._total()
        self._last = time.monotonic()
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self._todo_bytes, unit="B", unit_scale=True, unit_divisor=1000,
                             desc=f"{folder} ({self._todo_msgs} msgs)", file=sys.stderr, leave=False)
        else:
            self._log._say(f"{folder}: {self._todo_msgs} messages "
                           f"({human_bytes(self._todo_bytes)}) to download")

    def advance(self, messages: int, nbytes: int) -> None:
        self._msgs += messages
        self._bytes += nbytes
        if self._bar is not None:
            self._bar.update(nbytes)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            pct = 100.0 * self._bytes / self._todo_bytes if self._todo_bytes else 100.0
            self._log._say(f"{self._msgs} of {self._todo_msgs} messages, "
                           f"{human_bytes(self._bytes)} of {human_bytes(self._todo_bytes)} "
                           f"({pct:.0f}%)")

    def folder_done(self, result: FolderResult) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if result.error:
            self.say(f"{result.name}: FAILED: {result.error}")

    def warn(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(f"warning: {text}", file=sys.stderr)
        else:
            self._log.warn(text)

    def finish(self, result: TransferResult) -> None:
        if self._tty:
            for line in progress.summary_table(result, time.monotonic() - self._t0):
                sys.stderr.write(line + "\n")
        else:
            self._log.finish(result)

    def say(self, text: str) -> None:
        if self._tty:
            sys.stderr.write(f"mailmigrate: {text}\n")
        else:
            self._log._say(text)


@app.command()
def drain(
    source: Annotated[str, typer.Argument(
        help="pop3s://user@host[:port] (implicit TLS) or pop3://... (STLS).")],
    archive: Annotated[str, typer.Argument(help="archive.sqlite, or a directory for an mbox tree.")],
    delete: DeleteOpt = False,
    delete_older_than: DeleteOlderOpt = None,
    auth: AuthOpt = "auto",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    oauth2_token_command: OAuth2Opt = None,
    provider: ProviderOpt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    archive_format: FormatOpt = None,
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
    retries: RetriesOpt = 5,
    retry_delay: RetryDelayOpt = 1.0,
    rate: RateOpt = None,
    max_time: MaxTimeOpt = None,
    max_bytes: MaxBytesOpt = None,
    log_file: LogFileOpt = None,
) -> None:
    """Download a POP3 inbox into an archive; re-runs fetch only new UIDLs.

    Nothing is deleted from the server unless --delete or --delete-older-than
    is given, and then only messages that are durably in the archive.
    """

    def body() -> Outcome:
        from migrate.engine import retention
        from migrate.stores.pop3 import INBOX, Pop3Source

        endpoint = parse_endpoint(source, insecure=insecure,
                                  cafile=str(cafile) if cafile else None, protocols=("pop3",),
                                  provider=provider)
        check_archive_path(archive, archive_format)
        policy = retention.RetentionPolicy.from_options(delete, delete_older_than)
        account = f"{endpoint.user}@{endpoint.host}"
        password = LoginOptions(password_env, password_file, password_command,
                                oauth2_token_command).source(endpoint)
        if not password.is_oauth2:
            password.get()  # no password: said before any connection or file
        # Log in first: a run that cannot start leaves no empty archive behind. The
        # first connection has the same retry budget as every later one.
        src = open_retrying(retry_policy(retries, retry_delay),
                            NullReporter() if quiet else LogReporter(),
                            f"connecting to {endpoint.host}",
                            lambda: Pop3Source(endpoint, password, timeout=timeout, auth=auth))
        try:
            if dry_run and not Path(archive).expanduser().exists():
                from migrate.stores.empty import EmptyDestination

                dest: Any = EmptyDestination()
            elif dry_run:
                # read-only archives answer checkpoint/missing/archived_at without writing
                dest = open_archive(archive, archive_format, account=account, readonly=True)
            else:
                dest = open_archive(archive, archive_format, account=account, lock_wait=lock_wait)
            try:
                def todo() -> tuple[int, int]:
                    refs = list(src.list_new(INBOX, FolderCheckpoint()))
                    missing = dest.missing(INBOX, refs)
                    return len(missing), sum(r.size for r in missing)

                reporter: Reporter = (NullReporter() if quiet
                                      else ByteProgress(todo, tty=sys.stderr.isatty()))
                if progress.has_log_file():
                    reporter = progress.TeeReporter([reporter, progress.make_reporter(True)])
                would: list[str] = []
                if dry_run:
                    refs = list(src.list_new(INBOX, FolderCheckpoint()))
                    would = [r.key for r in dest.missing(INBOX, refs)]
                # Reconnects map the same UIDLs onto the new session's numbers;
                # retention below then works on that (latest) session.
                retrying = RetryingSource(src, retry_policy(retries, retry_delay), reporter)
                options = TransferOptions(dry_run=dry_run, budget=budget(max_time, max_bytes))
                result = transfer(limited(retrying, rate), dest, options, reporter)
                if src.broken or result.errors:
                    # The engine stopped early or the stream is out of step: delete nothing.
                    outcome = retention.RetentionOutcome(kept=src.listed_count)
                    if policy.deletes:
                        outcome.warnings.append("the download did not finish, so nothing was "
                                                "deleted; run the same command again")
                else:
                    # A drop during DELE deleted nothing (marks die with the
                    # session): reconnect, list again and delete what is archived.
                    outcome = retry_call(
                        retrying.policy, reporter, src, "deleting archived messages",
                        lambda: retention.apply(src, dest, policy, dry_run=dry_run,
                                                would_archive=would))
            finally:
                dest.close()
        finally:
            src.close()
        for text in [*outcome.warnings, *src.failed]:
            if not quiet:
                typer.echo(f"mailmigrate: warning: {text}", err=True)
        if not quiet:
            verb = "would delete" if dry_run else "deleted"
            count = outcome.planned if dry_run else outcome.deleted
            typer.echo(f"mailmigrate: {verb} {count} messages from the server, "
                       f"{outcome.kept} left there", err=True)
        lost_quit = bool(outcome.planned) and not dry_run and not outcome.quit_confirmed
        extra: dict[str, Any] = {"source": endpoint.display(), "archive": archive,
                                 **outcome.as_dict(), "failed": list(src.failed),
                                 "fingerprinted": src.fingerprinted}
        summary = transfer_outcome(result, extra, src.failed)
        if lost_quit:
            text = (f"connection to {endpoint.host} ended before the server confirmed QUIT, so it "
                    "deleted nothing; everything downloaded is archived, and the next run "
                    "deletes those messages without downloading them again")
            typer.echo(f"mailmigrate: error: {text}", err=True)
            progress.LOGGER.error(f"error: {text}", extra=progress.FILE_ONLY)
            return Outcome(ConnectError.exit_code, summary.fields, [*summary.errors, text])
        return summary

    run_guarded(body, command="drain", as_json=as_json, log_file=log_file)
