"""The engine's link hook (issue 13) keeps the order every checkpoint rests on: what a
destination holds of a folder is "everything up to its highest UID", so a linked
message may never be committed before a fetched one with a lower UID. A batch that
mixes both is cut into runs, each stored before the next is linked; the real SQLite
archive is the destination, the source a folder whose odd UIDs are already held."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

from migrate.engine.transfer import TransferOptions, transfer
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.sqlite_archive import SqliteArchive


def raw(uid: int) -> bytes:
    return f"Message-ID: <e{uid}@t>\r\nSubject: {uid}\r\n\r\nbody {uid}\r\n".encode()


class TwoFolders:
    """A source of two folders showing the same messages (as a label folder and All Mail
    do): ``All`` holds UIDs 1..n, ``Label`` shows every one of them under UID + 100."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fetched: list[tuple[str, int]] = []

    def list_folders(self) -> list[Folder]:
        return [Folder("All", "All"), Folder("Label", "Label")]

    def status(self, folder: Folder) -> FolderStatus:
        return FolderStatus(uidvalidity=7, uidnext=self.n + 200, messages=self.n)

    def _uid(self, folder: Folder, i: int) -> int:
        return i + (100 if folder.name == "Label" else 0)

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        for i in range(1, self.n + 1):
            uid = self._uid(folder, i)
            if uid > checkpoint.last_uid:
                yield MessageRef(key=str(uid), uid=uid, size=len(raw(i)), gid=f"g{i}")

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return iter(())

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        for ref in refs:
            i = int(ref.key) - (100 if folder.name == "Label" else 0)
            self.fetched.append((folder.name, i))
            yield Message(key=ref.key, uid=ref.uid, raw=raw(i), gid=ref.gid)

    def close(self) -> None:
        pass


class Recording(SqliteArchive):
    """The archive, noting the UIDs of ``Label`` in the order they are committed."""

    order: list[int]

    def add_messages(self, folder: Folder, messages: Sequence[Message]) -> int:
        if folder.name == "Label":
            self.order.extend(m.uid or 0 for m in messages)
        return super().add_messages(folder, messages)

    def link(self, folder: Folder, refs: Sequence[MessageRef]) -> int:
        self.order.extend(r.uid or 0 for r in refs)
        return super().link(folder, refs)


def test_linked_and_fetched_refs_are_committed_in_uid_order(tmp_path):
    source = TwoFolders(40)
    dest = Recording(tmp_path / "a.sqlite", account="t@x")
    dest.order = []
    try:
        # All Mail first, but only its odd messages: the even ones are new in Label
        only_odd = TwoFolders(40)
        only_odd.list_new = lambda folder, cp, since=None: (  # type: ignore[method-assign]
            r for r in TwoFolders.list_new(only_odd, folder, cp, since) if int(r.key) % 2)
        transfer(only_odd, dest, TransferOptions(include=["All"], batch_messages=7))
        result = transfer(source, dest, TransferOptions(include=["Label"], batch_messages=7))
    finally:
        dest.close()
    assert dest.order == sorted(dest.order) == [100 + i for i in range(1, 41)]
    assert sorted(i for f, i in source.fetched) == list(range(2, 41, 2))  # only the even ones
    (label,) = result.folders
    assert label.linked == 20 and label.new_messages == 40
    assert result.downloads_saved == 20
