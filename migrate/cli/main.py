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
from typing import Annotated

import typer

from migrate import __version__
from migrate.cli.common import app


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


def register_commands() -> None:
    """Import the command modules; each decorates its functions with ``@app.command``."""
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)


# One entry per command module (``migrate/cli/*.py``); add yours here.
COMMAND_MODULES: list[str] = ["migrate.cli.backup", "migrate.cli.drain", "migrate.cli.restore",
                              "migrate.cli.browse", "migrate.cli.jobs", "migrate.cli.auth",
                              "migrate.cli.batch", "migrate.cli.serve"]


def main() -> None:
    register_commands()
    # Everything imported so far lives for the whole run: keep the cyclic GC
    # from re-scanning it on every collection (measurable on big transfers).
    gc.freeze()
    app()
