"""Seeding and reading back the small accounts the fleet tests migrate."""

from __future__ import annotations

import re
from collections import Counter

from seeding import bulk_append, create_folder, fetch_all, imap_login, list_folders, seed_message

#: Every seeded account has these folders (INBOX exists already).
FOLDERS = ("INBOX", "Work", "Work/2024")
_MSGID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.IGNORECASE | re.MULTILINE)


def seed_account(server, user, per_folder: int = 2, size: int = 700, tag: str | None = None) -> int:
    """Fill ``user`` with ``per_folder`` unique messages in each of FOLDERS; returns the total."""
    tag = tag or user.name
    client = imap_login(server, user)
    try:
        for name in FOLDERS[1:]:
            create_folder(client, name, parents=True)
        n = 0
        for name in FOLDERS:
            bulk_append(client, name, [seed_message(n + i, size, tag=f"{tag}-{name[:4]}")
                                       for i in range(per_folder)])
            n += per_folder
        return n
    finally:
        client.logout()


def message_ids(server, user) -> dict[str, Counter]:
    """{folder: multiset of Message-IDs} as the server holds them now (empty folders left out)."""
    client = imap_login(server, user)
    try:
        out: dict[str, Counter] = {}
        for name, attrs in list_folders(client).items():
            if b"\\Noselect" in attrs:
                continue
            ids = Counter()
            for raw, _flags, _date in fetch_all(client, name).values():
                m = _MSGID.search(raw)
                ids[m.group(1).decode() if m else "?"] += 1
            if ids:
                out[name] = ids
        return out
    finally:
        client.logout()


def assert_exactly_once(server, source, dest) -> None:
    """Every source message is on the destination once, in the folder of the same name."""
    want, got = message_ids(server, source), message_ids(server, dest)
    assert want, "the source account is empty"
    for folder, ids in want.items():
        have = got.get(folder, Counter())
        dup = {m: n for m, n in have.items() if n > 1}
        assert not dup, f"{dest.name}/{folder}: duplicates {dup}"
        assert have == ids, f"{dest.name}/{folder}: missing {ids - have}, extra {have - ids}"
