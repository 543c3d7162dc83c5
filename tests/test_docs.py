"""The reference pages in docs/ stay true to the code: the exit-code table lists
exactly the codes migrate.errors defines, and every link between pages resolves."""

from __future__ import annotations

import re
from pathlib import Path

import migrate.errors as errors

ROOT = Path(__file__).resolve().parent.parent


def test_exit_code_table_matches_the_error_types() -> None:
    text = (ROOT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    documented = {int(m[1]) for m in re.finditer(r"^\| (\d+) \|", text, re.MULTILINE)}
    defined = {value for name, value in vars(errors).items()
               if name.startswith("EXIT_") and isinstance(value, int)}
    assert documented == defined, f"docs/exit-codes.md lists {sorted(documented)}, code has {sorted(defined)}"
    # and every error type's code is one of them
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.MailmigrateError):
            assert obj.exit_code in documented, obj


def test_links_between_readme_and_docs_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
