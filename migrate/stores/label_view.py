"""Gmail's labels for a destination that has none (``--gmail-labels``).

A source with labels (a Gmail account, an archive made from one) shows a message in
a folder per label and once more in All Mail. A server without labels keeps one
copy per folder, so copying the folders as they are would put every labelled
message in All Mail a second time. This view, a :class:`SourceStore` over such a
source, decides where each message goes, by its labels:

- ``folders`` (the default): every label is a folder holding the message (INBOX
  for \\Inbox, the destination's Sent and Drafts for \\Sent and \\Draft: those
  folders carry their special use); All Mail keeps only the messages that are in
  no label folder, and becomes the archive folder (``\\Archive``);
- ``keywords``: one copy per message, in INBOX, Sent or Drafts when it has that
  system label, else in the archive folder, with its user labels as IMAP keywords
  (and \\Important as ``$Important``);
- ``first``: one copy per message, in the folder of its first label (\\Inbox,
  \\Sent, \\Draft before user labels, these in Gmail's order), else the archive.

Spam and Trash stay what they are; Important and Starred are views (a label and
the \\Flagged flag), never folders. A message is only left out of a folder when
the folder it goes to instead is one this source has, so nothing is lost when a
label's folder (or All Mail) is missing from the source: it then stays where it is.
A message whose labels are unknown stays in every folder it is in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date

from imapclient import imap_utf7

from migrate.labels import (
    DRAFT,
    IMPORTANT,
    INBOX,
    SENT,
    STARRED,
    canonical,
    folder_label,
    folder_labels,
    role,
)
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.base import SourceStore

MODES = ("folders", "keywords", "first")
_ATOM_BAD = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')


def keyword(label: str) -> str | None:
    """An IMAP keyword (an atom, RFC 3501) for a user label: specials become '_', other
    scripts modified UTF-7 as folder names are; system labels have none."""
    label = canonical(label)
    if label == IMPORTANT:
        return "$Important"
    if label.startswith("\\"):
        return None
    text = label if label.isascii() else imap_utf7.encode(label).decode("ascii")
    return _ATOM_BAD.sub("_", text) or None


def labelled(source: object) -> bool:
    """Whether ``source`` (or the store it wraps) carries Gmail labels."""
    for _ in range(6):
        if getattr(source, "gmail", False) is True or getattr(source, "takeout", False) is True:
            return True
        has = getattr(source, "has_labels", None)
        if callable(has) and has():
            return True
        inner = getattr(source, "inner", None) or getattr(source, "archive", None)
        if inner is None:
            return False
        source = inner
    return False


class LabelView:
    """The source as a destination without labels should see it (see the module doc)."""

    def __init__(self, inner: SourceStore, mode: str = "folders", *,
                 like: LabelView | None = None) -> None:
        """``like``: a view of the same source whose folders were listed (a second
        connection of ``--max-connections`` decides as the first one did)."""
        if mode not in MODES:
            raise ValueError(mode)
        self.inner = inner
        self.mode = mode
        self._inner: dict[str, Folder] = dict(like._inner) if like else {}
        self._existing: set[str] = set(like._existing) if like else set()
        self._has_all: bool = like._has_all if like else False

    # -- folders ------------------------------------------------------------------
    def list_folders(self) -> list[Folder]:
        folders = self.inner.list_folders()
        self._existing = {label for f in folders if f.selectable and role(f) == "label"
                          and (label := folder_label(f)) is not None}
        self._has_all = any(role(f) == "all" and f.selectable for f in folders)
        out: list[Folder] = []
        for f in folders:
            kind = role(f)
            if kind == "view":
                continue  # Important, Starred: a label and a flag, not a place
            shown = replace(f, special_use="\\Archive") if kind == "all" else f
            self._inner[shown.name] = f
            out.append(shown)
        return out

    def _under(self, folder: Folder) -> Folder:
        return self._inner.get(folder.name, folder)

    # -- where each message goes ---------------------------------------------------------
    def _labels(self, folder: Folder, labels: Sequence[str] | None) -> list[str] | None:
        if labels is None:
            return None
        out = [canonical(x) for x in labels]
        own = folder_label(folder) if role(folder) == "label" else None
        if own is not None and own not in out:
            out.append(own)
        return out

    def _target(self, labels: list[str]) -> str | None:
        """The label whose folder gets the message's one copy; None: the archive (All Mail)."""
        places = [x for x in folder_labels(labels) if x in self._existing]
        if self.mode == "folders":
            return places[0] if places else None  # only "in no label folder" matters here
        if self.mode == "keywords":
            system = [x for x in (INBOX, SENT, DRAFT) if x in places]
            if system:
                return system[0]
            if self._has_all or not places:
                return None
            return places[0]
        return places[0] if places else None

    def _keeps(self, folder: Folder, labels: Sequence[str] | None) -> bool:
        kind = role(folder)
        known = self._labels(folder, labels)
        if kind == "outside" or known is None:
            return True
        target = self._target(known)
        if kind == "all":
            return target is None
        if self.mode == "folders":
            return True
        if target is None and not self._has_all:
            return True  # nowhere else to go: it stays
        return target == folder_label(folder)

    def _flags(self, folder: Folder, flags: tuple[str, ...], labels: Sequence[str] | None
               ) -> tuple[str, ...]:
        known = self._labels(folder, labels)
        if self.mode != "keywords" or known is None:
            return flags
        more = {k for x in known if (k := keyword(x)) is not None}
        if STARRED in known:
            more.add("\\Flagged")
        return tuple(sorted(set(flags) | more))

    # -- SourceStore ----------------------------------------------------------------------
    def status(self, folder: Folder) -> FolderStatus:
        return self.inner.status(self._under(folder))

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        under = self._under(folder)
        for ref in self.inner.list_new(under, checkpoint, since):
            if self._keeps(under, ref.labels):
                yield replace(ref, flags=self._flags(under, ref.flags, ref.labels))

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        under = self._under(folder)
        for change in self.inner.flag_changes(under, checkpoint, status):
            yield replace(change, flags=self._flags(under, change.flags, change.labels))

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        under = self._under(folder)
        for msg in self.inner.fetch(under, refs):
            yield replace(msg, flags=self._flags(under, msg.flags, msg.labels))

    def take_failures(self, folder: Folder) -> list[str]:
        take = getattr(self.inner, "take_failures", None)
        return list(take(self._under(folder))) if callable(take) else []

    def transfer_order(self, folders: Sequence[Folder]) -> list[list[Folder]]:
        return [list(folders)]

    def close(self) -> None:
        self.inner.close()


__all__ = ["MODES", "LabelView", "keyword", "labelled"]
