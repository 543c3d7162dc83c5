"""Compare two stores folder by folder: counts and content hashes.

Both sides are :class:`SourceStore` s (an archive, a foreign mbox, an IMAP
account), so one function serves ``verify ARCHIVE SOURCE`` and
``verify SOURCE DEST``. Source folders are mapped to destination folders
as restore and copy map them (special-use aware, ``--map``, ``--prefix``), so
"Gesendet" on one side is compared with "Sent" on the other. Messages are
compared as multisets of sha256 over the IMAP wire form (CRLF line ends),
read in batches bounded by bytes, so memory follows the largest message.

A destination that rewrites what it stores (Cyrus turns 8-bit header bytes
into 'X', see :mod:`migrate.formats.rewrites`) holds a message that differs
from the source's yet is the same message. Such a pair (equal in the
rewrite-tolerant form) is reported as *changed by the destination*, its own
category: it is neither missing nor extra, and does not make the folders
differ; byte-exactness is then measured against what that server keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.engine.transfer import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_MESSAGES, batches
from migrate.folders import select_folders
from migrate.model import Folder, FolderCheckpoint
from migrate.stores.base import SourceStore
from migrate.stores.imap_writer import content_hash, describe, loose_hash

SHOW_LIMIT = 50  # messages listed per folder and side; the counts are always complete


@dataclass
class FolderComparison:
    folder: str
    sources: list[str]
    source_count: int
    dest_count: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    missing_count: int = 0
    extra_count: int = 0
    changed: list[str] = field(default_factory=list)
    changed_count: int = 0

    @property
    def equal(self) -> bool:
        return self.missing_count == 0 and self.extra_count == 0

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "source_folders": self.sources,
                "source_messages": self.source_count, "dest_messages": self.dest_count,
                "missing": self.missing_count, "extra": self.extra_count,
                "changed_by_destination": self.changed_count,
                "missing_messages": self.missing, "extra_messages": self.extra,
                "changed_messages": self.changed, "equal": self.equal}


@dataclass
class VerifyResult:
    folders: list[FolderComparison] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(f.equal for f in self.folders)

    def as_dict(self) -> dict[str, Any]:
        return {"equal": self.equal,
                "folders_differing": sum(1 for f in self.folders if not f.equal),
                "changed_by_destination": sum(f.changed_count for f in self.folders),
                "per_folder": [f.as_dict() for f in self.folders]}


def folder_hashes(store: SourceStore, folders: Sequence[Folder],
                  loose: dict[str, str] | None = None) -> tuple[Counter[str], dict[str, str]]:
    """Multiset of content hashes over ``folders``, and a short description per hash;
    ``loose`` (when given) is filled with each hash's rewrite-tolerant hash."""
    counts: Counter[str] = Counter()
    names: dict[str, str] = {}
    for folder in folders:
        if not folder.selectable:
            continue
        refs = store.list_new(folder, FolderCheckpoint())
        for batch in batches(refs, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_MESSAGES):
            for msg in store.fetch(folder, batch):
                sha = content_hash(msg.raw)
                counts[sha] += 1
                if sha not in names:
                    names[sha] = f"{describe(msg.raw)} [sha256 {sha[:12]}]"
                    if loose is not None:
                        loose[sha] = loose_hash(msg.raw)
    return counts, names


def _pair_rewrites(missing: Counter[str], extra: Counter[str], src_loose: dict[str, str],
                   dst_loose: dict[str, str]) -> list[tuple[str, str]]:
    """Take out of ``missing`` and ``extra`` the pairs that are one message as rewritten by
    the destination; returns them as (source sha256, destination sha256)."""
    pool: dict[str, list[str]] = {}
    for sha, n in sorted(extra.items()):
        pool.setdefault(dst_loose.get(sha, ""), []).extend([sha] * n)
    pairs: list[tuple[str, str]] = []
    for sha, n in sorted(missing.items()):
        for _ in range(n):
            other = pool.get(src_loose.get(sha, "\0"))
            if not other:
                break
            theirs = other.pop()
            pairs.append((sha, theirs))
            missing[sha] -= 1
            extra[theirs] -= 1
    return pairs


def compare(
    source: SourceStore,
    dest: SourceStore,
    map_folders: Callable[[list[Folder], list[Folder]], dict[str, str]],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> VerifyResult:
    """Per destination folder: what the source has that it lacks, and what it has extra.

    ``map_folders(source folders, dest folders)`` gives each source folder's
    destination path; several source folders may share one.
    """
    src_folders = [f for f in select_folders(source.list_folders(), include, exclude) if f.selectable]
    dest_folders = {f.name: f for f in dest.list_folders() if f.selectable}
    mapping = map_folders(src_folders, list(dest_folders.values()))
    groups: dict[str, list[Folder]] = {}
    for f in src_folders:
        groups.setdefault(mapping.get(f.name, f.name), []).append(f)
    result = VerifyResult()
    for target in sorted(groups, key=lambda n: (n != "INBOX", n)):
        src_loose: dict[str, str] = {}
        dst_loose: dict[str, str] = {}
        want, names = folder_hashes(source, groups[target], src_loose)
        dest_folder = dest_folders.get(target)
        have, dest_names = (folder_hashes(dest, [dest_folder], dst_loose) if dest_folder
                            else (Counter(), {}))
        comp = FolderComparison(target, [f.name for f in groups[target]], sum(want.values()),
                                sum(have.values()))
        missing = want - have
        extra = have - want
        pairs = _pair_rewrites(missing, extra, src_loose, dst_loose)
        missing, extra = +missing, +extra
        comp.changed_count = len(pairs)
        comp.changed = [f"{names[mine]} stored as [sha256 {theirs[:12]}]"
                        for mine, theirs in pairs][:SHOW_LIMIT]
        comp.missing_count, comp.extra_count = sum(missing.values()), sum(extra.values())
        comp.missing = [names[s] for s in sorted(missing)][:SHOW_LIMIT]
        comp.extra = [dest_names[s] for s in sorted(extra)][:SHOW_LIMIT]
        result.folders.append(comp)
    if not include and not exclude:
        for name in sorted(set(dest_folders) - set(groups)):
            have, dest_names = folder_hashes(dest, [dest_folders[name]])
            if have:
                comp = FolderComparison(name, [], 0, sum(have.values()))
                comp.extra_count = comp.dest_count
                comp.extra = [dest_names[s] for s in sorted(have)][:SHOW_LIMIT]
                result.folders.append(comp)
    return result


def render(result: VerifyResult) -> list[str]:
    """Human lines: one per folder, then what is missing or extra."""
    lines: list[str] = []
    for f in result.folders:
        origin = f" (from {', '.join(f.sources)})" if f.sources and f.sources != [f.folder] else ""
        changed = f", {f.changed_count} changed by the destination" if f.changed_count else ""
        if f.equal:
            lines.append(f"OK    {f.folder}{origin}: {f.source_count} messages{changed}")
            lines.extend(f"        changed: {m}" for m in f.changed)
            continue
        if not f.sources:
            lines.append(f"EXTRA {f.folder}: {f.dest_count} messages only on the second side")
        else:
            lines.append(f"DIFF  {f.folder}{origin}: {f.source_count} vs {f.dest_count} messages, "
                         f"{f.missing_count} missing, {f.extra_count} extra{changed}")
        lines.extend(f"        changed: {m}" for m in f.changed)
        lines.extend(f"        missing: {m}" for m in f.missing)
        lines.extend(f"        extra:   {m}" for m in f.extra)
        shown = len(f.missing) + len(f.extra)
        if shown < f.missing_count + f.extra_count:
            lines.append(f"        … and {f.missing_count + f.extra_count - shown} more")
    differing = sum(1 for f in result.folders if not f.equal)
    lines.append("verify: all folders match" if result.equal
                 else f"verify: {differing} folders differ")
    return lines


__all__ = ["FolderComparison", "VerifyResult", "compare", "folder_hashes", "render"]
