"""Folder names from a server -> relative paths that cannot leave the archive.

A folder name is whatever the server says it is, so it is hostile input:
'..', absolute paths, backslashes, NUL, names Windows reserves, names too long
for the filesystem, names that only differ in case (one file on macOS and
Windows). Each '/'-separated level becomes one path component that is safe on
its own; the mapping keeps readable names (umlauts, CJK, '&') as they are.

Sanitising is many-to-one ("a:b" and "a_b" look alike afterwards), so
uniqueness is not a property of this function but of the caller's mapping:
:func:`assign_path` gets the collision keys already taken and adds a
deterministic hash suffix when needed, and the archive stores the result so
the same folder keeps its file across runs even if the rules here change.

Layout: folder ``A`` is ``A.mbox``, its child ``A/B`` is ``A/B.mbox``.
Directory components never end in ``.mbox`` and never start with '.', so a
directory cannot be mistaken for a folder file and nothing can land in the
archive's ``.mailmigrate`` metadata directory.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Container
from pathlib import Path
from typing import Final

MBOX_SUFFIX: Final = ".mbox"
META_DIR: Final = ".mailmigrate"
# 255 bytes is the usual limit per component (ext4, APFS, NTFS in UTF-16
# units); leaving room for a collision suffix (9) and ".mbox" (5).
MAX_COMPONENT_BYTES: Final = 200
_HASH_LEN: Final = 8

_FORBIDDEN: Final = frozenset('\\/<>:"|?*')
# Control, surrogate and line/paragraph separator characters: invisible or
# unencodable, and some filesystems refuse them.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789¹²³"}
)


def short_hash(text: str) -> str:
    """8 hex digits of sha256: short, stable across runs and platforms."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def sanitise_component(component: str) -> str:
    """One folder level as a safe, non-empty file name (without ``.mbox``).

    Unsafe characters become '_'; a leading '.', a trailing '.' or space and a
    Windows device name are escaped rather than dropped, so '.', '..' and ''
    still map to distinct-looking names.
    """
    chars = [
        "_" if ch in _FORBIDDEN or unicodedata.category(ch) in _BAD_CATEGORIES else ch for ch in component
    ]
    out = "".join(chars)
    if not out:
        out = "_"
    if out.startswith("."):
        out = "_" + out[1:]
    # Windows silently strips trailing dots and spaces: "a." would become "a".
    stripped = out.rstrip(". ")
    if len(stripped) != len(out):
        out = stripped + "_" * (len(out) - len(stripped))
    if out.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        out = "_" + out
    # A directory named "x.mbox" would be the same path as folder "x"'s file.
    if out.casefold().endswith(MBOX_SUFFIX):
        out += "_"
    if len(out.encode("utf-8")) > MAX_COMPONENT_BYTES:
        keep = _truncate_utf8(out, MAX_COMPONENT_BYTES - _HASH_LEN - 1)
        out = f"{keep}~{short_hash(component)}"
    return out


def candidate_path(name: str) -> str:
    """The preferred relative path (POSIX separators) for folder ``name``."""
    parts = [sanitise_component(part) for part in name.split("/")]
    return "/".join(parts) + MBOX_SUFFIX


def collision_key(relpath: str) -> str:
    """What two paths must not share: same text after case folding and NFC.

    macOS and Windows treat names differing only in case (and macOS in
    Unicode normalisation) as the same file.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", relpath).casefold())


def assign_path(name: str, taken: Container[str] | Callable[[str], bool]) -> str:
    """A relative path for ``name`` whose collision key is not taken.

    ``taken`` holds the collision keys of paths already assigned (or is a
    predicate over them). The first choice is :func:`candidate_path`; on a
    clash the last level gets ``~<8 hex of sha256(name)>``, then further
    deterministic variants, so the result depends only on the name and what
    was assigned before it.
    """
    is_taken: Callable[[str], bool] = taken if callable(taken) else taken.__contains__
    path = candidate_path(name)
    if not is_taken(collision_key(path)):
        return path
    head, _, leaf = path[: -len(MBOX_SUFFIX)].rpartition("/")
    prefix = f"{head}/" if head else ""
    attempt = 0
    while True:
        seed = name if attempt == 0 else f"{name}\x00{attempt}"
        path = f"{prefix}{leaf}~{short_hash(seed)}{MBOX_SUFFIX}"
        if not is_taken(collision_key(path)):
            return path
        attempt += 1


def resolve_inside(root: Path, relpath: str) -> Path:
    """``root / relpath``, refusing anything that resolves outside ``root``.

    Paths come from :func:`assign_path`, but the index that stores them is a
    file someone could edit, and a symlink inside the archive could point
    anywhere; this is the last check before a file is opened.
    """
    if not relpath or relpath.startswith("/") or "\x00" in relpath or "\\" in relpath:
        raise ValueError(f"unsafe archive path {relpath!r}")
    parts = relpath.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"unsafe archive path {relpath!r}")
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, full]) != base or full == base:
        raise ValueError(f"archive path {relpath!r} resolves outside {root}")
    return Path(full)
