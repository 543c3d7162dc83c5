"""The one transfer loop behind every command.

backup, drain, restore, copy and export are all ``transfer(source, dest)``;
each store only knows how to list, fetch, hold and checkpoint. The order of
work per folder is what makes the guarantees:

1. STATUS, compared with the destination's checkpoint: an unchanged folder
   is skipped without being selected (a no-op run moves no message bytes).
2. Flags of already-held messages are refreshed (CHANGEDSINCE where offered).
3. New messages are listed with their sizes and fetched in batches bounded
   by bytes, so memory follows the largest message, not the folder.
4. Each batch is stored with its checkpoint in one durable step; a crash
   loses at most the batch in flight, which the next run fetches again.
5. Only then is the folder marked done at the STATUS taken in step 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from migrate.errors import MailmigrateError, MessageError
from migrate.folders import select_folders
from migrate.model import Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.progress import NullReporter, Reporter
from migrate.stores.base import DestinationStore, SourceStore

DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_BATCH_MESSAGES = 400


@dataclass
class TransferOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    since: date | None = None
    dry_run: bool = False
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_messages: int = DEFAULT_BATCH_MESSAGES


@dataclass
class FolderResult:
    name: str
    new_messages: int = 0
    new_bytes: int = 0
    flags_updated: int = 0
    unchanged: bool = False
    vanished: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "folder": self.name, "new_messages": self.new_messages, "new_bytes": self.new_bytes,
            "flags_updated": self.flags_updated, "unchanged": self.unchanged,
            "vanished": self.vanished, "error": self.error,
        }


@dataclass
class TransferResult:
    folders: list[FolderResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def new_messages(self) -> int:
        return sum(f.new_messages for f in self.folders)

    @property
    def new_bytes(self) -> int:
        return sum(f.new_bytes for f in self.folders)

    @property
    def flags_updated(self) -> int:
        return sum(f.flags_updated for f in self.folders)

    @property
    def errors(self) -> list[str]:
        return [f"{f.name}: {f.error}" for f in self.folders if f.error]

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "folders": len(self.folders),
            "new_messages": self.new_messages,
            "new_bytes": self.new_bytes,
            "flags_updated": self.flags_updated,
            "errors": self.errors,
            "per_folder": [f.as_dict() for f in self.folders],
        }


def batches(refs: Iterable[MessageRef], max_bytes: int, max_count: int) -> Iterator[list[MessageRef]]:
    """Group refs so each fetch response stays under ``max_bytes`` (one big message alone)."""
    batch: list[MessageRef] = []
    size = 0
    for ref in refs:
        if batch and (size + ref.size > max_bytes or len(batch) >= max_count):
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += ref.size
    if batch:
        yield batch


def _unchanged(cp: FolderCheckpoint, st: FolderStatus) -> bool:
    """True when STATUS proves nothing happened since the last complete pass."""
    return (
        not cp.partial
        and st.uidvalidity is not None
        and cp.uidvalidity == st.uidvalidity
        and cp.uidnext is not None
        and cp.uidnext == st.uidnext
        and st.highestmodseq is not None
        and cp.highestmodseq == st.highestmodseq
    )


def transfer(
    source: SourceStore,
    dest: DestinationStore,
    options: TransferOptions | None = None,
    reporter: Reporter | None = None,
) -> TransferResult:
    """Copy every selected folder from ``source`` to ``dest``, resumably."""
    options = options or TransferOptions()
    reporter = reporter or NullReporter()
    result = TransferResult(dry_run=options.dry_run)
    folders = select_folders(source.list_folders(), options.include, options.exclude)
    reporter.start(len(folders))
    for folder in folders:
        folder_result = FolderResult(folder.name)
        result.folders.append(folder_result)
        try:
            _transfer_folder(source, dest, folder, options, reporter, folder_result)
        except MessageError as exc:
            folder_result.error = str(exc)
            reporter.warn(f"{folder.name}: {exc}")
        reporter.folder_done(folder_result)
    reporter.finish(result)
    return result


def _transfer_folder(
    source: SourceStore, dest: DestinationStore, folder: Folder, options: TransferOptions,
    reporter: Reporter, out: FolderResult,
) -> None:
    if not folder.selectable:
        # A \Noselect parent holds no mail but shapes the tree: record it.
        dest.checkpoint(folder, FolderStatus(uidvalidity=None, uidnext=None, messages=0))
        out.unchanged = True
        return
    status = source.status(folder)
    cp = dest.checkpoint(folder, status)
    if _unchanged(cp, status) and options.since is None:
        out.unchanged = True
        return
    if cp.last_uid > 0 and not options.dry_run:
        changes = list(source.flag_changes(folder, cp, status))
        if changes:
            out.flags_updated = dest.update_flags(folder, changes)
    listing_cp = cp
    if options.since is not None or cp.partial:
        # A filtered pass, or the first full pass after one: UIDs below last_uid
        # may be missing, so list them all and let the destination filter.
        listing_cp = FolderCheckpoint(uidvalidity=cp.uidvalidity)
    # The whole listing comes first, so that during the copy the source's
    # connection belongs to the fetch thread alone.
    refs = list(source.list_new(folder, listing_cp, options.since))
    total = status.messages - cp.messages if status.messages is not None else 0
    reporter.folder_start(folder.name, max(total, 0))
    # Fetch batch N+1 while batch N is being stored: network and server time
    # overlap with hashing, indexing and fsync. At most two batches are in
    # memory, so the bound stays "a small multiple of the batch size".
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmigrate-fetch") as pool:
        pending: tuple[list[MessageRef], Future[list[Message]]] | None = None
        for batch in batches(refs, options.batch_bytes, options.batch_messages):
            todo = dest.missing(folder, batch)
            if not todo:
                continue
            if options.dry_run:
                out.new_messages += len(todo)
                out.new_bytes += sum(r.size for r in todo)
                reporter.advance(len(todo), sum(r.size for r in todo))
                continue
            future = pool.submit(_fetch_batch, source, folder, todo)
            if pending is not None:
                _store_batch(dest, folder, *pending, reporter, out)
            pending = (todo, future)
        if pending is not None:
            _store_batch(dest, folder, *pending, reporter, out)
    # Messages the source had to skip (see migrate.retry) make the pass
    # partial: the next run lists the folder from its first UID again.
    take = getattr(source, "take_failures", None)
    skipped: list[str] = take(folder) if callable(take) else []
    if skipped:
        out.error = f"{len(skipped)} messages not archived: " + "; ".join(skipped[:5])
    if not options.dry_run:
        dest.finish_folder(folder, status, complete=options.since is None and not skipped)


def _fetch_batch(source: SourceStore, folder: Folder, todo: list[MessageRef]) -> list[Message]:
    return list(source.fetch(folder, todo))


def _store_batch(dest: DestinationStore, folder: Folder, todo: list[MessageRef],
                 fetched: Future[list[Message]], reporter: Reporter, out: FolderResult) -> None:
    """Store one fetched batch durably (the checkpoint commits with it) and report it."""
    messages = fetched.result()
    out.vanished += len(todo) - len(messages)
    added = dest.add_messages(folder, messages)
    nbytes = sum(m.size for m in messages)
    out.new_messages += added
    out.new_bytes += nbytes
    reporter.advance(len(messages), nbytes)


__all__ = [
    "FolderResult",
    "MailmigrateError",
    "TransferOptions",
    "TransferResult",
    "batches",
    "transfer",
]
