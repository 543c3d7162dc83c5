"""Folder names between servers and archives.

On the wire a folder name is modified UTF-7 with a server-chosen delimiter;
imapclient decodes the UTF-7. The archive always uses '/' between levels,
so a tree backed up from a '.' server restores cleanly onto a '/' server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from migrate.model import SPECIAL_USES, Folder

# A '/' inside one level of a '.'-delimited server would read as a level
# separator in the archive; it is stored as U+2215 (division slash) instead.
SLASH_STANDIN = "\u2215"


def archive_name(server_name: str, delimiter: str | None) -> str:
    """The archive's '/'-separated name for a server's folder name."""
    if not delimiter or delimiter == "/":
        return server_name
    return "/".join(part.replace("/", SLASH_STANDIN) for part in server_name.split(delimiter))


def special_use_of(attributes: Iterable[str]) -> str | None:
    """The RFC 6154 special-use attribute among LIST attributes, if any."""
    lowered = {a.lower(): a for a in attributes}
    for use in SPECIAL_USES:
        if use.lower() in lowered:
            return use
    return None


def make_folder(server_name: str, delimiter: str | None, attributes: Sequence[str]) -> Folder:
    attrs = tuple(attributes)
    lowered = {a.lower() for a in attrs}
    selectable = not ({"\\noselect", "\\nonexistent"} & lowered)
    return Folder(
        name=archive_name(server_name, delimiter),
        server_name=server_name,
        delimiter=delimiter,
        special_use=special_use_of(attrs),
        selectable=selectable,
        attributes=attrs,
    )


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` or one of its parents matches a glob (so 'Work' covers 'Work/x')."""
    for pattern in patterns:
        if fnmatchcase(name, pattern):
            return True
        parts = name.split("/")
        for i in range(1, len(parts)):
            if fnmatchcase("/".join(parts[:i]), pattern):
                return True
    return False


def select_folders(
    folders: Sequence[Folder], include: Sequence[str], exclude: Sequence[str]
) -> list[Folder]:
    """Folders chosen by --folder/--exclude globs, parents before children."""
    chosen = [
        f for f in folders
        if (not include or matches(f.name, include)) and not (exclude and matches(f.name, exclude))
    ]
    return sorted(chosen, key=lambda f: (f.name != "INBOX", f.name))
