"""Command line: parse, build stores, run the engine, render. Nothing else.

Every expected failure is a :class:`MailmigrateError` rendered as one line
with its exit code; tracebacks only with MAILMIGRATE_DEBUG=1. Typer's
pretty exceptions are off: they print locals, and locals hold passwords.
The typer app and the shared options and rendering live in
:mod:`migrate.cli.common`; each command group is a module of this package,
listed in :data:`COMMAND_MODULES` and registered by :func:`main`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Annotated, Any

import typer

from migrate import __version__
from migrate.cli.common import app, envelope
from migrate.errors import EXIT_INTERRUPTED


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


def register_commands(args: list[str] | None = None) -> None:
    """Import the command modules; each decorates its functions with ``@app.command``.

    Given the command line, only the module of the command it names: typer builds a
    click command (evaluating every option's annotations) for each registered
    function on every run, and with all of them imported that and the imports were
    most of a no-op backup's start-up. Help, completion and anything unknown get all.
    """
    import importlib

    modules = COMMAND_MODULES
    if args is not None and "_MAILMIGRATE_COMPLETE" not in os.environ:
        first = next((a for a in args if not a.startswith("-")), None)
        if first in COMMANDS and not args[:args.index(first)]:  # no root option before it
            modules = [COMMANDS[first]]
    for module in modules:
        importlib.import_module(module)


# Every top-level command and group, and the module that registers it (``migrate/cli/*.py``);
# add yours here (tests/test_startup.py checks this against what the modules register).
COMMANDS: dict[str, str] = {
    "backup": "migrate.cli.backup", "ls": "migrate.cli.backup", "drain": "migrate.cli.drain",
    "restore": "migrate.cli.restore", "copy": "migrate.cli.restore", "verify": "migrate.cli.restore",
    "search": "migrate.cli.browse", "show": "migrate.cli.browse", "export": "migrate.cli.browse",
    "jobs": "migrate.cli.jobs", "providers": "migrate.cli.jobs", "run": "migrate.cli.jobs",
    "schedule": "migrate.cli.jobs", "auth": "migrate.cli.auth", "batch": "migrate.cli.batch",
    "worker": "migrate.cli.batch", "serve": "migrate.cli.serve",
}
COMMAND_MODULES: list[str] = list(dict.fromkeys(COMMANDS.values()))


#: click's base of "the command line is wrong" errors, reached through typer's public
#: BadParameter (typer bundles its click, whose modules are not an API).
_ClickException: type[Any] = next(c for c in typer.BadParameter.__mro__
                                  if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> None:
    """The console script. Errors in the command line itself (an unknown option, a
    missing argument) are the parser's; with --json they come as the JSON envelope
    on stdout too, like every other error."""
    args = sys.argv[1:] if argv is None else argv
    register_commands(args)
    # Everything imported so far lives for the whole run: keep the cyclic GC
    # from re-scanning it on every collection (measurable on big transfers).
    gc.freeze()
    try:
        code = app(args=args, prog_name="mailmigrate", standalone_mode=False)
    except _ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mailmigrate` alone: the help
            exc.show()
            sys.exit(exc.exit_code)
        # one line, like every other error, naming where the usage is explained
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "mailmigrate"
        text = f"{exc.format_message().rstrip('.')}; see `{where} --help`"
        typer.echo(f"mailmigrate: error: {text}", err=True)
        if "--json" in args:
            # the command as click resolved it ("auth service list"), not the first words
            # of argv, which may be an argument ("backup imaps://…")
            command = (where.removeprefix("mailmigrate").strip() if ctx is not None else
                       " ".join(a for a in args[:2] if not a.startswith("-"))) or "mailmigrate"
            payload = envelope(command, exc.exit_code, time.monotonic(), [text],
                               {"error": {"type": "UsageError", "message": text}})
            typer.echo(json.dumps(payload, ensure_ascii=False))
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        typer.echo("\nmailmigrate: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
