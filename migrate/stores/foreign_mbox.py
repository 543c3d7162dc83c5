"""A single ``.mbox`` file written by another program, as the source of a restore.

Three framings are in use, and a file does not say which it is:

- mboxo (Thunderbird, most older tools): a body line ``From `` was written
  as ``>From ``; that quoting cannot be undone (an original ``>From `` looks
  the same), so such lines are restored as they are, as Thunderbird shows them;
- mboxrd: every ``>*From `` line got one more '>', so one is taken off again;
- mboxcl2 (mutt, some MTAs): a ``Content-Length:`` header gives the body
  length and nothing is quoted.

Detection: if every message has a Content-Length that lands exactly on the
next ``From `` line (or the end), the file is mboxcl2; otherwise messages
are split at ``From `` lines that start the file or follow a blank line, and
a ``>>From `` line anywhere marks mboxrd (mboxo never writes one from a
``From `` line); ``>From `` lines alone mean mboxo; no quoted line at all means
both read the same. ``--mbox-format`` overrides the guess, and the guess is
reported.

Our own export (``mailmigrate export FILE.mbox``, see
:func:`migrate.mboxrd.encode_export`) is recognised per message, by its
``From `` line: a sender that is the export marker token means the message
was written mboxrd-quoted by us, whatever the rest of the file is. So a file
that is all ours reads as mboxrd with no ``>>From `` line needed, and if other
messages were appended to it (``cat``, a mail client), their framing is
guessed from their own lines alone. If the marked message then begins with
exactly the three status lines we write for some set of flags, those lines
are taken off and give the flags; the marker gives the line ends, a missing
final newline and the INTERNALDATE; nothing inside the message counts as
metadata any more (its own Status, X-Mozilla-Status or X-Gmail-Labels are
its bytes). A marked message whose three lines are not exactly ours was
rewritten by a mail client since (mutt moves Status to the end of the
header, Thunderbird puts X-Mozilla-Status first): it is read like any other
message, unquoted, with the flags its headers now show, and the description
counts it. Trust is per message rather than per file, because the marker is
about the frame it sits in; a file that imitates marker and lines exactly is
read the way it says, which is all an imitation can get. When the first line
is marked, mboxcl2 is not tried (our frames have no Content-Length).
``--mbox-format mboxrd`` keeps this reading (the README used to tell users to
pass it for our exports); ``mboxo`` and ``mboxcl2`` ignore the marker and read
the file as any other program would, status lines included.

Metadata: ``Status``/``X-Status`` (mutt, pine), ``X-Mozilla-Status`` and
``X-Mozilla-Keys`` (Thunderbird; messages it marked expunged are skipped),
``X-Keywords``; INTERNALDATE from the ``From `` line. Google Takeout's
``X-Gmail-Labels`` turn into folders, the message placed once per label
(see :func:`takeout_placement`).

The file is scanned once (offsets only, one message's headers in memory at a
time) and each message is read back by offset when the engine fetches it.
"""

from __future__ import annotations

import contextlib
import email.header
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO

from migrate.errors import ArchiveError, UsageError
from migrate.formats import mboxrd
from migrate.labels import from_takeout
from migrate.model import FlagChange, Folder, FolderCheckpoint, FolderStatus, Message, MessageRef
from migrate.stores.imap_writer import header_fields

FRAMINGS = ("auto", "mboxo", "mboxrd", "mboxcl2")
_HEADER_LIMIT = 256 * 1024
_QUOTED_RD = re.compile(rb"^>(>*From )", re.MULTILINE)
_FROM_DATE_FORMATS = ("%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M:%S %z %Y", "%a %b %d %H:%M %Y",
                      "%a %b %d %H:%M:%S %Z %Y", "%a, %d %b %Y %H:%M:%S %z")
_META_HEADERS = ("content-length", "status", "x-status", "x-mozilla-status", "x-mozilla-keys",
                 "x-keywords", "x-gmail-labels", "date")

# Takeout labels that become a folder of their own, with its special use.
TAKEOUT_FOLDERS: dict[str, tuple[str, str | None]] = {
    "inbox": ("INBOX", None),
    "sent": ("Sent", "\\Sent"),
    "drafts": ("Drafts", "\\Drafts"),
    "draft": ("Drafts", "\\Drafts"),
    "spam": ("Spam", "\\Junk"),
    "trash": ("Trash", "\\Trash"),
    "chat": ("Chats", None),
}
# Labels that are Gmail's own bookkeeping, not folders.
TAKEOUT_SYSTEM = frozenset({"opened", "unread", "starred", "important", "archived"})
ARCHIVE_FOLDER = ("Archive", "\\Archive")
_TAKEOUT_USES = {**{n: u for n, u in TAKEOUT_FOLDERS.values()}, ARCHIVE_FOLDER[0]: ARCHIVE_FOLDER[1]}


@dataclass(frozen=True)
class Entry:
    """One message of the file: where its bytes are and what its headers said."""

    key: str
    offset: int
    length: int
    flags: tuple[str, ...]
    internaldate: datetime | None
    folders: tuple[str, ...]
    unquote: bool = False
    """mboxrd: take one '>' off ``>*From `` lines."""
    mark: mboxrd.ExportMark | None = None
    """Set for a frame of our own export: ``offset`` is past the three status lines."""
    labels: tuple[str, ...] | None = None
    """Gmail's labels (from X-Gmail-Labels): a Gmail destination sets them, and the one
    message shown in several label folders is appended once (its ``gid`` is ``key``)."""


def split_labels(value: str) -> list[str]:
    """X-Gmail-Labels: comma-separated, a label with a comma in double quotes, maybe encoded."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    labels = []
    for label in out:
        label = label.strip()
        if "=?" in label:
            with contextlib.suppress(Exception):  # a malformed encoded-word stays raw
                label = str(email.header.make_header(email.header.decode_header(label)))
        if label:
            labels.append(label)
    return labels


def takeout_placement(labels: Sequence[str]) -> tuple[list[str], set[str], set[str]]:
    """(folders, flags to add, flags to remove) for a message's Gmail labels.

    "Inbox" is INBOX; "Sent", "Drafts", "Spam", "Trash" become those folders
    (marked \\Sent, \\Drafts, \\Junk, \\Trash, so they land in the
    destination's folder of that use); "Chat" becomes "Chats"; every other
    label is a folder of that name ('/' nests). "Opened" means \\Seen,
    "Unread" not \\Seen, "Starred" \\Flagged; "Important", "Archived" and
    "Category …" are Gmail's own classification and are dropped. A message
    with no folder label at all was archived in Gmail: it goes to "Archive"
    (\\Archive). Each folder gets the message once.
    """
    folders: list[str] = []
    add: set[str] = set()
    remove: set[str] = set()
    for label in labels:
        low = label.casefold()
        if low == "opened":
            add.add("\\Seen")
        elif low == "unread":
            remove.add("\\Seen")
        elif low == "starred":
            add.add("\\Flagged")
        elif low in ("draft", "drafts"):
            add.add("\\Draft")
        if low in TAKEOUT_SYSTEM or low.startswith("category "):
            continue
        name = TAKEOUT_FOLDERS[low][0] if low in TAKEOUT_FOLDERS else label.strip("/")
        if name and name not in folders:
            folders.append(name)
    if not folders:
        folders.append(ARCHIVE_FOLDER[0])
    return folders, add, remove


def _mozilla_flags(status: str) -> tuple[set[str], bool]:
    """Flags from X-Mozilla-Status, and whether Thunderbird marked it expunged."""
    try:
        bits = int(status.strip()[:8], 16)
    except ValueError:
        return set(), False
    flags = set()
    for bit, flag in ((0x1, "\\Seen"), (0x2, "\\Answered"), (0x4, "\\Flagged"), (0x1000, "$Forwarded")):
        if bits & bit:
            flags.add(flag)
    return flags, bool(bits & 0x8)


def message_flags(fields: dict[str, str]) -> tuple[set[str], bool]:
    """Flags from the status headers mail clients write, and whether to skip the message."""
    flags: set[str] = set()
    expunged = False
    if "x-mozilla-status" in fields:
        flags, expunged = _mozilla_flags(fields["x-mozilla-status"])
    else:
        if "R" in fields.get("status", ""):
            flags.add("\\Seen")
        for letter, flag in (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"),
                             ("D", "\\Deleted")):
            if letter in fields.get("x-status", ""):
                flags.add(flag)
    for header in ("x-mozilla-keys", "x-keywords"):
        for word in re.split(r"[\s,]+", fields.get(header, "")):
            if word:
                flags.add(word)
    return flags, expunged


def parse_from_line(line: bytes) -> datetime | None:
    """The date on a ``From sender date`` line (UTC unless it carries an offset)."""
    parts = line.decode("latin-1").rstrip("\r\n").split(None, 2)
    if len(parts) < 3:
        return None
    text = " ".join(parts[2].split())
    for fmt in _FROM_DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _is_blank(line: bytes) -> bool:
    return line in (b"\n", b"\r\n")


class _Scan:
    """One pass over the file: message spans plus what the headers say."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int, int, bytes, bytes]] = []  # from-offset, start, length, from, head
        self.quoted_o = 0
        self.quoted_rd = 0
        self.marked = 0  # messages whose From line is our export marker (not counted above)


def _read_headers(fp: BinaryIO) -> tuple[bytes, int]:
    """Header block at the current position (to its blank line) and its length in bytes."""
    head: list[bytes] = []
    size = 0
    kept = 0
    while True:
        line = fp.readline()
        if not line:
            break
        size += len(line)
        if kept < _HEADER_LIMIT:
            head.append(line)
            kept += len(line)
        if _is_blank(line):
            break
    return b"".join(head), size


def _scan_cl2(fp: BinaryIO, file_size: int) -> _Scan | None:
    """Content-Length framing, or None as soon as a message does not fit it."""
    scan = _Scan()
    pos = 0
    while pos < file_size:
        fp.seek(pos)
        line = fp.readline()
        if _is_blank(line):
            pos += len(line)
            continue
        if not line.startswith(b"From "):
            return None
        start = pos + len(line)
        head, head_size = _read_headers(fp)
        length_text = header_fields(head, ("content-length",)).get("content-length", "")
        if not length_text.isdigit():
            return None
        end = start + head_size + int(length_text)
        if end > file_size:
            return None
        fp.seek(end)
        after = fp.readline()
        if after and not (_is_blank(after) or after.startswith(b"From ")):
            return None
        scan.spans.append((pos, start, end - start, line, head))
        pos = end
    return scan if scan.spans else None


def _scan_separators(fp: BinaryIO) -> _Scan:
    """Split at ``From `` lines that open the file or follow a blank line."""
    scan = _Scan()
    fp.seek(0)
    pos = 0
    prev_blank = True
    current: tuple[int, int, bytes] | None = None  # from-offset, start, from line
    head: list[bytes] | None = None
    head_size = 0
    last_blank_len = 0
    in_head = False
    marked = False
    while True:
        line = fp.readline()
        if not line or (prev_blank and line.startswith(b"From ")):
            if current is not None:
                end = pos - last_blank_len  # the blank line before a From line is framing
                scan.spans.append((current[0], current[1], end - current[1], current[2],
                                   b"".join(head or [])))
            if not line:
                break
            current = (pos, pos + len(line), line)
            head, head_size, in_head = [], 0, True
            # Our frames are mboxrd whatever the rest of the file is: their quoted
            # lines must not sway the guess for the others.
            marked = mboxrd.parse_export_mark(line) is not None
            scan.marked += marked
            pos += len(line)
            prev_blank, last_blank_len = False, 0
            continue
        if in_head and head is not None:
            if head_size < _HEADER_LIMIT:
                head.append(line)
                head_size += len(line)
            if _is_blank(line):
                in_head = False
        elif line.startswith(b">") and not marked:
            stripped = line.lstrip(b">")
            if stripped.startswith(b"From "):
                if len(line) - len(stripped) >= 2:
                    scan.quoted_rd += 1
                else:
                    scan.quoted_o += 1
        blank = _is_blank(line)
        last_blank_len = len(line) if blank else 0
        prev_blank = blank
        pos += len(line)
    return scan


class ForeignMbox:
    """A :class:`SourceStore` over one foreign mbox file."""

    def __init__(self, path: Path, framing: str = "auto") -> None:
        if framing not in FRAMINGS:
            raise UsageError(f"unknown --mbox-format {framing!r}; choose one of {', '.join(FRAMINGS)}")
        self.path = Path(path).expanduser()
        try:
            self._fp = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ArchiveError(f"cannot read mbox file {self.path}: {exc.strerror}; check the path"
                               ) from None
        try:
            first = self._fp.readline()
            if not first.startswith(b"From "):
                raise UsageError(f"{self.path} is not an mbox file (it does not start with a "
                                 "'From ' line)")
            size = self.path.stat().st_size
            # The export marker is trusted when the framing is guessed or said to be
            # mboxrd (the README once told users to say so); --mbox-format mboxo or
            # mboxcl2 reads the file as any other program would, marker and all.
            self._trust_marks = framing in ("auto", "mboxrd")
            ours = framing == "auto" and mboxrd.parse_export_mark(first) is not None
            try_cl2 = framing == "mboxcl2" or (framing == "auto" and not ours)
            scan = _scan_cl2(self._fp, size) if try_cl2 else None
            if scan is not None:
                self.framing = "mboxcl2"
                why = "Content-Length on every message"
            elif framing == "mboxcl2":
                raise UsageError(f"{self.path} is not mboxcl2: a message has no Content-Length "
                                 "that ends at the next 'From ' line")
            else:
                scan = _scan_separators(self._fp)
                if framing != "auto":
                    self.framing, why = framing, "as asked with --mbox-format"
                elif scan.marked == len(scan.spans):
                    self.framing = "mboxrd"
                    why = "written by mailmigrate export: every 'From ' line carries its marker"
                elif scan.quoted_rd:
                    self.framing = "mboxrd"
                    why = f"{scan.quoted_rd} '>>From ' lines: one '>' is removed from '>*From ' lines"
                elif scan.quoted_o:
                    self.framing = "mboxo"
                    why = (f"{scan.quoted_o} '>From ' lines, kept as they are (mboxo quoting "
                           "cannot be undone)")
                else:
                    self.framing = "mboxo"
                    why = "no quoted 'From ' lines, so mboxo and mboxrd read the same"
                if self._trust_marks and 0 < scan.marked < len(scan.spans):
                    why += (f"; {scan.marked} messages carry mailmigrate's export marker and are "
                            "read as its export")
            self._build(scan)
        except BaseException:
            self._fp.close()
            raise
        kind = "Google Takeout (X-Gmail-Labels become folders)" if self.takeout else "mbox"
        if self.exported and self.exported == len(self.entries):
            kind = "mailmigrate export (exact bytes, flags and dates from its markers)"
        elif self.exported:
            kind += f" with {self.exported} messages of a mailmigrate export"
        skipped = f"; {self.expunged} messages marked expunged skipped" if self.expunged else ""
        changed = (f"; {self.changed} exported messages were changed by a mail client since the "
                   "export and are read as they stand" if self.changed else "")
        self.description = (f"{self.path.name}: {kind}, {self.framing} framing ({why}); "
                            f"{len(self.entries)} messages in {len(self.folders)} folders"
                            f"{skipped}{changed}")

    def _build(self, scan: _Scan) -> None:
        self.entries: list[Entry] = []
        self.expunged = 0
        self.takeout = False
        self.exported = 0  # frames of our export, read with their flags
        self.changed = 0  # frames of our export whose status lines are no longer ours
        folder_of_file = self.path.name[:-5] if self.path.name.lower().endswith(".mbox") \
            else self.path.name
        if folder_of_file.casefold() == "inbox":
            folder_of_file = "INBOX"
        uses: dict[str, str | None] = {}
        marks = self._trust_marks and self.framing != "mboxcl2"
        for from_offset, start, length, from_line, head in scan.spans:
            mark = mboxrd.parse_export_mark(from_line) if marks else None
            if mark is not None:
                ours = mboxrd.parse_status_lines(head)
                if ours is not None:
                    # Our three lines go, nothing else: the message's own headers
                    # (a Status of its own, X-Gmail-Labels) are its bytes, not metadata.
                    skip, flags_of = ours
                    self.exported += 1
                    # Our fourth line, when the message had Gmail labels (the mark says
                    # so): placed by them, as a Takeout message is.
                    labelled = mboxrd.parse_labels_line(head[skip:]) if mark.labelled else None
                    placed: list[str] = [folder_of_file]
                    labels: tuple[str, ...] | None = None
                    if labelled is not None:
                        skip += labelled[0]
                        self.takeout = True
                        names = split_labels(labelled[1])
                        placed, labels = takeout_placement(names)[0], from_takeout(names)
                        for name in placed:
                            uses.setdefault(name, _TAKEOUT_USES.get(name))
                    else:
                        uses.setdefault(folder_of_file, None)
                    self.entries.append(Entry(
                        key=str(from_offset), offset=start + skip, length=max(0, length - skip),
                        flags=flags_of, internaldate=parse_from_line(from_line) if mark.dated else None,
                        folders=tuple(placed), unquote=True, mark=mark, labels=labels))
                    continue
                self.changed += 1
            fields = header_fields(head, _META_HEADERS)
            flags, expunged = message_flags(fields)
            if expunged:
                self.expunged += 1
                continue
            labels = None
            if "x-gmail-labels" in fields:
                self.takeout = True
                names = split_labels(fields["x-gmail-labels"])
                labels = from_takeout(names)
                folders, add, remove = takeout_placement(names)
                flags = (flags | add) - remove
                for name in folders:
                    uses.setdefault(name, _TAKEOUT_USES.get(name))
            else:
                folders = [folder_of_file]
                uses.setdefault(folder_of_file, None)
            self.entries.append(Entry(key=str(from_offset), offset=start, length=length,
                                      flags=tuple(sorted(flags)),
                                      internaldate=parse_from_line(from_line),
                                      folders=tuple(folders),
                                      unquote=self.framing == "mboxrd" or mark is not None,
                                      labels=labels))
        self.folders: dict[str, list[int]] = {}
        for i, entry in enumerate(self.entries):
            for name in entry.folders:
                self.folders.setdefault(name, []).append(i)
        self._uses = uses

    # -- SourceStore -------------------------------------------------------------------
    def list_folders(self) -> list[Folder]:
        return sorted((Folder(name=n, server_name=n, delimiter="/", special_use=self._uses.get(n))
                       for n in self.folders), key=lambda f: f.name)

    def status(self, folder: Folder) -> FolderStatus:
        return FolderStatus(uidvalidity=None, uidnext=None, messages=len(self.folders.get(folder.name, ())))

    def list_new(self, folder: Folder, checkpoint: FolderCheckpoint,
                 since: date | None = None) -> Iterator[MessageRef]:
        for i in self.folders.get(folder.name, ()):
            e = self.entries[i]
            if since is not None and e.internaldate is not None and e.internaldate.date() < since:
                continue
            yield MessageRef(key=e.key, size=e.length, flags=e.flags, internaldate=e.internaldate,
                             gid=e.key if e.labels is not None else None, labels=e.labels)

    def flag_changes(self, folder: Folder, checkpoint: FolderCheckpoint,
                     status: FolderStatus) -> Iterator[FlagChange]:
        return iter(())

    def read(self, entry: Entry) -> bytes:
        self._fp.seek(entry.offset)
        raw = self._fp.read(entry.length)
        if len(raw) != entry.length:
            raise ArchiveError(f"{self.path} changed while reading it (message at offset "
                               f"{entry.offset} is cut short); run again")
        if entry.mark is not None:
            return mboxrd.decode_export(raw, entry.mark)
        if entry.unquote and b"From " in raw:
            raw = _QUOTED_RD.sub(rb"\1", raw)
        return raw

    def fetch(self, folder: Folder, refs: Sequence[MessageRef]) -> Iterator[Message]:
        by_key = {self.entries[i].key: self.entries[i] for i in self.folders.get(folder.name, ())}
        for ref in refs:
            entry = by_key.get(ref.key)
            if entry is not None:
                yield Message(key=entry.key, raw=self.read(entry), flags=entry.flags,
                              internaldate=entry.internaldate,
                              gid=entry.key if entry.labels is not None else None,
                              labels=entry.labels)

    def close(self) -> None:
        self._fp.close()


__all__ = ["FRAMINGS", "Entry", "ForeignMbox", "message_flags", "parse_from_line", "split_labels",
           "takeout_placement"]
