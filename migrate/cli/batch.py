"""``batch`` (a ledger of many accounts and the passes over it) and ``worker`` (scale-out).

A thin layer over :mod:`migrate.fleet`: options in, a ledger opened, a pass
driven by the local pool or by workers behind a broker, the outcome rendered.
See docs/fleet.md for the walkthrough (CSV -> verify -> run -> delta -> final
-> report). ``--json`` is the envelope every command prints (docs/json.md).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from migrate.cli.common import JsonOpt, LogFileOpt, Outcome, QuietOpt, app, run_guarded
from migrate.config.rates import parse_size
from migrate.errors import EXIT_OK, EXIT_PARTIAL, UsageError

batch_app = typer.Typer(help="Migrate many accounts: a ledger, passes (verify, run, final, retry), "
                        "status and a report.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")

LedgerArg = Annotated[Path, typer.Argument(help="The batch ledger (a SQLite file).")]
AccountsOpt = Annotated[Path, typer.Option(
    "--accounts", metavar="FILE",
    help="CSV of accounts: kind,source,dest,source_password,dest_password; or imapsync's "
    "host1;user1;password1;host2;user2;password2; or Exchange's EmailAddress,UserName,Password.")]
CsvFormatOpt = Annotated[str, typer.Option(
    "--format", help="auto, native, imapsync or exchange.")]
SourceHostOpt = Annotated[str | None, typer.Option(
    "--source-host", metavar="HOST",
    help="Exchange CSV: the source server (a host, or a URL like imap://host:143).")]
DestHostOpt = Annotated[str | None, typer.Option(
    "--dest-host", metavar="HOST", help="Exchange CSV: the destination server.")]
AllowClearOpt = Annotated[bool, typer.Option(
    "--allow-clear-passwords",
    help="Accept clear passwords in the file (they are kept in the ledger, mode 0600).")]
SourcePwOpt = Annotated[str | None, typer.Option(
    "--source-password", metavar="REF",
    help="For rows without one: where the source password comes from (env:VAR, file:PATH, "
    "command:CMD, keyring:NAME, oauth2-command:CMD).")]
DestPwOpt = Annotated[str | None, typer.Option(
    "--dest-password", metavar="REF", help="For rows without one: the destination's (as above).")]
InsecureLedgerOpt = Annotated[bool, typer.Option(
    "--insecure", help="Allow ?tls=none (plaintext) to hosts that are not loopback.")]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", "-w", min=1, metavar="N", help="Accounts at once on this machine.")]
PerHostOpt = Annotated[list[str] | None, typer.Option(
    "--per-host", metavar="HOST=N",
    help="At most N sessions at once to HOST (or HOST:PORT), over all workers (repeatable; "
    "default: the provider preset's cap).")]
AttemptsOpt = Annotated[int, typer.Option(
    "--attempts", min=1, metavar="N", help="Fail an account after N failed attempts in a row.")]
RetryWaitOpt = Annotated[float, typer.Option(
    "--retry-delay", min=0.0, metavar="SECONDS",
    help="Wait SECONDS x attempts before trying a failed account again.")]
ChunkTimeOpt = Annotated[float, typer.Option(
    "--chunk-time", min=0.1, metavar="SECONDS",
    help="A chunk of one account stops at the next checkpoint after SECONDS.")]
ChunkSizeOpt = Annotated[str, typer.Option(
    "--chunk-size", metavar="SIZE", help="Or stop at the next checkpoint after SIZE of mail (e.g. 500MB).")]
ChunkDeadlineOpt = Annotated[float | None, typer.Option(
    "--chunk-deadline", min=1.0, metavar="SECONDS",
    help="Kill a chunk still running after SECONDS (default: 2 x --chunk-time + 300).")]
BrokerOpt = Annotated[str | None, typer.Option(
    "--broker", metavar="URL",
    help="Hand the chunks to `mailmigrate worker`s through this Redis (redis://host:port/0); "
    "needs the distributed extra (docs/fleet.md).")]
HeartbeatOpt = Annotated[float, typer.Option(
    "--heartbeat-timeout", min=1.0, metavar="SECONDS",
    help="Scale-out: a worker silent this long is dead and its chunks go to others "
    "(the same on the dispatcher and every worker).")]


def _read(path: Path, fmt: str, source_host: str | None, dest_host: str | None, allow_clear: bool,
          source_password: str | None, dest_password: str | None, insecure: bool) -> list[Any]:
    from migrate.fleet.accounts import read_accounts

    return read_accounts(path, fmt=fmt, source_host=source_host, dest_host=dest_host,
                         allow_clear=allow_clear, source_password=source_password,
                         dest_password=dest_password, insecure=insecure)


@batch_app.command("init")
def batch_init(
    ledger: LedgerArg,
    accounts: AccountsOpt,
    fmt: CsvFormatOpt = "auto",
    source_host: SourceHostOpt = None,
    dest_host: DestHostOpt = None,
    allow_clear_passwords: AllowClearOpt = False,
    source_password: SourcePwOpt = None,
    dest_password: DestPwOpt = None,
    insecure: InsecureLedgerOpt = False,
) -> None:
    """Create a ledger from a CSV of accounts (a bad row rejects the file, naming its line)."""
    from migrate.fleet.ledger import Ledger

    def body() -> int:
        specs = _read(accounts, fmt, source_host, dest_host, allow_clear_passwords,
                      source_password, dest_password, insecure)
        with Ledger(ledger, create=True) as book:
            if insecure:
                book.set_meta("insecure", "1")
            book.add(specs)
        typer.echo(f"{ledger}: {len(specs)} accounts; next: mailmigrate batch verify {ledger}")
        return EXIT_OK

    run_guarded(body)


@batch_app.command("add")
def batch_add(
    ledger: LedgerArg,
    accounts: AccountsOpt,
    fmt: CsvFormatOpt = "auto",
    source_host: SourceHostOpt = None,
    dest_host: DestHostOpt = None,
    allow_clear_passwords: AllowClearOpt = False,
    source_password: SourcePwOpt = None,
    dest_password: DestPwOpt = None,
) -> None:
    """Add the accounts of a CSV to a ledger (all or none)."""
    from migrate.fleet.ledger import Ledger

    def body() -> int:
        with Ledger(ledger) as book:
            specs = _read(accounts, fmt, source_host, dest_host, allow_clear_passwords,
                          source_password, dest_password, book.insecure)
            book.add(specs)
        typer.echo(f"{ledger}: added {len(specs)} accounts")
        return EXIT_OK

    run_guarded(body)


@batch_app.command("remove")
def batch_remove(
    ledger: LedgerArg,
    account: Annotated[list[str], typer.Argument(help="Account ids or logins (see `batch status`).")],
) -> None:
    """Remove accounts from a ledger (their mail and checkpoints stay where they are)."""
    from migrate.fleet.ledger import Ledger

    def body() -> int:
        with Ledger(ledger) as book:
            gone = book.remove(account)
        for row in gone:
            typer.echo(f"removed {row.id}: {row.label}")
        return EXIT_OK

    run_guarded(body)


def _drive(ledger: Path, mode: str, *, workers: int, per_host: list[str] | None, attempts: int,
           retry_delay: float, chunk_time: float, chunk_size: str, chunk_deadline: float | None,
           broker: str | None, heartbeat: float, as_json: bool, quiet: bool) -> Outcome:
    from migrate.engine import progress
    from migrate.fleet.chunk import ChunkLimits
    from migrate.fleet.hosts import parse_per_host
    from migrate.fleet.ledger import Ledger
    from migrate.fleet.passes import PassOptions, drive
    from migrate.fleet.progress import make_progress

    caps = parse_per_host(per_host or [])
    limits = ChunkLimits(seconds=chunk_time, max_bytes=parse_size(chunk_size, "--chunk-size"),
                         deadline=chunk_deadline)
    options = PassOptions(mode=mode, attempts=attempts, retry_delay=retry_delay, limits=limits)
    if not quiet:
        progress.log_to_stderr(logging.WARNING)  # the dispatcher's warnings (a broker gone)
    with Ledger(ledger) as book:
        executor: Any
        if broker:
            from migrate.fleet.distributed import BrokerExecutor

            executor = BrokerExecutor(book, broker, per_host=caps, limits=limits,
                                      heartbeat_timeout=heartbeat)
        else:
            from migrate.fleet.local import LocalPool

            executor = LocalPool(book, workers=workers, per_host=caps, limits=limits)
        try:
            summary = drive(book, executor, options, make_progress(quiet or as_json))
        finally:
            executor.close()
    errors = [*(f"failed: {label}: {reason}" for label, reason in summary.failed),
              *(f"{count} messages not moved: {label}: {first}"
                for label, count, first in summary.with_errors)]
    for text in errors:
        typer.echo(f"mailmigrate: {text}", err=True)
        progress.LOGGER.error(text, extra=progress.FILE_ONLY)
    if mode == "verify" and summary.differing and not quiet and not as_json:
        typer.echo(f"mailmigrate: {len(summary.differing)} accounts differ between source and "
                   "destination (see `batch status`)", err=True)
    return Outcome(EXIT_OK if summary.clean else EXIT_PARTIAL, {
        "mode": mode, "ledger": str(ledger), "accounts": summary.accounts,
        "finished": summary.finished, "messages": summary.messages, "bytes": summary.bytes,
        "wall_s": round(summary.wall_s, 3),
        "failed": [{"account": a, "error": r} for a, r in summary.failed],
        "with_errors": [{"account": a, "errors": n, "first": f}
                        for a, n, f in summary.with_errors],
        "differing": summary.differing}, errors)


def _pass_command(mode: str, doc: str) -> None:
    def command(
        ledger: LedgerArg,
        workers: WorkersOpt = 4,
        per_host: PerHostOpt = None,
        attempts: AttemptsOpt = 3,
        retry_delay: RetryWaitOpt = 5.0,
        chunk_time: ChunkTimeOpt = 600.0,
        chunk_size: ChunkSizeOpt = "500MB",
        chunk_deadline: ChunkDeadlineOpt = None,
        broker: BrokerOpt = None,
        heartbeat_timeout: HeartbeatOpt = 60.0,
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
        log_file: LogFileOpt = None,
        final: bool = False,
    ) -> None:
        def body() -> Outcome:
            return _drive(ledger, "final" if final else mode, workers=workers, per_host=per_host,
                          attempts=attempts, retry_delay=retry_delay, chunk_time=chunk_time,
                          chunk_size=chunk_size, chunk_deadline=chunk_deadline, broker=broker,
                          heartbeat=heartbeat_timeout, as_json=as_json, quiet=quiet)

        run_guarded(body, command=f"batch {mode}", as_json=as_json, log_file=log_file)

    command.__doc__ = doc
    # set here, not in the signature: the annotation depends on the mode (a string
    # annotation could not see this closure's ``mode``)
    command.__annotations__["final"] = Annotated[bool, typer.Option(
        "--final", help="The cutover's last delta; then each account is done.")]
    if mode != "run":  # only `batch run` has --final; the others never see the option
        signature = inspect.signature(command, eval_str=True)
        command.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for name, p in signature.parameters.items() if name != "final"])
    batch_app.command(mode)(command)


_pass_command("verify", "Log in on both sides of every account and count folders, messages and "
              "bytes; moves no mail.")
_pass_command("run", "The full pass (the first time), a delta pass (after); with --final the "
              "cutover's last delta. Killed at any point, run it again: it goes on.")
_pass_command("retry", "Run only the failed accounts again, in the pass they failed in.")


@batch_app.command("status")
def batch_status(
    ledger: LedgerArg,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="One CSV row per account on stdout.")
                      ] = False,
    log_file: LogFileOpt = None,
) -> None:
    """One line per account (state, pass, messages, bytes, errors, attempts, time), totals, ETA."""
    from migrate.fleet.ledger import Ledger
    from migrate.fleet.report import status_csv, status_json, status_lines

    def body() -> Outcome:
        if as_json and as_csv:
            raise UsageError("give --json or --csv, not both")
        with Ledger(ledger, readonly=True) as book:
            rows = book.accounts()
            fields = status_json(book, rows)
            if as_csv:
                typer.echo(status_csv(rows), nl=False)
            elif not as_json:
                for line in status_lines(book, rows):
                    typer.echo(line)
        return Outcome(EXIT_OK, fields)

    run_guarded(body, command="batch status", as_json=as_json, log_file=log_file)


@batch_app.command("report")
def batch_report(
    ledger: LedgerArg,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write the page.")],
    title: Annotated[str | None, typer.Option(help="The page's title.")] = None,
) -> None:
    """Write a self-contained HTML page: a summary and every account, failures first."""
    from migrate.config.jobs import atomic_write
    from migrate.fleet.ledger import Ledger
    from migrate.fleet.report import report_html

    def body() -> int:
        with Ledger(ledger, readonly=True) as book:
            page = report_html(book, book.accounts(), title)
        atomic_write(out, page, mode=0o644)
        typer.echo(f"wrote {out}")
        return EXIT_OK

    run_guarded(body)


@app.command()
def worker(
    broker: Annotated[str, typer.Option("--broker", metavar="URL",
                                        help="The Redis that `batch run --broker` uses.")],
    threads: Annotated[int, typer.Option("--threads", min=1, metavar="N",
                                         help="Chunks at once in this worker.")] = 4,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", metavar="DIR",
        help="Where this worker keeps checkpoint copies (default: the user state directory).")
                       ] = None,
    heartbeat_timeout: HeartbeatOpt = 60.0,
    quiet: QuietOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Run chunks handed out by `batch run --broker` (start one per machine, or several)."""

    def body() -> int:
        from migrate.fleet.distributed import run_worker

        return run_worker(broker, threads=threads, workdir=workdir,
                          heartbeat_timeout=heartbeat_timeout, quiet=quiet)

    run_guarded(body, log_file=log_file)
