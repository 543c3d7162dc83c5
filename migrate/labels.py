"""Gmail's labels as the rest of mailmigrate sees them: pure rules, no I/O.

Gmail keeps one message and shows it in a folder per label (X-GM-EXT-1,
https://developers.google.com/gmail/imap/imap-extensions): INBOX is the label
``\\Inbox``, "[Gmail]/Sent Mail" is ``\\Sent``, a user label "Work" is the folder
"Work"; "[Gmail]/All Mail" shows every message once, Spam and Trash hold what is
in no other folder. These functions say which label a folder stands for, which
labels make a folder on a server without labels, and how labels are written as
keywords and as Google Takeout's ``X-Gmail-Labels``. Every layer that touches
labels (the IMAP stores, the archives, the label view of restore and copy, the
export) uses them, so they live below all of them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Literal

from migrate.model import Folder

INBOX = "\\Inbox"
SENT = "\\Sent"
DRAFT = "\\Draft"
IMPORTANT = "\\Important"
STARRED = "\\Starred"
SPAM = "\\Spam"
TRASH = "\\Trash"

# How Gmail spells its system labels in X-GM-LABELS, by their case-folded form.
# Google's own example writes "\Drafts"; imap.gmail.com says "\Draft": both are one.
_SYSTEM = {"\\inbox": INBOX, "\\sent": SENT, "\\draft": DRAFT, "\\drafts": DRAFT,
           "\\important": IMPORTANT, "\\starred": STARRED, "\\spam": SPAM, "\\trash": TRASH}

# The label of each special-use folder (RFC 6154 attribute -> label), as Gmail maps them.
LABEL_OF_USE = {"\\Sent": SENT, "\\Drafts": DRAFT, "\\Important": IMPORTANT,
                "\\Flagged": STARRED, "\\Junk": SPAM, "\\Trash": TRASH}

# Names of Gmail's special folders where no attribute says it (archives made before,
# Takeout): below "[Gmail]/" or "[Google Mail]/", English and German.
_NAMES = {
    "\\All": ("All Mail", "Alle Nachrichten"),
    "\\Important": ("Important", "Wichtig"),
    "\\Flagged": ("Starred", "Markiert"),
    "\\Sent": ("Sent Mail", "Gesendet"),
    "\\Drafts": ("Drafts", "Entwürfe"),
    "\\Junk": ("Spam",),
    "\\Trash": ("Trash", "Bin", "Papierkorb"),
}
_PREFIXES = ("[gmail]/", "[google mail]/")

Role = Literal["all", "outside", "view", "label"]


def canonical(label: str) -> str:
    """A label as stored: system labels in Gmail's spelling, user labels as they are."""
    return _SYSTEM.get(label.casefold(), label) if label.startswith("\\") else label


def gmail_use(folder: Folder) -> str | None:
    """The folder's special use, from its attribute or (for Gmail's names) its name."""
    if folder.special_use:
        return folder.special_use
    if folder.attributes:
        for attr in folder.attributes:
            if attr in ("\\All", "\\Important", "\\Flagged"):
                return attr
    lowered = folder.name.casefold()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            rest = lowered[len(prefix):]
            for use, names in _NAMES.items():
                if rest in (n.casefold() for n in names):
                    return use
    return None


def folder_label(folder: Folder) -> str | None:
    """The label a Gmail folder stands for; None for All Mail (every message)."""
    if folder.name.upper() == "INBOX":
        return INBOX
    use = gmail_use(folder)
    if use == "\\All":
        return None
    if use in LABEL_OF_USE:
        return LABEL_OF_USE[use]
    return folder.name


def role(folder: Folder) -> Role:
    """What a Gmail folder is: ``all`` (All Mail), ``outside`` (Spam, Trash: messages in
    no other folder), ``view`` (Important, Starred: what labels and \\Flagged say
    anyway) or ``label`` (INBOX, Sent, Drafts and every user label)."""
    use = gmail_use(folder) if folder.name.upper() != "INBOX" else None
    if use == "\\All":
        return "all"
    if use in ("\\Junk", "\\Trash"):
        return "outside"
    if use in ("\\Important", "\\Flagged"):
        return "view"
    return "label"


def makes_folder(label: str) -> bool:
    """Labels that put a message in a folder of its own on a server without labels."""
    label = canonical(label)
    return not label.startswith("\\") or label in (INBOX, SENT, DRAFT)


def folder_labels(labels: Iterable[str]) -> list[str]:
    """The folder-making labels, system ones first (\\Inbox, \\Sent, \\Draft), then the
    user labels in the order given: the order "first label" means."""
    seen = [canonical(x) for x in labels]
    system = [x for x in (INBOX, SENT, DRAFT) if x in seen]
    user: list[str] = []
    for x in seen:
        if not x.startswith("\\") and x not in user:
            user.append(x)
    return system + user


# -- Google Takeout's X-Gmail-Labels -------------------------------------------------
# Takeout writes system labels as words ("Inbox", "Sent", "Important", "Starred",
# "Opened", "Unread"; "Category ..." for the tabs) and user labels by name, comma
# separated, a label with a comma in double quotes.
_TAKEOUT_OF = {INBOX: "Inbox", SENT: "Sent", DRAFT: "Drafts", IMPORTANT: "Important",
               STARRED: "Starred", SPAM: "Spam", TRASH: "Trash"}
_FROM_TAKEOUT = {v.casefold(): k for k, v in _TAKEOUT_OF.items()} | {"draft": DRAFT}


def to_takeout(labels: Sequence[str], seen: bool) -> str:
    """The ``X-Gmail-Labels`` value for a message, as Takeout writes it: one ASCII line,
    a label with a comma in double quotes, one in another script an RFC 2047 word."""
    words = [_TAKEOUT_OF.get(canonical(x), x) for x in labels]
    words.append("Opened" if seen else "Unread")
    out = []
    for w in words:
        if not w.isascii() or not w.isprintable() or '"' in w:
            w = "=?UTF-8?B?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?="
        out.append(f'"{w}"' if "," in w else w)
    return ",".join(out)


def from_takeout(names: Iterable[str]) -> tuple[str, ...]:
    """Gmail labels for Takeout's label words; Opened, Unread, Archived and the
    category tabs are Gmail's bookkeeping, not labels to set."""
    out: list[str] = []
    for name in names:
        low = name.casefold()
        if low in ("opened", "unread", "archived") or low.startswith("category "):
            continue
        label = _FROM_TAKEOUT.get(low, name.strip("/"))
        if label and label not in out:
            out.append(label)
    return tuple(out)


__all__ = ["DRAFT", "IMPORTANT", "INBOX", "SENT", "SPAM", "STARRED", "TRASH", "canonical",
           "folder_label", "folder_labels", "from_takeout", "gmail_use", "makes_folder", "role",
           "to_takeout"]
