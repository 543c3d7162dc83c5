"""Folder names between servers and archives.

On the wire a folder name is modified UTF-7 with a server-chosen delimiter;
imapclient decodes the UTF-7. The archive always uses '/' between levels,
so a tree backed up from a '.' server restores cleanly onto a '/' server.

Names are relative to the server's personal namespace (RFC 2342): Cyrus and
Courier call a user's folder ``INBOX.Archiv.2019``, Dovecot ``Archiv/2019``;
both are ``Archiv/2019`` here, and a destination adds its own prefix. INBOX
stays INBOX. Archives made before this was so recorded the prefixed name
(``INBOX/Archiv/2019``); they are told apart by a marker (:data:`NAMES_KEY`
in the archive's ``meta`` table) that every archive created since carries,
and are read and extended as :func:`legacy_namespace` explains.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase

from migrate.model import SPECIAL_USES, Folder

# A '/' inside one level of a '.'-delimited server would read as a level
# separator in the archive; it is stored as U+2215 (division slash) instead.
SLASH_STANDIN = "\u2215"


#: ``meta`` key and value of an archive whose folder names are namespace-relative.
NAMES_KEY = "folder_names"
NAMES_RELATIVE = "namespace-relative"


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


def split_namespace(server_name: str, prefix: str) -> tuple[str, str]:
    """(name without the personal namespace prefix, that prefix) -- or the name whole.

    Only names below the prefix lose it: INBOX itself, other users' and shared
    folders keep their names, and so does a level that would then read as
    INBOX ("INBOX.INBOX").
    """
    if not prefix:
        return server_name, ""
    if prefix.upper().startswith("INBOX"):  # INBOX is case-insensitive (RFC 3501)
        head = server_name[:len(prefix)]
        matched = head.upper() == prefix.upper()
    else:
        matched = server_name.startswith(prefix)
    rest = server_name[len(prefix):]
    if not matched or not rest or rest.upper() == "INBOX":
        return server_name, ""
    return rest, prefix


def make_folder(server_name: str, delimiter: str | None, attributes: Sequence[str],
                namespace_prefix: str = "") -> Folder:
    """A listed folder, named relative to ``namespace_prefix`` (the personal namespace's)."""
    attrs = tuple(attributes)
    lowered = {a.lower() for a in attrs}
    selectable = not ({"\\noselect", "\\nonexistent"} & lowered)
    relative, prefix = split_namespace(server_name, namespace_prefix)
    namespace = archive_name(prefix[:-len(delimiter)] if delimiter and prefix.endswith(delimiter)
                             else prefix, delimiter)
    return Folder(
        name=archive_name(relative, delimiter),
        server_name=server_name,
        delimiter=delimiter,
        special_use=special_use_of(attrs),
        selectable=selectable,
        attributes=attrs,
        namespace=namespace,
    )


def legacy_namespace(folders: Iterable[Folder]) -> str:
    """The namespace of an archive made before names were relative: "INBOX" or "".

    Such an archive does not say what its source's prefix was. A source with
    the personal prefix ``INBOX.`` (Cyrus, Courier) lists nothing but INBOX
    and folders below it, with '.' between levels; a server without a prefix
    lists its Sent, Trash, ... beside INBOX. So: "INBOX" when every folder is
    INBOX or below it, at least one is below it, and those have '.' as their
    delimiter; else "" (the names are taken as they are). A prefix-less '.'
    account whose only folders are INBOX's children is read as a prefixed
    one: its folders are restored beside INBOX instead of below it.
    """
    below = 0
    for f in folders:
        if f.name.upper() == "INBOX":
            continue
        if not f.name.upper().startswith("INBOX/") or f.delimiter != ".":
            return ""
        below += 1
    return "INBOX" if below else ""


def as_relative(folder: Folder, namespace: str) -> Folder:
    """A folder read from a legacy archive, named relative to ``namespace``."""
    if not namespace or folder.name.upper() == "INBOX":
        return folder
    return replace(folder, name=folder.name[len(namespace) + 1:], namespace=namespace)


def stored_name(folder: Folder, relative: bool) -> str:
    """The name an archive keeps ``folder`` under: relative, or as legacy archives did."""
    return folder.name if relative else folder.full_name


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
