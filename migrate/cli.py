"""Command line: parse, build stores, run the engine, render. Nothing else.

Every expected failure is a :class:`MailmigrateError` rendered as one line
with its exit code; tracebacks only with MAILMIGRATE_DEBUG=1. Typer's
pretty exceptions are off: they print locals, and locals hold passwords.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from migrate import __version__
from migrate.archive import open_archive
from migrate.endpoints import Endpoint, PasswordSource, parse_endpoint
from migrate.engine import TransferOptions, TransferResult, transfer
from migrate.errors import (
    EXIT_ARCHIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MailmigrateError,
    UsageError,
)
from migrate.progress import LogReporter, NullReporter, Reporter, TqdmReporter, human_bytes

app = typer.Typer(
    name="mailmigrate",
    help="Back up, drain, restore and migrate email over IMAP and POP3, exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options ---------------------------------------------------------------
FolderOpt = Annotated[list[str] | None, typer.Option(
    "--folder", "-f", help="Only folders matching this glob (repeatable; 'Work' includes Work/*).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--exclude", "-x", help="Skip folders matching this glob (repeatable).")]
SinceOpt = Annotated[str | None, typer.Option(
    help="Only messages with INTERNALDATE on or after this day (YYYY-MM-DD).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
PassEnvOpt = Annotated[str | None, typer.Option(
    "--password-env", metavar="VAR", help="Read the password from this environment variable.")]
PassFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", metavar="PATH", help="Read the password from this file (first line).")]
PassCmdOpt = Annotated[str | None, typer.Option(
    "--password-command", metavar="CMD", help="Run this command; its output is the password.")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="Allow ?tls=none (plaintext) to a host that is not loopback.")]
CafileOpt = Annotated[Path | None, typer.Option(
    "--cafile", help="Trust this CA bundle (PEM) for the server's certificate.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="Archive format: sqlite or mbox-tree (default: guessed from the path).")]
TimeoutOpt = Annotated[float, typer.Option(help="Network timeout in seconds.")]
LockWaitOpt = Annotated[float, typer.Option(
    "--lock-wait", help="Seconds to wait for another run to release the archive.")]


def fail(exc: MailmigrateError) -> NoReturn:
    typer.echo(f"mailmigrate: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def run_guarded(body: Callable[[], int]) -> None:
    """Run a command body, turning expected failures into one line and an exit code."""
    try:
        code = body()
    except MailmigrateError as exc:
        if os.environ.get("MAILMIGRATE_DEBUG"):
            raise
        fail(exc)
    except KeyboardInterrupt:
        typer.echo("mailmigrate: interrupted; run the same command again to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        if os.environ.get("MAILMIGRATE_DEBUG"):
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            where = f" ({exc.filename})" if exc.filename else ""
            typer.echo(f"mailmigrate: error: cannot write the archive{where}: {exc.strerror}; "
                       "free space or fix permissions, then run again", err=True)
            raise typer.Exit(EXIT_ARCHIVE) from None
        raise
    raise typer.Exit(code)


def parse_since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"bad --since {value!r}: expected a day like 2024-01-31") from None


def make_reporter(quiet: bool, as_json: bool) -> Reporter:
    if quiet:
        return NullReporter()
    if sys.stderr.isatty():
        return TqdmReporter()
    return LogReporter()


def password_source(endpoint: Endpoint, env: str | None, file: Path | None,
                    command: str | None) -> PasswordSource:
    return PasswordSource(env=env, file=file, command=command,
                          prompt_label=f"password for {endpoint.user}@{endpoint.host}")


def emit_summary(command: str, result: TransferResult, extra: dict[str, Any]) -> None:
    payload: dict[str, Any] = {"command": command, **extra, **result.as_dict()}
    typer.echo(json.dumps(payload, ensure_ascii=False))


def exit_code_for(result: TransferResult) -> int:
    return EXIT_PARTIAL if result.errors else EXIT_OK


# -- commands ---------------------------------------------------------------------
@app.command()
def backup(
    source: Annotated[str, typer.Argument(help="imaps://user@host[:port] or imap://… (STARTTLS).")],
    archive: Annotated[str, typer.Argument(help="archive.sqlite, or a directory for an mbox tree.")],
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    since: SinceOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    archive_format: FormatOpt = None,
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
) -> None:
    """Mirror an IMAP account's folder tree into an archive; re-runs fetch only what is new."""

    def body() -> int:
        from migrate.stores.imap import ImapSource

        endpoint = parse_endpoint(source, insecure=insecure,
                                  cafile=str(cafile) if cafile else None)
        options = TransferOptions(include=folder or (), exclude=exclude or (),
                                  since=parse_since(since), dry_run=dry_run)
        account = f"{endpoint.user}@{endpoint.host}"
        password = password_source(endpoint, password_env, password_file, password_command)
        if dry_run and not Path(archive).expanduser().exists():
            from migrate.stores.empty import EmptyDestination

            dest: Any = EmptyDestination()
        else:
            dest = open_archive(archive, archive_format, account=account, readonly=dry_run,
                                lock_wait=lock_wait)
        try:
            src = ImapSource(endpoint, password, timeout=timeout)
            try:
                result = transfer(src, dest, options, make_reporter(quiet, as_json))
            finally:
                src.close()
        finally:
            dest.close()
        if as_json:
            emit_summary("backup", result, {"source": endpoint.display(), "archive": archive})
        return exit_code_for(result)

    run_guarded(body)


@app.command("ls")
def list_archive(
    archive: Annotated[str, typer.Argument(help="The archive to list.")],
    as_json: JsonOpt = False,
    archive_format: FormatOpt = None,
) -> None:
    """List an archive's folders with message counts and sizes."""

    def body() -> int:
        store = open_archive(archive, archive_format, readonly=True)
        try:
            rows = store.folder_summary()
        finally:
            store.close()
        if as_json:
            typer.echo(json.dumps([
                {"folder": f.name, "messages": n, "bytes": size, "special_use": f.special_use}
                for f, n, size in rows], ensure_ascii=False))
            return EXIT_OK
        width = max((len(f.name) for f, _, _ in rows), default=6)
        for f, n, size in rows:
            special = f"  {f.special_use}" if f.special_use else ""
            typer.echo(f"{f.name:<{width}}  {n:>8}  {human_bytes(size):>10}{special}")
        total_n = sum(n for _, n, _ in rows)
        total_b = sum(s for _, _, s in rows)
        typer.echo(f"{'total':<{width}}  {total_n:>8}  {human_bytes(total_b):>10}")
        return EXIT_OK

    run_guarded(body)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mailmigrate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="Show the version.")] = False,
) -> None:
    """Back up, drain, restore and migrate email over IMAP and POP3, exactly once."""


def main() -> None:
    app()
