"""The package tree is layered, and stays so: the import-linter contracts in
pyproject.toml (layers, no cycles) hold for the code, and are shown to break
on a copy of the code with an upward import or a cycle planted in it.

import-linter reads every import statement, including those inside
functions and under ``TYPE_CHECKING``, so a lazy import is no way around it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = ("from importlinter.cli import lint_imports; "
        "raise SystemExit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts over the ``migrate`` package found in ``tree``."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=tree, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_the_code_keeps_its_layers_and_has_no_cycles() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "migrate", tmp_path / "migrate",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("module", "line", "complaint"), [
    # a store reaching up into the CLI, lazily, inside a function
    ("stores/base.py", "def _up() -> None:\n    from migrate.cli import common  # noqa\n",
     "migrate.stores is not allowed to import migrate.cli"),
    # a store importing the engine only for type checking
    ("stores/sqlite_archive.py",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from migrate.engine import transfer\n",
     "migrate.stores is not allowed to import migrate.engine"),
    # config reaching up into the engine (as profiles once did for parse_rate)
    ("config/profiles.py", "from migrate.engine import ratelimit  # noqa\n",
     "migrate.config is not allowed to import migrate.engine"),
    # two modules of one layer importing each other (as progress and the engine once did)
    ("engine/parallel.py", "from migrate.engine import transfer  # noqa\n",
     "No cycles are allowed in migrate.engine"),
])
def test_an_upward_import_or_a_cycle_breaks_the_contracts(planted: Path, module: str, line: str,
                                                           complaint: str) -> None:
    path = planted / "migrate" / module
    path.write_text(path.read_text() + "\n" + line)
    done = lint(planted)
    assert done.returncode != 0, done.stdout
    assert complaint in done.stdout, done.stdout
