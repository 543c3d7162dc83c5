"""A hostile IMAP server (tests/faults/hostile_imap.py): dangerous folder names, literals
that lie, truncated responses, a 3 GB announced message, UIDVALIDITY changing mid-run,
duplicate UIDs. Each bad item gives a clear per-item error, the archive stays valid,
nothing is written outside it, memory stays bounded, the rest is archived (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, run_cli
from hostile_imap import HFolder, HMessage, HostileImap
from seeding import seed_message

ROOT = Path(__file__).resolve().parents[1]


def msgs(tag: str, n: int, tricks: dict[int, str] | None = None) -> list[HMessage]:
    tricks = tricks or {}
    return [HMessage(uid=i + 1, raw=seed_message(i, 4000, tag=tag), trick=tricks.get(i + 1, ""))
            for i in range(n)]


def hostile_account() -> list[HFolder]:
    return [
        HFolder(b"INBOX", msgs("inbox", 20)),
        HFolder(b"../../escape", msgs("dots", 2)),
        HFolder(b"/abs/olute", msgs("abs", 2)),
        HFolder(b"nul\x00name", msgs("nul", 1)),
        HFolder(b"L" * 500, msgs("long", 1)),
        HFolder(b"Coll:ide", msgs("coll1", 1)),
        HFolder(b"Coll?ide", msgs("coll2", 1)),
        HFolder(b"COLL:IDE", msgs("coll3", 1)),
        HFolder(b"Lies", msgs("lies", 5, {3: "lie"})),
        HFolder(b"Cut", msgs("cut", 5, {2: "truncate"})),
        HFolder(b"Huge", msgs("huge", 3, {2: "huge"})),
        HFolder(b"Flip", msgs("flip", 3), uidvalidity_flip=True),
        HFolder(b"Dups", msgs("dups", 4), duplicate_uids=True),
    ]


def run_probed(args: list[str], env: dict[str, str], rss_file: Path) -> subprocess.CompletedProcess[str]:
    """The CLI under tests/rss_probe.py, so that its own peak RSS is recorded."""
    return subprocess.run([sys.executable, str(ROOT / "rss_probe.py"), *args],
                          env={**env, "MM_RSS_FILE": str(rss_file)}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=180)


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_hostile_server_bad_items_fail_alone_and_the_rest_is_archived(tmp_path: Path, kind: str):
    home = tmp_path / "home"
    home.mkdir()
    archive = home / "archive" / kind
    archive.parent.mkdir()
    before = {p for p in tmp_path.rglob("*")}
    with HostileImap(hostile_account()) as server:
        url = f"imap://u@127.0.0.1:{server.port}?tls=none"
        done = run_probed(["backup", url, str(archive), "--password-env", PASSWORD_ENV, "--json",
                           "--timeout", "1", "--retries", "3", "--retry-delay", "0.01"],
                          cli_env("pw"), tmp_path / "rss")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    errors = {e.split(":", 1)[0]: e for e in summary["errors"]}
    # One clear error per bad item, naming the folder and what was wrong.
    assert "message 3" in errors["Lies"], errors
    assert "message 2" in errors["Cut"], errors
    assert "message 2" in errors["Huge"] and "3000000000" in errors["Huge"], errors
    assert "UIDVALIDITY" in errors["Flip"], errors
    assert "nul\x00name" in errors, errors  # cannot even be asked for: that folder fails alone
    assert not any(k.startswith(("INBOX", "Dups")) for k in errors), errors
    # The rest of the account is archived, exactly once.
    got = archive_contents(archive)
    counts = {name: len(box) for name, box in got.items()}
    assert counts["INBOX"] == 20 and counts["Dups"] == 4, counts
    assert counts["Lies"] == 4 and counts["Cut"] == 4 and counts["Huge"] == 2, counts
    assert counts.get("Flip", 0) == 0
    for name in ("../../escape", "/abs/olute", "L" * 500):
        held = [n for n in counts if n.strip("/").endswith(name.strip("/")[-20:])]
        assert held and all(counts[n] >= 1 for n in held), (name, counts)
    colliding = [n for n in counts if n.upper() in ("COLL:IDE", "COLL?IDE")]
    assert sum(counts[n] for n in colliding) == 3, counts  # three folders, none overwritten
    # Nothing outside the archive directory (and no symlink games inside it).
    after = {p for p in tmp_path.rglob("*")} - before
    def ours(p: Path) -> bool:  # the archive, its tree, or its -wal/-shm/.lock siblings
        return archive in (p, *p.parents) or (p.parent == archive.parent
                                               and p.name.startswith(archive.name))
    stray = [p for p in after if not ours(p) and p not in (tmp_path / "rss", home / "archive")]
    assert stray == [], stray
    assert not any(p.is_symlink() for p in archive.rglob("*")) if archive.is_dir() else True
    assert not Path("/abs/olute").exists() and not (home / "escape").exists()
    # The archive is valid.
    check = run_cli("verify", str(archive))
    assert check.code == 0, check.out + check.err
    # A 3 GB announcement did not take the memory with it.
    peak_kb = int((tmp_path / "rss").read_text())
    assert peak_kb < 200_000, f"peak RSS {peak_kb} KiB"
    os.unlink(tmp_path / "rss")


@pytest.mark.parametrize("announced", [True, False])
def test_special_use_sent_only_when_asked_is_still_recorded(tmp_path, announced):
    """RFC 6154 allows a server to mark its folders only for LIST ... RETURN
    (SPECIAL-USE); a plain LIST then shows no \\Sent. The backup asks, and records it;
    a server without SPECIAL-USE is not asked (and records none)."""
    folders = [HFolder(b"INBOX", [HMessage(1, seed_message(1, 500, tag="su"))]),
               HFolder(b"Outbox-2019", [HMessage(1, seed_message(2, 500, tag="su"))],
                       special_use=b"\\Sent")]
    archive = tmp_path / "a.sqlite"
    with HostileImap(folders, special_use=announced) as server:
        done = run_cli("backup", f"imap://u@127.0.0.1:{server.port}?tls=none", str(archive),
                       "--password-env", PASSWORD_ENV, env=cli_env("pw"))
    assert done.code == 0, done.err
    listed = run_cli("ls", str(archive), "--json")
    uses = {f["folder"]: f["special_use"] for f in json.loads(listed.out)["folders"]}
    assert uses["Outbox-2019"] == ("\\Sent" if announced else None)
