"""What every command shares: the typer app, option types, error rendering.

Command modules import from here (never from :mod:`migrate.cli.backup`), so each
command can live in its own small module without import cycles.

A command's body is one call, which gives it the JSON envelope, ``--log-file``
and the error rendering::

    @app.command()
    def frobnicate(archive: ..., as_json: JsonOpt = False, log_file: LogFileOpt = None) -> None:
        def body() -> Outcome:
            ...
            return Outcome(EXIT_OK, {"archive": archive, "frobbed": 3})  # or an int
        run_guarded(body, command="frobnicate", as_json=as_json, log_file=log_file)

With ``--json`` the fields come out as one object on stdout inside the envelope
``{"command", "ok", "exit_code", "duration_s", "errors", ...fields}``
(``docs/summary.schema.json``); an error raised by the body comes out the same
way (``ok: false``) while its one line goes to stderr. ``transfer_outcome``
builds the Outcome of a transfer. Progress comes from :func:`make_reporter`.
A body that returns a bare int prints its own output (``command`` not given).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from migrate.clock import now
from migrate.config.endpoints import Endpoint, PasswordSource
from migrate.config.rates import parse_size
from migrate.engine import progress
from migrate.engine.retry import RetryPolicy
from migrate.engine.transfer import Budget
from migrate.errors import (
    EXIT_ARCHIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MailmigrateError,
    UsageError,
)
from migrate.reporting import Reporter
from migrate.results import TransferResult

app = typer.Typer(
    name="mailmigrate",
    help="Back up, drain, restore and migrate email over IMAP and POP3, exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich's option table cuts long option names ("--store-plaintext-passwo…")
    # at any width; click's wraps the help text instead and never cuts a name.
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options ---------------------------------------------------------------
FolderOpt = Annotated[list[str] | None, typer.Option(
    "--folder", "-f", help="Only folders matching this glob (repeatable; 'Work' includes Work/*).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--exclude", "-x", help="Skip folders matching this glob (repeatable).")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", metavar="DAY",
    help="Only messages with INTERNALDATE on or after this day: YYYY-MM-DD, or relative: "
    "7d, 2w, today, yesterday.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
LogFileOpt = Annotated[Path | None, typer.Option(
    "--log-file", metavar="PATH",
    help="Append timestamped progress lines and errors to this file (also with --quiet).")]
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
MaxTimeOpt = Annotated[float | None, typer.Option(
    "--max-time", min=0.0, metavar="SECONDS",
    help="Stop at the next checkpoint once SECONDS have passed; --json then says "
    "\"more\": true and the same command goes on from there.")]
MaxBytesOpt = Annotated[str | None, typer.Option(
    "--max-bytes", metavar="SIZE",
    help="Stop at the next checkpoint once SIZE of mail (e.g. 500MB) has been moved; "
    "--json then says \"more\": true and the same command goes on from there.")]
RetryDelayOpt = Annotated[float, typer.Option(
    "--retry-delay", min=0.0, metavar="SECONDS",
    help="First wait before reconnecting; doubled per attempt (with jitter), at most 30 s.")]


_STARTED: list[float] = []  # when the running command began (for emit_summary)


@dataclass
class Outcome:
    """What a command body returns: its exit code and its own ``--json`` fields."""

    exit_code: int = EXIT_OK
    fields: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def envelope(command: str, exit_code: int, started: float, errors: Iterable[str],
             fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one JSON shape of every command (docs/json.md): who, whether it worked,
    how long it took, what went wrong, then the command's own fields."""
    head: dict[str, Any] = {"command": command, "ok": exit_code == EXIT_OK,
                            "exit_code": exit_code,
                            "duration_s": round(time.monotonic() - started, 3),
                            "errors": list(errors)}
    rest = {k: v for k, v in (fields or {}).items() if k not in head}
    return {**head, **rest}


def fail(exc: MailmigrateError) -> NoReturn:
    _error_line(str(exc))
    raise typer.Exit(exc.exit_code)


def _error_line(text: str) -> None:
    """The human line on stderr (never timestamped: one line, easy to grep), and
    the same line in the --log-file."""
    progress.release_terminal()
    typer.echo(f"mailmigrate: error: {text}", err=True)
    progress.LOGGER.error(f"error: {text}", extra=progress.FILE_ONLY)


def run_guarded(body: Callable[[], int | Outcome], *, command: str | None = None,
                as_json: bool = False, log_file: Path | None = None) -> None:
    """Run a command body, turning expected failures into one line and an exit code.

    With ``command`` the body's :class:`Outcome` is printed as the JSON envelope
    (when ``as_json``), and so is any error; see the module docstring.
    """
    started = time.monotonic()
    _STARTED.append(started)

    def report_error(code: int, text: str, kind: str) -> NoReturn:
        if command and as_json:
            payload = envelope(command, code, started, [text], {"error": {"type": kind,
                                                                           "message": text}})
            typer.echo(json.dumps(payload, ensure_ascii=False))
        raise typer.Exit(code)

    try:
        if log_file is not None:
            progress.log_to_file(log_file)
        outcome = body()
    except MailmigrateError as exc:
        if os.environ.get("MAILMIGRATE_DEBUG"):
            raise
        _error_line(str(exc))
        report_error(exc.exit_code, str(exc), type(exc).__name__)
    except KeyboardInterrupt:
        progress.release_terminal()
        text = "interrupted; run the same command again to resume"
        typer.echo(f"mailmigrate: {text}", err=True)
        progress.LOGGER.error(text, extra=progress.FILE_ONLY)
        report_error(EXIT_INTERRUPTED, text, "Interrupted")
    except OSError as exc:
        if os.environ.get("MAILMIGRATE_DEBUG"):
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            where = f" ({exc.filename})" if exc.filename else ""
            text = (f"cannot write the archive{where}: {exc.strerror}; "
                    "free space or fix permissions, then run again")
            _error_line(text)
            report_error(EXIT_ARCHIVE, text, "ArchiveError")
        raise
    finally:
        progress.close_logs()
        _STARTED.pop()
    if isinstance(outcome, Outcome):
        if command and as_json:
            typer.echo(json.dumps(envelope(command, outcome.exit_code, started, outcome.errors,
                                           outcome.fields), ensure_ascii=False))
        raise typer.Exit(outcome.exit_code)
    raise typer.Exit(outcome)


def check_archive_path(path: str, fmt: str | None) -> None:
    """Refuse an archive backup or drain cannot write (a Maildir, an eml tree, one .mbox
    file, an unknown --format) before logging in; the archive itself is opened only
    after the login, so a run that cannot start leaves none behind."""
    from migrate.archive.open import FORMATS, guess_format

    kind = fmt or guess_format(path)
    if kind not in FORMATS:
        raise UsageError(f"unknown --format {kind!r}; choose one of {', '.join(FORMATS)}")
    if kind == "maildir":
        raise UsageError(f"{path!r}: a Maildir is written by `mailmigrate export` only; "
                         "back up into a .sqlite path or a directory (mbox tree)")


def retry_policy(retries: int, delay: float) -> RetryPolicy:
    """The reconnect budget of one run (see :mod:`migrate.engine.retry`)."""
    return RetryPolicy(retries=retries, delay=delay)


def budget(max_time: float | None, max_bytes: str | None) -> Budget | None:
    """The run's --max-time / --max-bytes, or None when neither is given."""
    if max_time is None and max_bytes is None:
        return None
    return Budget(seconds=max_time, max_bytes=parse_size(max_bytes) if max_bytes else None)


_RELATIVE = re.compile(r"(\d+)\s*([dw])", re.IGNORECASE)


def parse_since(value: str | None, option: str = "--since") -> date | None:
    """A day: ISO (2024-01-31), or relative to today: ``7d``, ``2w``, ``today``,
    ``yesterday`` (what a scheduled job wants: "the last week", every night)."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("today", "yesterday"):
        return now().astimezone().date() - timedelta(days=0 if text == "today" else 1)
    relative = _RELATIVE.fullmatch(text)
    if relative:
        days = int(relative[1]) * (7 if relative[2] == "w" else 1)
        return now().astimezone().date() - timedelta(days=days)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad {option} {value!r}: expected a day like 2024-01-31, or 7d, 2w, "
                         "today, yesterday") from None


def make_reporter(quiet: bool, as_json: bool = False) -> Reporter:
    """Bars on a terminal, timestamped log lines otherwise, nothing with --quiet
    (see :func:`migrate.engine.progress.make_reporter`; --log-file gets lines either way)."""
    return progress.make_reporter(quiet)


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
            raise UsageError(f"{endpoint.display()} asks for auth={endpoint.auth}: sign in once "
                             f"with `mailmigrate auth login {endpoint.user}`, or give "
                             f"{self.prefix}oauth2-token-command CMD (a command printing a token)")

    def signed_in(self, endpoint: Endpoint) -> PasswordSource | None:
        """Without any credential option: a stored OAuth2 sign-in or an admin service
        for ``endpoint`` (the rules in migrate.config.oauth.tokens), else None."""
        if self.given:
            return None
        from migrate.config.oauth.tokens import login_source

        return login_source(endpoint, self.prefix)

    def source(self, endpoint: Endpoint) -> PasswordSource:
        """The PasswordSource for ``endpoint``, refusing before any connection what
        could only fail at login (and then name the wrong side's option)."""
        self.check()
        stored = self.signed_in(endpoint)
        if stored is not None:
            return stored
        self.require_token_for(endpoint)
        return password_source(endpoint, self.env, self.file, self.command, self.oauth2,
                               self.prefix)


def announce(lines: Iterable[str], quiet: bool) -> None:
    """Tell the user, on stderr, which defaults came from where (never with --quiet)."""
    if not quiet:
        for line in lines:
            typer.echo(f"mailmigrate: {line}", err=True)


def transfer_outcome(result: TransferResult, extra: dict[str, Any],
                     errors: Iterable[str] = ()) -> Outcome:
    """The Outcome of a transfer: exit 1 when a folder or message failed (``errors``
    adds message-level failures the result does not list), its counts as fields."""
    fields: dict[str, Any] = {**extra, **result.as_dict()}
    all_errors = [*result.errors, *errors]
    fields.pop("errors", None)
    return Outcome(EXIT_PARTIAL if all_errors else EXIT_OK, fields, all_errors)


def emit_summary(command: str, result: TransferResult, extra: dict[str, Any]) -> None:
    """Print a transfer's envelope now (for bodies that print their own output;
    new code returns :func:`transfer_outcome` to :func:`run_guarded` instead)."""
    outcome = transfer_outcome(result, extra)
    typer.echo(json.dumps(envelope(command, outcome.exit_code, _STARTED[-1] if _STARTED else
                                   time.monotonic(), outcome.errors, outcome.fields),
                          ensure_ascii=False))


def exit_code_for(result: TransferResult) -> int:
    return EXIT_PARTIAL if result.errors else EXIT_OK
