"""Start-up: what a no-op backup imports, counted in modules (never in seconds).

A re-run that finds nothing new is all start-up (issue 17: the target is 0.1 s,
interpreter included), so the modules other commands need, and those that
only storing or indexing a message needs, must stay off its path. The run is
the real entry point in a subprocess against the private server; at exit it
writes ``sys.modules`` to a file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_helpers import backup_args, cli_env
from seeding import append, create_folder, imap_login

from migrate.cli import main as cli_main
from migrate.cli.common import app

# Heavy, and not needed to find that nothing is new: other commands' modules, the
# summary / MIME stack (email.policy and the HTML sanitiser), rich and pydantic.
OFF_THE_NOOP_PATH = (
    "migrate.cli.restore", "migrate.cli.browse", "migrate.cli.jobs", "migrate.cli.wizard",
    "migrate.cli.auth", "migrate.cli.batch", "migrate.cli.serve", "migrate.archive.browse",
    "migrate.formats.summary", "migrate.formats.mime", "migrate.formats.htmltext",
    "email.policy", "email.headerregistry", "nh3", "rich", "pydantic", "platformdirs",
)

DUMP = ("import atexit, runpy, sys\n"
        "out = sys.argv[1]\n"
        "def dump():\n"
        "    with open(out, 'w') as f:\n"
        "        f.write('\\n'.join(sorted(sys.modules)))\n"
        "atexit.register(dump)\n"
        "sys.argv = ['mailmigrate', *sys.argv[2:]]\n"
        "runpy.run_module('migrate', run_name='__main__')\n")


def modules_of(tmp_path: Path, args: list[str], password: str) -> set[str]:
    out = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", DUMP, str(out), *args], capture_output=True,
                          text=True, env=cli_env(password), stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


def test_noop_backup_imports_none_of_the_heavy_modules(server, account, tmp_path):
    client = imap_login(server, account)
    create_folder(client, "Work")
    for folder in ("INBOX", "Work"):
        append(client, folder, b"Subject: s\r\nFrom: a@example.org\r\n\r\nbody\r\n", ())
    client.logout()
    archive = tmp_path / "a.sqlite"
    args = backup_args(server, account, archive, "--quiet")
    first = modules_of(tmp_path, args, account.password)
    # the first run stores two messages: the control, so the list can fail
    assert "migrate.stores.sqlite_archive" in first
    again = modules_of(tmp_path, args, account.password)
    assert "migrate.cli.backup" in again and "migrate.stores.imap" in again
    assert not again & set(OFF_THE_NOOP_PATH), sorted(again & set(OFF_THE_NOOP_PATH))
    assert not {m for m in again if m.startswith(("rich.", "pydantic."))}


def test_every_command_is_mapped_to_the_module_that_registers_it():
    """``main.COMMANDS`` is what lets a run import one command module; a command
    missing from it would be unknown, one mapped wrongly would not be found."""
    cli_main.register_commands()
    registered = {(c.name or c.callback.__name__): c.callback.__module__
                  for c in app.registered_commands if c.callback is not None}
    for group in app.registered_groups:
        sub = group.typer_instance
        assert sub is not None and group.name is not None
        modules = {c.callback.__module__ for c in sub.registered_commands if c.callback}
        assert len(modules) == 1, (group.name, modules)
        registered[group.name] = modules.pop()
    assert registered == cli_main.COMMANDS
