"""Running the real CLI as a subprocess, and reading archives back for assertions."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

PASSWORD_ENV = "MM_TEST_PASSWORD"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)


def cli_env(password: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMIGRATE_DEBUG")}
    if password is not None:
        env[PASSWORD_ENV] = password
    env.update(extra)
    return env


def run_cli(*args: str, password: str | None = None, timeout: float = 300,
            env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
    """``python -m migrate ARGS`` in a fresh process, as a user would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "migrate", *args],
        capture_output=True, text=True, timeout=timeout,
        env=env if env is not None else cli_env(password),
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def imap_url(server: Any, user: Any, scheme: str = "imap") -> str:
    return f"{scheme}://{user.name}@{server.host}:{server.imap_port}?tls=none"


def backup_args(server: Any, user: Any, archive: Path | str, *extra: str) -> list[str]:
    return ["backup", imap_url(server, user), str(archive), "--password-env", PASSWORD_ENV,
            *extra]


# -- reading archives back ----------------------------------------------------------
ArchivedMessage = tuple[bytes, tuple[str, ...], datetime | None]


def sqlite_folder_contents(path: Path) -> dict[str, dict[int, ArchivedMessage]]:
    """{folder: {uid: (raw, flags, internaldate)}} by plain SQL on the public schema."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, dict[int, ArchivedMessage]] = {}
        for name, uid, raw, flags, idate in conn.execute(
            "SELECT f.name, fm.uid, m.raw, fm.flags, fm.internaldate FROM folder_messages fm"
            " JOIN folders f ON f.id = fm.folder_id JOIN messages m ON m.id = fm.message_id"
        ):
            box = out.setdefault(name, {})
            assert uid not in box, f"duplicate uid {uid} in {name}"
            box[uid] = (bytes(raw), tuple(json.loads(flags)),
                        datetime.fromisoformat(idate) if idate else None)
        return out
    finally:
        conn.close()


def mbox_folder_contents(path: Path) -> dict[str, dict[int, ArchivedMessage]]:
    from migrate.stores.mbox_archive import MboxArchive

    store = MboxArchive(path, readonly=True)
    try:
        out: dict[str, dict[int, ArchivedMessage]] = {}
        for folder in store.list_folders():
            box: dict[int, ArchivedMessage] = {}
            for msg in store.iter_messages(folder):
                assert msg.uid is not None
                assert msg.uid not in box, f"duplicate uid {msg.uid} in {folder.name}"
                box[msg.uid] = (msg.raw, msg.flags, msg.internaldate)
            out[folder.name] = box
        return out
    finally:
        store.close()


def archive_contents(path: Path) -> dict[str, dict[int, ArchivedMessage]]:
    if path.suffix == ".sqlite":
        return sqlite_folder_contents(path)
    return mbox_folder_contents(path)
