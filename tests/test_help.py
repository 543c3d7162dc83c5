"""Every command's --help renders as a person expects: metavars like TEXT and
ARCHIVE (not typer's internal ``<str>``, ``<bool>``, ``{source}``), long option
names whole (not cut with an ellipsis), and a help text for every option.

Rendered through the real entry point in a subprocess at a narrow terminal
(80 columns), where cutting would show first.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from migrate.cli.common import app
from migrate.cli.main import register_commands

MARKERS = ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list[", "{", "…")


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command, as the argv that reaches it."""
    import typer.main

    register_commands()
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = [()]

    def walk(group, prefix: tuple[str, ...]) -> None:
        for name, cmd in sorted(getattr(group, "commands", {}).items()):
            paths.append((*prefix, name))
            walk(cmd, (*prefix, name))

    walk(root, ())
    return paths


def click_command(path: tuple[str, ...]):
    import typer.main

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


PATHS = command_paths()


def test_every_command_is_covered() -> None:
    names = {p[0] for p in PATHS if p}
    assert {"backup", "drain", "restore", "copy", "verify", "ls", "search", "show", "export",
            "providers", "jobs", "run", "schedule"} <= names
    assert ("jobs", "add") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "mailmigrate")
def test_help_renders_without_internal_markers(path: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-m", "migrate", *path, "--help"], capture_output=True,
                          text=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
                          check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    found = [m for m in MARKERS if m in text]
    assert not found, f"`{' '.join(path)} --help` shows {found}:\n{text}"
    for param in click_command(path).params:
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("--"):
                assert opt in text, f"{opt} is cut or missing in `{' '.join(path)} --help`:\n{text}"


@pytest.mark.parametrize("path", [p for p in PATHS if p], ids=lambda p: " ".join(p))
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    cmd = click_command(path)
    assert (cmd.help or "").strip(), f"`{' '.join(path)}` has no description"
    for param in cmd.params:
        assert (getattr(param, "help", None) or "").strip(), \
            f"`{' '.join(path)}`: {param.opts[0] if param.opts else param.name} has no help text"


def test_shell_completion_is_offered() -> None:
    done = subprocess.run([sys.executable, "-m", "migrate", "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, check=False)
    assert "--install-completion" in done.stdout and "--show-completion" in done.stdout
