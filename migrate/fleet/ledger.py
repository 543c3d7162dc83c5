"""The batch ledger: a SQLite file with one row per account and one per chunk that ran.

The ledger is the admin's record of a migration: which accounts, which pass
each is in, what moved, what failed and why. It never holds mail, nor a
password unless the admin allowed clear passwords at import (then the file is
0600, like a job file). Only the dispatcher writes it (one process at a time,
under a lock); workers report through the broker. Every update is one
transaction, so a dispatcher killed at any instant leaves a ledger that the
same command continues from.

Account states: ``new`` (imported), ``verified`` (both sides logged in and
counted), ``running`` (a pass is under way; ``pass`` says which), ``synced``
(the last full or delta pass finished), ``done`` (the final pass finished: cut
over), ``failed`` (``--attempts`` ran out; ``last_error`` says why).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrate.config.jobs import Credential
from migrate.config.passwords import format_credential, parse_credential
from migrate.errors import ArchiveError, UsageError
from migrate.fleet.accounts import AccountSpec
from migrate.stores.lock import ArchiveLock

SCHEMA_VERSION = 1
STATES = ("new", "verified", "running", "synced", "done", "failed")
PASSES = ("verify", "full", "delta", "final")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,  -- sha of kind/source/dest: names state files and locks
    kind            TEXT NOT NULL,
    source          TEXT NOT NULL,
    dest            TEXT NOT NULL,
    source_password TEXT,                  -- a reference (env:VAR, ...), never a secret unless allowed
    dest_password   TEXT,
    state           TEXT NOT NULL DEFAULT 'new',
    pass            TEXT,                  -- the pass under way or last finished
    passes          INTEGER NOT NULL DEFAULT 0,   -- full/delta/final passes finished
    messages        INTEGER NOT NULL DEFAULT 0,   -- moved, over all passes
    bytes           INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,   -- messages that could not be moved (last pass)
    last_error      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,   -- failed chunks in a row
    chunks          INTEGER NOT NULL DEFAULT 0,
    duration_s      REAL NOT NULL DEFAULT 0,
    verify          TEXT,                  -- JSON: the last verify's counts per side
    task            TEXT,                  -- scale-out: the chunk handed to the broker
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL,
    pass        TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    duration_s  REAL NOT NULL,
    ok          INTEGER NOT NULL,
    more        INTEGER NOT NULL,
    messages    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    error       TEXT,
    worker      TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    wall_s      REAL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    messages    INTEGER NOT NULL DEFAULT 0
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class AccountRow:
    """One account as the ledger has it."""

    id: int
    key: str
    spec: AccountSpec
    state: str
    pass_: str | None
    passes: int
    messages: int
    bytes: int
    errors: int
    last_error: str | None
    attempts: int
    chunks: int
    duration_s: float
    verify: dict[str, Any] | None
    task: dict[str, Any] | None
    updated_at: str

    @property
    def label(self) -> str:
        return self.spec.label

    def as_dict(self) -> dict[str, Any]:
        """For ``status --json`` and the report: no password, only where it comes from."""
        from migrate.config.passwords import shown

        return {"id": self.id, "account": self.label, "kind": self.spec.kind,
                "source": self.spec.source, "dest": self.spec.dest,
                "source_password": shown(self.spec.source_password) or None,
                "dest_password": shown(self.spec.dest_password) or None,
                "state": self.state, "pass": self.pass_, "passes": self.passes,
                "messages": self.messages, "bytes": self.bytes, "errors": self.errors,
                "last_error": self.last_error, "attempts": self.attempts, "chunks": self.chunks,
                "duration_s": round(self.duration_s, 3), "verify": self.verify,
                "updated_at": self.updated_at}


@dataclass(frozen=True)
class ChunkReport:
    """What one chunk did, as a worker or the local pool reports it."""

    ok: bool
    more: bool = False
    messages: int = 0
    bytes: int = 0
    errors: int = 0
    error: str | None = None
    duration_s: float = 0.0
    worker: str = ""
    #: A verify chunk's counts (source, dest, equal).
    verify: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "more": self.more, "messages": self.messages, "bytes": self.bytes,
                "errors": self.errors, "error": self.error, "duration_s": self.duration_s,
                "worker": self.worker, "verify": self.verify}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkReport:
        return cls(ok=bool(data["ok"]), more=bool(data.get("more")),
                   messages=int(data.get("messages", 0)), bytes=int(data.get("bytes", 0)),
                   errors=int(data.get("errors", 0)), error=data.get("error"),
                   duration_s=float(data.get("duration_s", 0.0)), worker=str(data.get("worker", "")),
                   verify=data.get("verify"))


class Ledger:
    """An open ledger; one writer at a time (the lock is held until :meth:`close`)."""

    def __init__(self, path: Path, *, create: bool = False, lock_wait: float = 0.0,
                 readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        if not create and not path.exists():
            raise UsageError(f"no ledger at {path}; create it with "
                             f"`mailmigrate batch init {path} --accounts FILE`")
        if create and path.exists():
            raise UsageError(f"{path} exists already; add accounts with `mailmigrate batch add`, "
                             "or choose a new file")
        self._lock = ArchiveLock(self.work_dir / "lock", wait_seconds=lock_wait)
        if readonly:  # status and report read while a batch runs: no lock, no writes
            try:
                self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                            isolation_level=None)
                self.conn.execute("PRAGMA busy_timeout=5000")
                self._check(False)
            except sqlite3.DatabaseError as exc:
                raise ArchiveError(f"{path} is not a mailmigrate ledger ({exc})") from None
            return
        try:
            self._lock.acquire()
        except ArchiveError:
            raise ArchiveError(f"ledger {path} is in use by another batch command; wait for it "
                               "to finish (or stop it) and run this again") from None
        try:
            if create:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=5000")
            if create:
                self.conn.executescript(_SCHEMA)
            self._check(create)
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            raise ArchiveError(f"{path} is not a mailmigrate ledger ({exc})") from None
        except BaseException:
            self._lock.release()
            raise

    @property
    def work_dir(self) -> Path:
        """Next to the ledger: its lock and the local pool's per-account state files."""
        return self.path.with_name(self.path.name + ".d")

    def state_path(self, key: str) -> Path:
        return self.work_dir / "state" / f"{key}.sqlite"

    def _check(self, create: bool) -> None:
        if create:
            with self.tx() as conn:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT INTO meta VALUES ('batch_id', ?)", (uuid.uuid4().hex,))
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (_now(),))
            return
        try:
            version = self.meta("schema_version")
        except sqlite3.OperationalError:
            version = None
        if version != str(SCHEMA_VERSION):
            raise ArchiveError(f"{self.path} is not a mailmigrate ledger of this version "
                               f"(schema {version}, expected {SCHEMA_VERSION})")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def batch_id(self) -> str:
        return self.meta("batch_id") or ""

    @property
    def insecure(self) -> bool:
        return self.meta("insecure") == "1"

    def close(self) -> None:
        self.conn.close()
        if not self.readonly:
            self._lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accounts ----------------------------------------------------------------------
    def add(self, accounts: Sequence[AccountSpec]) -> int:
        """Add accounts (all or none); an account already in the ledger is an error."""
        existing = {r[0] for r in self.conn.execute("SELECT key FROM accounts")}
        dup = next((a for a in accounts if a.key in existing), None)
        if dup is not None:
            raise UsageError(f"{dup.label} ({dup.kind}) is in the ledger already; nothing was added")
        with self.tx() as conn:
            conn.executemany(
                "INSERT INTO accounts (key, kind, source, dest, source_password, dest_password,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(a.key, a.kind, a.source, a.dest, _cred_text(a.source_password),
                  _cred_text(a.dest_password), _now()) for a in accounts])
        return len(accounts)

    def remove(self, selectors: Iterable[str]) -> list[AccountRow]:
        """Remove accounts named by id or by a login in their label (all or none)."""
        rows = self.accounts()
        chosen: list[AccountRow] = []
        for sel in selectors:
            found = [r for r in rows if str(r.id) == sel or sel in r.label.split(" -> ")
                     or sel == r.label or any(sel == part.partition("@")[0]
                                              for part in r.label.split(" -> "))]
            if not found:
                raise UsageError(f"no account {sel!r} in {self.path}; see `mailmigrate batch status`")
            if len(found) > 1:
                ids = ", ".join(str(r.id) for r in found)
                raise UsageError(f"{sel!r} names {len(found)} accounts ({ids}); give the id")
            chosen.extend(r for r in found if r not in chosen)
        with self.tx() as conn:
            conn.executemany("DELETE FROM accounts WHERE id = ?", [(r.id,) for r in chosen])
            conn.executemany("DELETE FROM chunks WHERE account_id = ?", [(r.id,) for r in chosen])
        return chosen

    def accounts(self, states: Iterable[str] | None = None) -> list[AccountRow]:
        query = "SELECT * FROM accounts"
        args: list[str] = []
        if states is not None:
            wanted = list(states)
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
            args = wanted
        cur = self.conn.execute(query + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        return [_row(dict(zip(names, values, strict=True))) for values in cur.fetchall()]

    def get(self, account_id: int) -> AccountRow:
        cur = self.conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,))
        names = [d[0] for d in cur.description]
        values = cur.fetchone()
        if values is None:
            raise UsageError(f"no account {account_id} in {self.path}")
        return _row(dict(zip(names, values, strict=True)))

    # -- passes ------------------------------------------------------------------------
    def begin(self, account_id: int, pass_: str) -> None:
        """The account starts (or goes on with) ``pass_``."""
        with self.tx() as conn:
            conn.execute("UPDATE accounts SET pass = ?, state = CASE WHEN ? = 'verify' THEN state"
                         " ELSE 'running' END, updated_at = ? WHERE id = ?",
                         (pass_, pass_, _now(), account_id))

    def reset_attempts(self, account_ids: Iterable[int]) -> None:
        with self.tx() as conn:
            conn.executemany("UPDATE accounts SET attempts = 0, state = CASE WHEN pass IS NULL"
                             " OR pass = 'verify' THEN 'new' ELSE 'running' END WHERE id = ?"
                             " AND state = 'failed'", [(i,) for i in account_ids])

    def record(self, account_id: int, pass_: str, report: ChunkReport, *, attempts: int,
               finished: bool, failed: bool) -> None:
        """One chunk's report, and what it means for the account, in one transaction.

        ``finished``: the pass is complete; ``failed``: attempts ran out.
        """
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO chunks (account_id, pass, finished_at, duration_s, ok, more, messages,"
                " bytes, errors, error, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account_id, pass_, _now(), report.duration_s, int(report.ok), int(report.more),
                 report.messages, report.bytes, report.errors, report.error, report.worker))
            sets = ["chunks = chunks + 1", "duration_s = duration_s + ?", "messages = messages + ?",
                    "bytes = bytes + ?", "attempts = ?", "updated_at = ?", "task = NULL"]
            args: list[Any] = [report.duration_s, report.messages, report.bytes, attempts, _now()]
            if report.error:
                sets.append("last_error = ?")
                args.append(report.error)
            if report.verify is not None:
                sets.append("verify = ?")
                args.append(json.dumps(report.verify, ensure_ascii=False))
            if pass_ != "verify" and report.ok:
                # errors of a pass are counted afresh: a later pass may move what failed before
                sets.append("errors = CASE WHEN ? THEN ? ELSE errors + ? END")
                args += [int(self._first_chunk(conn, account_id, pass_)), report.errors, report.errors]
            if failed:
                sets.append("state = 'failed'")
            elif finished:
                new_state = {"verify": "verified", "final": "done"}.get(pass_, "synced")
                if pass_ == "verify":
                    sets.append("state = CASE WHEN state IN ('new', 'failed') THEN ? ELSE state END")
                else:
                    sets.append("state = ?")
                    sets.append("passes = passes + 1")
                args.append(new_state)
                if report.ok and not report.errors and not report.error:
                    sets.append("last_error = NULL")
            conn.execute(f"UPDATE accounts SET {', '.join(sets)} WHERE id = ?", [*args, account_id])

    @staticmethod
    def _first_chunk(conn: sqlite3.Connection, account_id: int, pass_: str) -> bool:
        """True when the chunk just recorded is the pass's first (the previous chunk
        belongs to another pass, or there is none)."""
        rows = conn.execute("SELECT pass, more FROM chunks WHERE account_id = ? AND ok = 1"
                            " ORDER BY id DESC LIMIT 2", (account_id,)).fetchall()
        return len(rows) < 2 or rows[1][0] != pass_ or not rows[1][1]

    def set_task(self, account_id: int, task: dict[str, Any] | None) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE accounts SET task = ? WHERE id = ?",
                         (json.dumps(task) if task is not None else None, account_id))

    # -- runs --------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        with self.tx() as conn:
            cur = conn.execute("INSERT INTO runs (command, started_at) VALUES (?, ?)",
                               (command, _now()))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, wall_s: float, messages: int, nbytes: int) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE runs SET finished_at = ?, wall_s = ?, messages = ?, bytes = ?"
                         " WHERE id = ?", (_now(), wall_s, messages, nbytes, run_id))

    def throughput(self) -> float | None:
        """Bytes per second of the latest finished run that moved mail (for the ETA)."""
        row = self.conn.execute("SELECT bytes, wall_s FROM runs WHERE finished_at IS NOT NULL"
                                " AND bytes > 0 AND wall_s > 0 ORDER BY id DESC LIMIT 1").fetchone()
        return float(row[0]) / float(row[1]) if row else None


def _cred_text(cred: Credential | None) -> str | None:
    return format_credential(cred) if cred is not None else None


def _row(d: dict[str, Any]) -> AccountRow:
    def cred(text: str | None) -> Credential | None:
        return parse_credential(text, allow_clear=True) if text else None

    spec = AccountSpec(d["kind"], d["source"], d["dest"], cred(d["source_password"]),
                       cred(d["dest_password"]))
    return AccountRow(id=int(d["id"]), key=str(d["key"]), spec=spec, state=str(d["state"]),
                      pass_=d["pass"], passes=int(d["passes"]), messages=int(d["messages"]),
                      bytes=int(d["bytes"]), errors=int(d["errors"]), last_error=d["last_error"],
                      attempts=int(d["attempts"]), chunks=int(d["chunks"]),
                      duration_s=float(d["duration_s"]),
                      verify=json.loads(d["verify"]) if d["verify"] else None,
                      task=json.loads(d["task"]) if d["task"] else None,
                      updated_at=str(d["updated_at"]))


__all__ = ["PASSES", "STATES", "AccountRow", "ChunkReport", "Ledger"]
