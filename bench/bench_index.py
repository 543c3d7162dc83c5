"""What the search index costs: storage per FTS layout, summary time, the one-off upgrade.

On the DESIGN.md reference load (5,000 messages / ~358 MB in 15 folders,
seeded into a private Dovecot as bench_backup.py does) and on the test
corpus of real-world messages (tests/data/corpus):

1. one `mailmigrate backup` into a SQLite archive (schema 2), and the size of
   every table and index in it (SQLite's dbstat);
2. the same index entries in three FTS5 layouts, each in a scratch database:
   external content (schema 2), contentless (schema 1) and a plain FTS5 table
   that keeps its own copy of the text (what Datasette's tooling creates by
   default);
3. the summary's time per message, schema 1's (git show of the old module,
   passed with --old-summary) against this one;
4. the upgrade: the archive turned back into schema 1, then opened.

    python bench/bench_index.py [--messages 5000] [--old-summary /tmp/old_summary.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from bench_backup import sizes  # noqa: E402
from dovecot import DovecotServer  # noqa: E402
from seeding import bulk_append, corpus_messages, create_folder, imap_login, seed_message  # noqa: E402

from migrate.formats.summary import summarize  # noqa: E402
from migrate.stores import sqlite_schema  # noqa: E402
from migrate.stores.sqlite_archive import SqliteArchive  # noqa: E402

LAYOUTS = {
    "external content (schema 2)": sqlite_schema.FTS,
    "contentless (schema 1)": "CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, from_addr,"
                              " to_addrs, body, content='')",
    "plain FTS5, own copy of the text": "CREATE VIRTUAL TABLE messages_fts USING fts5 (subject,"
                                        " from_addr, to_addrs, body)",
}


def object_sizes(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {name: int(size) for name, size in conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")}
    finally:
        conn.close()


def fts_bytes(sizes_by_name: dict[str, int]) -> int:
    return sum(v for k, v in sizes_by_name.items() if k.startswith("messages_fts"))


def raws(db: Path) -> Iterator[tuple[int, bytes]]:
    conn = sqlite3.connect(db)
    try:
        after = 0
        while True:
            page = conn.execute("SELECT id, raw FROM messages WHERE id > ? ORDER BY id LIMIT 200",
                                (after,)).fetchall()
            if not page:
                return
            for mid, raw in page:
                yield int(mid), bytes(raw)
            after = int(page[-1][0])
    finally:
        conn.close()


def layout_sizes(rows: list[tuple[int, tuple[object, ...]]], work: Path) -> dict[str, int]:
    out = {}
    for label, ddl in LAYOUTS.items():
        db = work / "layout.sqlite"
        db.unlink(missing_ok=True)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA page_size=16384")
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, subject TEXT, from_addr TEXT,"
                     " to_addrs TEXT)")
        conn.execute(ddl)
        conn.execute("BEGIN")
        for mid, values in rows:
            conn.execute(sqlite_schema.INSERT_FTS, (mid, *values))
        conn.execute("COMMIT")
        conn.close()
        out[label] = fts_bytes(object_sizes(db))
    return out


def timed(fn: Callable[[bytes], object], messages: list[bytes]) -> float:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for raw in messages:
            fn(raw)
        runs.append((time.perf_counter() - t0) / len(messages) * 1e3)
    return statistics.median(runs)


def downgrade(db: Path) -> None:
    """Back to schema 1's layout: the contentless index, no attachments column, version 1."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("DROP VIEW mail; DROP TABLE messages_fts;"
                       " ALTER TABLE messages DROP COLUMN attachments;"
                       + LAYOUTS["contentless (schema 1)"] + ";"
                       " UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    conn.close()


def report(label: str, db: Path | None, messages: list[bytes], work: Path,
           old: Callable[[bytes], object] | None) -> None:
    print(f"\n== {label}: {len(messages)} messages, {sum(map(len, messages)) / 1e6:.1f} MB")
    if db is not None:
        objects = object_sizes(db)
        total = db.stat().st_size
        print(f"archive file {total / 1e6:.1f} MB; by object (MB):")
        for name, size in list(objects.items())[:12]:
            print(f"  {name:32s} {size / 1e6:8.2f}")
    rows = [(i + 1, sqlite_schema.fts_row(i + 1, summarize(raw))[1:])
            for i, raw in enumerate(messages)]
    text = sum(len(str(v or "").encode()) for _, values in rows for v in values)
    print(f"indexed text (subject, addresses, body): {text / 1e6:.2f} MB")
    for layout, size in layout_sizes(rows, work).items():
        print(f"  FTS {layout:36s} {size / 1e6:8.2f} MB")
    new_ms = timed(summarize, messages)
    line = f"summary: {new_ms:.3f} ms/message"
    if old is not None:
        line += f" (schema 1's: {timed(old, messages):.3f} ms/message)"
    print(line)
    if db is not None:
        copy = work / "upgrade.sqlite"
        shutil.copyfile(db, copy)
        downgrade(copy)
        t0 = time.perf_counter()
        SqliteArchive(copy, readonly=True, upgrade_progress=False).close()
        took = time.perf_counter() - t0
        print(f"upgrade of the schema 1 copy on first open: {took:.1f} s "
              f"({len(messages) / took:.0f} messages/s)")
        copy.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--folders", type=int, default=15)
    parser.add_argument("--megabytes", type=float, default=358)
    parser.add_argument("--old-summary", type=Path, help="schema 1's summary.py, for its time")
    opts = parser.parse_args()
    old = None
    if opts.old_summary:
        spec = importlib.util.spec_from_file_location("old_summary", opts.old_summary)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["old_summary"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        old = module.summarize
    import random
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="mmindex"))
    try:
        rng = random.Random(42)
        with DovecotServer() as server:
            user = server.add_user()
            client = imap_login(server, user)
            names = ["INBOX"] + [f"Folder{i:02d}" for i in range(1, opts.folders)]
            for name in names[1:]:
                create_folder(client, name)
            for i, size in enumerate(sizes(opts.messages, opts.megabytes, rng)):
                bulk_append(client, names[i % len(names)], [seed_message(i, size)])
            client.logout()
            db = work / "reference.sqlite"
            done = subprocess.run(
                [sys.executable, "-m", "migrate", "backup",
                 f"imap://{user.name}@127.0.0.1:{server.imap_port}?tls=none", str(db),
                 "--password-env", "BENCH_PW", "--quiet"],
                env={"BENCH_PW": user.password, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
        report("reference load (bench_backup.py's)", db, [raw for _, raw in raws(db)], work, old)
        report("test corpus (real-world messages)", None, [r for _, r in corpus_messages()], work,
               old)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
