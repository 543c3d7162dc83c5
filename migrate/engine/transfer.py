"""The one transfer loop behind every command.

backup, drain, restore, copy and export are all ``transfer(source, dest)``;
each store only knows how to list, fetch, hold and checkpoint. The order of
work per folder is what makes the guarantees:

1. STATUS, compared with the destination's checkpoint: an unchanged folder
   is skipped without being selected (a no-op run moves no message bytes).
   This step runs for every selected folder first, so the reporter knows the
   run's total before the first message moves; each folder's step reuses it.
2. Flags of already-held messages are refreshed (CHANGEDSINCE where offered).
3. New messages are listed with their sizes and fetched in batches bounded
   by bytes, so memory follows the largest message, not the folder. Those the
   destination already holds under the source's ``gid`` (one message shown in
   several folders: Gmail's labels) are linked instead, with no body fetched,
   in listing order with the stored ones (``LinkingDestination``).
4. Each batch is stored with its checkpoint in one durable step; a crash
   loses at most the batch in flight, which the next run fetches again.
5. Only then is the folder marked done at the STATUS taken in step 1.

On one connection, into a destination whose folders are independent (the
archives), the last batch of a folder is stored while the next folder lists and
fetches its first batch (:class:`_Tail`); the folder before is still stored,
finished and reported before the next one writes or reports anything.

With ``connections > 1`` (``--max-connections``) several folders are read
at once, each on its own source connection, while every destination and
reporter call still runs on the calling thread, one at a time
(:mod:`migrate.engine.parallel`): the order of durable steps per folder, and so
every guarantee above, is the same as with one connection.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

from migrate.engine.parallel import Aborted, CallQueue, Forwarding, Serialized
from migrate.errors import MailmigrateError, MessageError
from migrate.folders import select_folders
from migrate.model import Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.reporting import NullReporter, Reporter
from migrate.results import FolderResult, TransferResult
from migrate.stores.base import DestinationStore, LinkingDestination, SourceStore, statuses_of

# Two batches are in memory per connection (one stored, the next fetched), also across
# a folder boundary (_Tail): 6 MB keeps the mixed reference load under 70 MB peak RSS
# (8 MB: 68-71 MB once boundaries overlapped) at no measured cost in speed.
DEFAULT_BATCH_BYTES = 6 * 1024 * 1024
DEFAULT_BATCH_MESSAGES = 400


@dataclass
class Budget:
    """How much one run may do before it stops at the next checkpoint (``--max-time``,
    ``--max-bytes``): the bounded chunk of a fleet migration. Checked between
    batches, so a run ends where a rerun resumes; what is left is reported as
    ``more`` to do, never as an error."""

    seconds: float | None = None
    max_bytes: int | None = None
    spent_bytes: int = 0
    #: Batches stored so far: a run stores at least one before it may stop, so
    #: a chain of runs always gets somewhere, however small the budget.
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def spend(self, nbytes: int) -> None:
        with self._lock:
            self.spent_bytes += nbytes
            self.batches += 1

    def exhausted(self) -> bool:
        if self.batches == 0:
            return False
        if self.max_bytes is not None and self.spent_bytes >= self.max_bytes:
            return True
        return self.seconds is not None and time.monotonic() - self.started >= self.seconds


@dataclass
class TransferOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    since: date | None = None
    dry_run: bool = False
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_messages: int = DEFAULT_BATCH_MESSAGES
    #: Source connections reading folders at once (needs ``open_source``).
    connections: int = 1
    #: Stop at the next batch boundary once spent (None: no limit).
    budget: Budget | None = None


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
    open_source: Callable[[], SourceStore] | None = None,
) -> TransferResult:
    """Copy every selected folder from ``source`` to ``dest``, resumably.

    ``open_source`` opens one more connection to the same source; with it and
    ``options.connections > 1`` up to that many folders are read at once.
    """
    options = options or TransferOptions()
    reporter = reporter or NullReporter()
    result = TransferResult(dry_run=options.dry_run)
    folders = select_folders(source.list_folders(), options.include, options.exclude)
    reporter.start(len(folders))
    result.folders = [FolderResult(f.name) for f in folders]
    plans = _plan(source, dest, folders, options)
    reporter.planned({f.name: p.expected for f, p in zip(folders, plans, strict=True)})
    everything = list(zip(folders, result.folders, plans, strict=True))
    for group in _groups(source, folders):
        names = {f.name for f in group}
        work = [item for item in everything if item[0].name in names]
        # What STATUS proved unchanged costs nothing more: done here, so that extra
        # connections are opened only for folders that have work (a no-op run opens one).
        busy = [item for item in work if item[0].selectable and not item[2].unchanged(options)]
        if options.connections > 1 and open_source is not None and len(busy) > 1:
            for folder, folder_result, plan in work:
                if not (folder.selectable and not plan.unchanged(options)):
                    _transfer_one(source, dest, folder, options, reporter, folder_result, plan)
            _transfer_parallel(source, dest, busy, options, reporter, open_source)
        else:
            _transfer_in_turn(source, dest, work, options, reporter)
    reporter.finish(result)
    return result


def _transfer_in_turn(source: SourceStore, dest: DestinationStore,
                      work: list[tuple[Folder, FolderResult, _Plan]], options: TransferOptions,
                      reporter: Reporter) -> None:
    """One group's folders on one connection, one after the other. Where the
    destination's folders are independent (:class:`~migrate.stores.base.IndependentFolders`),
    each folder's last batch is stored while the next folder's first batch is fetched
    (:class:`_Tail`); a budget keeps the plain order, so that it is checked after the
    last batch is counted."""
    carry = (bool(getattr(dest, "folders_independent", False)) and options.budget is None
             and not options.dry_run)
    tail: _Tail | None = None
    for folder, folder_result, plan in work:
        tail = _transfer_one(source, dest, folder, options, reporter, folder_result, plan,
                             tail=tail, carry=carry)
    if tail is not None:
        tail.settle()


def _nothing() -> None:
    pass


@dataclass
class _Tail:
    """The end of a folder, left to be done once the next folder's first fetch is under
    way: its last fetched batch, stored with the folder's finish step, then reported.

    The source connection is free by then (the folder's fetch pool has ended), so the
    next folder lists and starts fetching while this batch is written: the writer no
    longer waits for a first batch at every folder boundary. Whatever happens in the
    next folder, the tail is settled first, and an error in it is its own folder's,
    as if it had run in place; the next folder writes nothing and reports nothing
    before that, so every folder's durable steps keep their order."""

    out: FolderResult
    reporter: Reporter
    finish: Callable[[], None]
    settled: bool = False

    def settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        finish, self.finish = self.finish, _nothing  # its batch is not held once stored
        try:
            finish()
        except MessageError as exc:
            self.out.error = str(exc)
            self.reporter.warn(f"{self.out.name}: {exc}")
        self.reporter.folder_done(self.out)


def _groups(source: SourceStore, folders: list[Folder]) -> list[list[Folder]]:
    """The folders in the groups the source wants done one after the other (an
    :class:`~migrate.stores.base.OrderedSource`: Gmail's All Mail before its labels,
    so that parallel connections never fetch one message twice); else one group."""
    order = getattr(source, "transfer_order", None)
    if not callable(order):
        return [folders]
    groups: list[list[Folder]] = order(folders)
    placed = {f.name for g in groups for f in g}
    rest = [f for f in folders if f.name not in placed]
    return [g for g in [*groups, rest] if g]


@dataclass
class _Plan:
    """Step 1 of a folder, done for every folder before the first message moves:
    its STATUS and the destination's checkpoint, so the run's total is known up
    front (a true ETA) and the folder's own step reuses both (still one STATUS
    per folder). A folder whose STATUS fails keeps the error for its own step,
    where it fails that folder alone, as before."""

    status: FolderStatus | None = None
    checkpoint: FolderCheckpoint | None = None
    error: MessageError | None = None

    def unchanged(self, options: TransferOptions) -> bool:
        """STATUS proved the folder unchanged since the last complete pass."""
        return (self.status is not None and self.checkpoint is not None and options.since is None
                and _unchanged(self.checkpoint, self.status))

    @property
    def expected(self) -> int:
        """Messages this folder is expected to transfer (0 when STATUS proves it unchanged)."""
        if self.status is None or self.checkpoint is None or self.status.messages is None:
            return 0
        if _unchanged(self.checkpoint, self.status):
            return 0
        return max(self.status.messages - self.checkpoint.messages, 0)


def _plan(source: SourceStore, dest: DestinationStore, folders: Sequence[Folder],
          options: TransferOptions) -> list[_Plan]:
    selectable = [f for f in folders if f.selectable]
    # one round trip for them all where the source pipelines (ImapSource.statuses)
    status_of = dict(zip((f.name for f in selectable), statuses_of(source, selectable),
                         strict=True))
    plans: list[_Plan] = []
    for folder in folders:
        answer = status_of.get(folder.name) if folder.selectable else None
        if answer is None:
            plans.append(_Plan())
        elif isinstance(answer, MessageError):
            plans.append(_Plan(error=answer))
        else:
            try:
                plans.append(_Plan(answer, dest.checkpoint(folder, answer)))
            except MessageError as exc:
                plans.append(_Plan(error=exc))
    return plans


def _transfer_one(source: SourceStore, dest: DestinationStore, folder: Folder,
                  options: TransferOptions, reporter: Reporter, out: FolderResult,
                  plan: _Plan | None = None, should_stop: Callable[[], bool] = lambda: False,
                  *, tail: _Tail | None = None, carry: bool = False) -> _Tail | None:
    """One folder; a per-message problem becomes the folder's error, the rest goes on.

    ``tail`` is the folder before's unfinished end, settled here before this folder
    writes or reports anything; with ``carry`` this folder may return its own."""
    own: _Tail | None = None
    try:
        if plan is not None and plan.error is not None:
            raise plan.error
        own = _transfer_folder(source, dest, folder, options, reporter, out, should_stop, plan,
                               tail=tail, carry=carry)
    except MessageError as exc:
        if tail is not None:
            tail.settle()
        out.error = str(exc)
        reporter.warn(f"{folder.name}: {exc}")
    except BaseException:
        if tail is not None and not tail.settled:
            # What was fetched is still stored; the error in flight is the one raised.
            with contextlib.suppress(Exception):
                tail.settle()
        raise
    if tail is not None:
        tail.settle()  # a folder that had nothing to fetch leaves it to here
    if own is None:
        reporter.folder_done(out)
    return own


class _SourceLost(Exception):
    """A connection-level failure of one worker's source (wrapped so that it is
    told apart from the same error types raised by destination calls)."""

    def __init__(self, error: MailmigrateError) -> None:
        super().__init__(str(error))
        self.error = error


class _SourceTagged(Forwarding):
    """A source whose connection-level failures arrive as :class:`_SourceLost`;
    per-message and per-folder errors (MessageError) pass unchanged."""

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            # listings and fetches return iterators: drain them here, so that a
            # failure while iterating is tagged too
            return iter(list(result)) if isinstance(result, Iterator) else result
        except MessageError:
            raise
        except MailmigrateError as exc:
            raise _SourceLost(exc) from None


def _transfer_parallel(source: SourceStore, dest: DestinationStore,
                       work: list[tuple[Folder, FolderResult, _Plan]], options: TransferOptions,
                       reporter: Reporter, open_source: Callable[[], SourceStore]) -> None:
    """Up to ``options.connections`` workers take folders from one queue.

    Worker 0 reads on the connection that listed the folders; the others open
    their own. A connection that cannot be opened or is lost for good (a
    provider's cap) costs only speed: its worker stops and its folder goes back
    on the queue; what is left when all workers are done is transferred here on
    the first connection (reconnecting if it was the one lost). Any other error
    is fatal: it stops every worker at its next call and is raised here, after
    all of them have stopped, so nothing is written after it.
    """
    calls = CallQueue(fatal=lambda exc: not isinstance(exc, MessageError))
    shared_dest: DestinationStore = Serialized(dest, calls)  # type: ignore[assignment]
    shared_reporter: Reporter = Serialized(reporter, calls)  # type: ignore[assignment]
    todo: queue.SimpleQueue[tuple[Folder, FolderResult, _Plan]] = queue.SimpleQueue()
    for item in work:
        todo.put(item)
    stop = threading.Event()
    failures: list[BaseException] = []
    workers = min(options.connections, sum(1 for f, _, _ in work if f.selectable))

    def run_worker(index: int) -> None:
        own: SourceStore | None = source if index == 0 else None
        opened = False
        try:
            while not stop.is_set():
                try:
                    folder, out, plan = todo.get_nowait()
                except queue.Empty:
                    return
                if own is None:
                    try:
                        own = open_source()
                        opened = True
                    except MailmigrateError as exc:
                        todo.put((folder, out, plan))
                        shared_reporter.warn(f"connection {index + 1} of {workers} not opened "
                                             f"({exc}); going on with fewer")
                        return
                try:
                    _transfer_one(_SourceTagged(own), shared_dest, folder, options,
                                  shared_reporter, out, plan, stop.is_set)
                except _SourceLost as lost:
                    # A connection that cannot go on (the server's cap, an outage
                    # it alone saw) hands its folder back: the batches it stored
                    # are committed, so another connection resumes it, or, when
                    # none is left, this thread does after the workers (and a
                    # source that is really gone fails there, as it would alone).
                    todo.put((folder, out, plan))
                    shared_reporter.warn(f"connection {index + 1} of {workers} given up "
                                         f"({lost.error}); going on with fewer")
                    return
        except Aborted:
            pass
        except BaseException as exc:  # handed to the serving thread, raised there
            failures.append(exc)
            stop.set()
        finally:
            if opened and own is not None:
                with contextlib.suppress(Exception):
                    own.close()
            calls.done()

    threads = [threading.Thread(target=run_worker, args=(i,), daemon=True,
                                name=f"mailmigrate-worker-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    try:
        calls.serve(len(threads))
    except BaseException:
        stop.set()
        raise
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    # Folders whose worker could not connect, after every other worker ended.
    while True:
        try:
            folder, out, plan = todo.get_nowait()
        except queue.Empty:
            break
        _transfer_one(source, dest, folder, options, reporter, out, plan)


def _transfer_folder(
    source: SourceStore, dest: DestinationStore, folder: Folder, options: TransferOptions,
    reporter: Reporter, out: FolderResult, should_stop: Callable[[], bool] = lambda: False,
    plan: _Plan | None = None, *, tail: _Tail | None = None, carry: bool = False,
) -> _Tail | None:
    if not folder.selectable:
        if tail is not None:
            tail.settle()
        # A \Noselect parent holds no mail but shapes the tree: record it.
        dest.checkpoint(folder, FolderStatus(uidvalidity=None, uidnext=None, messages=0))
        out.unchanged = True
        return None
    if options.budget is not None and options.budget.exhausted():
        out.deferred = True  # not started: the next run takes it
        return None
    if plan is not None and plan.status is not None and plan.checkpoint is not None:
        # Taken in the first pass: a STATUS older than this step can only make the
        # next run list a few UIDs again (uidnext moved on), never miss one.
        status, cp = plan.status, plan.checkpoint
    else:
        status = source.status(folder)
        cp = dest.checkpoint(folder, status)
    if _unchanged(cp, status) and options.since is None:
        out.unchanged = True
        return None
    if cp.last_uid > 0 and not options.dry_run:
        changes = list(source.flag_changes(folder, cp, status))
        if changes:
            if tail is not None:
                tail.settle()  # nothing of this folder is written before the one before is done
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
    started = False
    pending: tuple[list[MessageRef], Future[list[Message]]] | None = None

    def start() -> None:
        """The folder before is settled (stored, finished, reported) before this one
        writes or reports anything."""
        nonlocal started
        if not started:
            started = True
            if tail is not None:
                tail.settle()
            reporter.folder_start(folder.name, max(total, 0))

    def finish() -> None:
        nonlocal pending
        if pending is not None:
            last, pending = pending, None  # not held past its store (a tail outlives this frame)
            _store_batch(dest, folder, *last, reporter, out, options.budget)
        # Messages the source had to skip (see migrate.engine.retry) make the pass
        # partial: the next run lists the folder from its first UID again.
        take = getattr(source, "take_failures", None)
        skipped: list[str] = take(folder) if callable(take) else []
        if skipped:
            out.error = f"{len(skipped)} messages not archived: " + "; ".join(skipped[:5])
        if not options.dry_run and not out.deferred:
            dest.finish_folder(folder, status, complete=options.since is None and not skipped)

    # Fetch batch N+1 while batch N is being stored: network and server time
    # overlap with hashing, indexing and fsync. At most two batches are in
    # memory, so the bound stays "a small multiple of the batch size".
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmigrate-fetch") as pool:
        for batch in batches(refs, options.batch_bytes, options.batch_messages):
            if should_stop():
                raise Aborted("another connection failed")
            if options.budget is not None and options.budget.exhausted():
                out.deferred = True  # what is stored is checkpointed; the rest is for the next run
                break
            todo = dest.missing(folder, batch)
            if not todo:
                continue
            if options.dry_run:
                start()
                out.new_messages += len(todo)
                out.new_bytes += sum(r.size for r in todo)
                reporter.advance(len(todo), sum(r.size for r in todo))
                continue
            if any(r.gid for r in todo):
                start()  # what the destination holds by gid includes the folder before
            for linked, run in _runs(todo, _linkable(dest, folder, todo)):
                if linked:
                    start()
                    # Stored in listing order: a pending batch (lower UIDs) first, so a
                    # checkpoint never covers a UID that is not stored yet.
                    if pending is not None:
                        _store_batch(dest, folder, *pending, reporter, out, options.budget)
                        pending = None
                    _link_batch(dest, folder, run, reporter, out)
                    continue
                future = pool.submit(_fetch_batch, source, dest, folder, run)
                start()  # the folder before is stored while this batch is fetched
                if pending is not None:
                    _store_batch(dest, folder, *pending, reporter, out, options.budget)
                pending = (run, future)
        start()
        # Leaving this block waits for the last fetch: the connection is free again.
    if carry and pending is not None:
        return _Tail(out, reporter, finish)
    finish()
    return None


def _linkable(dest: DestinationStore, folder: Folder, todo: Sequence[MessageRef]) -> set[str]:
    """Keys of ``todo`` the destination already holds under the source's ``gid`` (a
    :class:`~migrate.stores.base.LinkingDestination`): their bodies need no fetch."""
    linkable = getattr(dest, "linkable", None)
    if not callable(linkable) or not any(r.gid for r in todo):
        return set()
    found: set[str] = linkable(folder, [r for r in todo if r.gid])
    return found


def _runs(todo: Sequence[MessageRef], linked: set[str]) -> Iterator[tuple[bool, list[MessageRef]]]:
    """``todo`` cut into consecutive runs of linked and of fetched refs, in order."""
    run: list[MessageRef] = []
    kind = False
    for ref in todo:
        this = ref.key in linked
        if run and this != kind:
            yield kind, run
            run = []
        kind = this
        run.append(ref)
    if run:
        yield kind, run


def _link_batch(dest: DestinationStore, folder: Folder, run: list[MessageRef],
                reporter: Reporter, out: FolderResult) -> None:
    """Record messages the destination holds in this folder too, with no body moved."""
    linked = cast(LinkingDestination, dest).link(folder, run)
    out.linked += linked
    out.linked_bytes += sum(r.size for r in run) if linked == len(run) else 0
    out.new_messages += linked
    reporter.advance(len(run), 0)


def _fetch_batch(source: SourceStore, dest: DestinationStore, folder: Folder,
                 todo: list[MessageRef]) -> list[Message]:
    """On the fetch thread: the batch, and whatever the destination can work out from it
    before storing (``prepare``: the SQLite archive's index summaries), so that this
    runs while the previous batch is written, not after."""
    messages = list(source.fetch(folder, todo))
    prepare = getattr(dest, "prepare", None)
    if callable(prepare):
        prepare(messages)
    return messages


def _store_batch(dest: DestinationStore, folder: Folder, todo: list[MessageRef],
                 fetched: Future[list[Message]], reporter: Reporter, out: FolderResult,
                 budget: Budget | None = None) -> None:
    """Store one fetched batch durably (the checkpoint commits with it) and report it."""
    messages = fetched.result()
    out.vanished += len(todo) - len(messages)
    added = dest.add_messages(folder, messages)
    nbytes = sum(m.size for m in messages)
    out.new_messages += added
    out.new_bytes += nbytes
    if budget is not None:
        budget.spend(nbytes)
    reporter.advance(len(messages), nbytes)


__all__ = [
    "Budget",
    "FolderResult",
    "MailmigrateError",
    "TransferOptions",
    "TransferResult",
    "batches",
    "transfer",
]
