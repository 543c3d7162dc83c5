"""The verify pass: log in on both sides and count, moving no mail.

For each side: folders, messages and bytes (RFC822.SIZE, from one UID FETCH
of sizes per folder; an archive's own index). The source's folders are mapped
to the destination's as copy and restore map them (special use, the
provider's names), so "Gesendet" is compared with "Sent". An account is
*equal* when every destination folder holds as many messages as the source
folders that map to it: before a migration this shows what is to do, after
it that nothing is missing and nothing is twice.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from migrate.config import run_defaults
from migrate.config.passwords import password_for
from migrate.errors import MailmigrateError
from migrate.fleet.accounts import AccountSpec
from migrate.fleet.chunk import worker_name
from migrate.fleet.ledger import ChunkReport
from migrate.folder_map import FolderMapper
from migrate.folders import select_folders
from migrate.model import Folder, FolderCheckpoint
from migrate.stores.base import SourceStore

Counts = dict[str, tuple[int, int]]  # folder -> (messages, bytes)


def probe(account: AccountSpec, *, insecure: bool = False, timeout: float = 60.0) -> ChunkReport:
    """Count both sides of ``account``; a login or connection failure is the report's error."""
    started = time.monotonic()
    try:
        src_folders, src = _side(account, "source", insecure, timeout)
        dst_folders, dst = _side(account, "dest", insecure, timeout)
    except MailmigrateError as exc:
        return ChunkReport(ok=False, error=f"{exc} (exit {exc.exit_code})",
                           duration_s=time.monotonic() - started, worker=worker_name())
    expected = _expected(account, src_folders, src, dst_folders)
    differing = sorted(name for name, (n, _) in expected.items() if dst.get(name, (0, 0))[0] != n)
    differing += sorted(name for name in dst if name not in expected and dst[name][0])
    report = {
        "source": _totals(src), "dest": _totals(dst), "equal": not differing,
        "differing": differing[:20],
        "to_copy": {"messages": max(sum(n for n, _ in expected.values())
                                    - sum(dst.get(k, (0, 0))[0] for k in expected), 0),
                    "bytes": max(sum(b for _, b in expected.values())
                                 - sum(dst.get(k, (0, 0))[1] for k in expected), 0)},
    }
    return ChunkReport(ok=True, verify=report, duration_s=time.monotonic() - started,
                       worker=worker_name())


def _totals(counts: Counts) -> dict[str, int]:
    return {"folders": len(counts), "messages": sum(n for n, _ in counts.values()),
            "bytes": sum(b for _, b in counts.values())}


def _side(account: AccountSpec, side: str, insecure: bool,
          timeout: float) -> tuple[list[Folder], Counts]:
    """(folders, counts) of one side, opened read-only."""
    location = account.source if side == "source" else account.dest
    server = (side == "source" and account.kind in ("copy", "backup", "drain")) or \
             (side == "dest" and account.kind in ("copy", "restore"))
    if server:
        endpoint = account.endpoint(side, insecure)
        cred = account.source_password if side == "source" else account.dest_password
        if cred is None:
            raise MailmigrateError(f"no {side} password reference in the ledger")
        password = password_for(cred, f"{side} password for {endpoint.user}@{endpoint.host}",
                                endpoint.user)
        store: SourceStore
        if endpoint.protocol == "pop3":
            from migrate.stores.pop3 import Pop3Source

            store = Pop3Source(endpoint, password, timeout=timeout)
        else:
            from migrate.stores.imap import ImapSource

            store = ImapSource(endpoint, password, timeout=timeout)
        exclude: tuple[str, ...] = ()
        if side == "source":
            exclude = run_defaults.resolve(endpoint).exclude  # the preset's views, as copy skips them
        return _count_store(store, exclude)
    path = location.partition(":")[2] if location.startswith(("maildir:", "eml:")) else location
    if not Path(path).expanduser().exists():
        return [], {}  # a backup not made yet
    from migrate.archive.open import open_archive

    archive = open_archive(location, readonly=True)
    try:
        rows = archive.folder_summary()
    finally:
        archive.close()
    return [f for f, _, _ in rows], {f.name: (n, size) for f, n, size in rows}


def _count_store(store: SourceStore, exclude: tuple[str, ...]) -> tuple[list[Folder], Counts]:
    try:
        folders = [f for f in select_folders(store.list_folders(), (), exclude) if f.selectable]
        counts: Counts = {}
        for folder in folders:
            refs = list(store.list_new(folder, FolderCheckpoint()))
            counts[folder.name] = (len(refs), sum(r.size for r in refs))
        return folders, counts
    finally:
        with contextlib.suppress(Exception):
            store.close()


def _expected(account: AccountSpec, src_folders: list[Folder], src: Counts,
              dst_folders: list[Folder]) -> dict[str, tuple[int, int]]:
    """{destination folder: (messages, bytes) it should hold} after the source's mapping."""
    if account.kind in ("backup", "drain"):
        return dict(src)  # an archive keeps the source's names
    delimiter = next((f.delimiter for f in dst_folders if f.delimiter), "/")
    mapping = {name: t.path for name, t in
               FolderMapper(dst_folders, delimiter).map_all(src_folders).items()}
    out: dict[str, tuple[int, int]] = {}
    for name, (n, size) in src.items():
        target = mapping.get(name, name)
        have = out.get(target, (0, 0))
        out[target] = (have[0] + n, have[1] + size)
    return out


def summary_line(report: dict[str, Any]) -> str:
    s, d = report["source"], report["dest"]
    verdict = "equal" if report["equal"] else f"{len(report['differing'])} folders differ"
    return (f"source {s['messages']} messages in {s['folders']} folders, dest {d['messages']}"
            f" in {d['folders']}: {verdict}")


__all__ = ["probe", "summary_line"]
