"""The reference loads of the peer benchmark, seeded into a private Dovecot.

One definition per load, so every tool in a run reads the same mailbox:

* ``mixed``: 5,000 messages, ~358 MB, 15 folders, long-tailed sizes (400 B … 12 MB),
  the load of docs/DESIGN.md's performance table (same distribution and seed as
  ``bench_backup.py``);
* ``small``: 5,000 messages, ~34 MB, 15 folders, the same shape scaled down
  (a mailbox of plain-text mail: per-message costs dominate);
* ``transfer``: 2,000 messages, ~150 MB, 10 folders, for copy and restore;
* ``drain``: 2,000 messages, ~150 MB, all in INBOX (POP3 sees only the inbox).

Seeding uses MULTIAPPEND (``tests/seeding.py``) with imaplib's debug output off,
about 1 ms per message on Dovecot's side.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dovecot import DovecotServer, User  # noqa: E402
from seeding import bulk_append, create_folder, imap_login, seed_message  # noqa: E402


@dataclass(frozen=True)
class Load:
    name: str
    messages: int
    megabytes: float
    folders: int

    def folder_names(self) -> list[str]:
        return ["INBOX"] + [f"Folder{i:02d}" for i in range(1, self.folders)]


LOADS = {
    "mixed": Load("mixed", 5000, 358, 15),
    "small": Load("small", 5000, 34, 15),
    "transfer": Load("transfer", 2000, 150, 10),
    "drain": Load("drain", 2000, 150, 1),
}


def sizes(n: int, total_mb: float, rng: random.Random) -> list[int]:
    """Long-tailed sizes (many small, a few MB-sized) scaled to about total_mb."""
    raw = [rng.lognormvariate(9.6, 1.3) for _ in range(n)]
    scale = total_mb * 1024 * 1024 / sum(raw)
    return [max(400, min(int(s * scale), 12 * 1024 * 1024)) for s in raw]


@dataclass(frozen=True)
class Seeded:
    load: Load
    user: User
    count: int
    total_bytes: int


def seed(server: DovecotServer, load: Load, *, scale: float = 1.0) -> Seeded:
    """A fresh account holding ``load`` (``scale`` < 1 for a quick trial run)."""
    user = server.add_user()
    client = imap_login(server, user)
    client._imap.debug = 0  # imapclient turns imaplib's per-line repr() on
    names = load.folder_names()
    for name in names[1:]:
        create_folder(client, name)
    count = max(len(names), int(load.messages * scale))
    all_sizes = sizes(count, load.megabytes * scale, random.Random(42))
    per_folder: dict[str, list[bytes]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for i, size in enumerate(all_sizes):
        folder = names[i % len(names)]
        per_folder[folder].append(seed_message(i, size, tag=load.name))
        if sum(len(m) for m in per_folder[folder]) > 16 << 20 or len(per_folder[folder]) >= 100:
            bulk_append(client, folder, per_folder[folder])
            per_folder[folder] = []
    for folder, rest in per_folder.items():
        if rest:
            bulk_append(client, folder, rest)
    client.logout()
    total = sum(all_sizes)
    print(f"seeded {load.name}: {count} messages, {total / 1e6:.0f} MB in {len(names)} folders "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return Seeded(load, user, count, total)
