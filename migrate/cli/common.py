"""What every command shares: the typer app, option types, error rendering.

Command modules import from here (never from :mod:`migrate.cli.backup`), so each
command can live in its own small module without import cycles.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.engine.progress import LogReporter, TqdmReporter
from migrate.engine.retry import RetryPolicy
from migrate.errors import (
    EXIT_ARCHIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MailmigrateError,
    UsageError,
)
from migrate.reporting import NullReporter, Reporter
from migrate.results import TransferResult

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
ProviderOpt = Annotated[str | None, typer.Option(
    "--provider", metavar="ID",
    help="Provider preset for the server (see `mailmigrate providers`), e.g. for your own domain.")]
OAuth2Opt = Annotated[str | None, typer.Option(
    "--oauth2-token-command", metavar="CMD",
    help="OAuth2 (XOAUTH2/OAUTHBEARER): CMD prints an access token; run again when it expires.")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="Allow ?tls=none (plaintext) to a host that is not loopback.")]
CafileOpt = Annotated[Path | None, typer.Option(
    "--cafile", help="Trust this CA bundle (PEM) for the server's certificate.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="Archive format: sqlite or mbox-tree (default: guessed from the path).")]
TimeoutOpt = Annotated[float, typer.Option(
    help="A connection with no progress (no byte moved either way) for this many seconds "
    "is taken for dead and replaced; a slow transfer that keeps moving is never cut.")]
LockWaitOpt = Annotated[float, typer.Option(
    "--lock-wait", help="Seconds to wait for another run to release the archive.")]
RetriesOpt = Annotated[int, typer.Option(
    "--retries", min=0, metavar="N",
    help="Reconnect up to N times in a row when a connection drops, resets or stalls "
    "(0: stop at the first drop; the next run resumes).")]
RateOpt = Annotated[str | None, typer.Option(
    "--rate", metavar="RATE",
    help="At most this many messages per second (e.g. 20) or bytes per second (e.g. 2MB), "
    "optionally after an unpaced allowance (e.g. '20KB after 700MB').")]
MaxConnectionsOpt = Annotated[int | None, typer.Option(
    "--max-connections", min=1, metavar="N",
    help="Read up to N folders at once, each on its own connection to the source "
    "(default: the provider preset's, else 1). Keep N under the provider's cap.")]
RetryDelayOpt = Annotated[float, typer.Option(
    "--retry-delay", min=0.0, metavar="SECONDS",
    help="First wait before reconnecting; doubled per attempt (with jitter), at most 30 s.")]


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


def retry_policy(retries: int, delay: float) -> RetryPolicy:
    """The reconnect budget of one run (see :mod:`migrate.engine.retry`)."""
    return RetryPolicy(retries=retries, delay=delay)


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
                    command: str | None, oauth2_command: str | None = None,
                    option_prefix: str = "--") -> PasswordSource:
    return PasswordSource(env=env, file=file, command=command, oauth2_command=oauth2_command,
                          prompt_label=f"password for {endpoint.user}@{endpoint.host}",
                          option_prefix=option_prefix)


@dataclass(frozen=True)
class LoginOptions:
    """One server's credential flags as given, and the prefix of their names
    ("--" or "--dest-"), so every error names the options the user typed."""

    env: str | None = None
    file: Path | None = None
    command: str | None = None
    oauth2: str | None = None
    prefix: str = "--"

    @property
    def passwords(self) -> list[str]:
        """The --password-* options given, by name."""
        return [f"{self.prefix}password-{kind}" for kind, value in
                (("env", self.env), ("file", self.file), ("command", self.command)) if value]

    @property
    def given(self) -> bool:
        return bool(self.passwords or self.oauth2)

    def check(self) -> None:
        """A token login and a password login are two answers to one question:
        refuse both rather than silently pick one."""
        if self.oauth2 and self.passwords:
            raise UsageError(f"give either {self.prefix}oauth2-token-command or "
                             f"{self.passwords[0]}, not both")

    def require_token_for(self, endpoint: Endpoint) -> None:
        """A URL asking for an OAuth2 mechanism needs a token command: say so now."""
        if endpoint.auth != "password" and not self.oauth2:
            raise UsageError(f"{endpoint.display()} asks for auth={endpoint.auth}: give "
                             f"{self.prefix}oauth2-token-command CMD (a command printing a token)")

    def source(self, endpoint: Endpoint) -> PasswordSource:
        """The PasswordSource for ``endpoint``, refusing before any connection what
        could only fail at login (and then name the wrong side's option)."""
        self.check()
        self.require_token_for(endpoint)
        return password_source(endpoint, self.env, self.file, self.command, self.oauth2,
                               self.prefix)


def announce(lines: Iterable[str], quiet: bool) -> None:
    """Tell the user, on stderr, which defaults came from where (never with --quiet)."""
    if not quiet:
        for line in lines:
            typer.echo(f"mailmigrate: {line}", err=True)


def emit_summary(command: str, result: TransferResult, extra: dict[str, Any]) -> None:
    payload: dict[str, Any] = {"command": command, **extra, **result.as_dict()}
    typer.echo(json.dumps(payload, ensure_ascii=False))


def exit_code_for(result: TransferResult) -> int:
    return EXIT_PARTIAL if result.errors else EXIT_OK
