"""The peer benchmark: mailmigrate against mbsync, dsync, getmail6, imapsync and an APPEND loop.

    python bench/peers.py                 # everything, medians of 3, writes bench/RESULTS.md
    python bench/peers.py --jobs backup-small,drain --repeat 5 --no-write
    python bench/peers.py --scale 0.1 --repeat 1 --no-write      # a quick trial
    python bench/peers.py --install       # apt-get the peers first (as root)

Every job seeds its reference load (``bench/loads.py``) into one private Dovecot
(``tests/dovecot.py``, loopback) and runs each tool on it interleaved, A B A B,
each run into a fresh destination, so that a machine shared with other work
slows every tool alike; the table gives medians and ratios (peer's wall time /
mailmigrate's: above 1, mailmigrate is faster), never absolute targets.

- backup-mixed, backup-small: ``backup`` into SQLite (and into an mbox tree), against
  dsync (``doveadm backup -R`` with imapc, into a Dovecot account) and mbsync (to Maildir);
- drain: ``drain`` POP3 into SQLite, against getmail6 (to Maildir);
- copy: ``copy`` IMAP to IMAP, against imapsync;
- restore: ``restore`` from SQLite, against ``bench/append_loop.py`` (one pipelined
  LITERAL+ APPEND per message);
- link-backup, link-copy: backup and copy with ``--max-connections 4`` behind
  ``bench/linkproxy.py`` (30 ms RTT, 5 MB/s per connection), against mbsync and imapsync.

Each tool's next runs on its own result are its no-op time (the median of 3, timed
without the RSS sampler). Peak RSS is the
larger of GNU time's ``%M`` (the biggest single process) and the sum of VmRSS
over the tool's process tree, sampled every 20 ms (for tools that fork).

The peers, and what they need here (``--install`` runs the apt-get line):
- mbsync: Debian package ``isync``; dsync: ``doveadm`` from ``dovecot-core`` (the
  test suite's Dovecot); getmail6: ``getmail6``; GNU time: ``time``.
- imapsync is not in Debian. Take the single script ``imapsync`` from the
  imapsync/imapsync repository on GitHub, make it executable, and put it on PATH
  or point ``IMAPSYNC=/path/to/imapsync`` at it; its Perl modules come from
  Debian's packages (``--install`` installs them, the list is ``IMAPSYNC_PERL``
  below). Never commit it here. Without it the imapsync jobs say so and are skipped.

getmail6 forks a child per delivered message and sometimes misses the child's
exit, then gives up on the run after its ``timeout``; the harness sets that to
10 s, runs getmail again until every message is delivered (as cron would), and
reports the time without those waits, with the number of stalls.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import pwd
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from dovecot import MAIL_USER, DovecotServer, DovecotUnavailable, User  # noqa: E402
from linkproxy import LinkProxy  # noqa: E402
from loads import LOADS, Seeded, seed  # noqa: E402
from seeding import imap_login  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- peers.py:begin -->", "<!-- peers.py:end -->"
APT = ["isync", "getmail6", "time", "util-linux"]
IMAPSYNC_PERL = [
    "libauthen-ntlm-perl", "libcgi-pm-perl", "libcrypt-openssl-rsa-perl", "libdata-uniqid-perl",
    "libencode-imaputf7-perl", "libfile-copy-recursive-perl", "libfile-tail-perl",
    "libio-socket-inet6-perl", "libio-socket-ssl-perl", "libio-tee-perl", "libhtml-parser-perl",
    "libjson-webtoken-perl", "libmail-imapclient-perl", "libparse-recdescent-perl",
    "libproc-processtable-perl", "libmodule-scandeps-perl", "libreadonly-perl",
    "libregexp-common-perl", "libsys-meminfo-perl", "libterm-readkey-perl",
    "libunicode-string-perl", "liburi-perl", "libwww-perl",
]
GETMAIL_TIMEOUT = 10
TARGETS = {  # docs/DESIGN.md, "Performance": peer / mailmigrate at least this
    ("backup-mixed", "dsync"): 2.0, ("backup-mixed", "mbsync"): 2.0,
    ("backup-small", "dsync"): 2.5, ("drain", "getmail6"): 10.0,
    ("copy", "imapsync"): 3.0, ("restore", "append-loop"): 1.5,
    ("link-backup", "mbsync"): 2.0, ("link-copy", "imapsync"): 3.0,
}


# -- running one command ------------------------------------------------------------
@dataclass
class Run:
    wall: float
    rss_kb: int
    ok: bool
    note: str = ""
    turns: int | None = None  # round trips, when behind the link proxy


def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS over ``root``'s descendants (not ``root``: that is GNU time)."""
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        if pid != root:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total


def measure(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900,
            cwd: Path | None = None) -> Run:
    """Wall time and peak RSS of one command (GNU time for the biggest process, samples
    of the tree's sum for forking tools)."""
    with tempfile.NamedTemporaryFile(prefix="mmbench-time") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], env=env,
                                cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        peak = 0
        deadline = start + timeout
        while proc.poll() is None:
            if time.perf_counter() > deadline:
                proc.kill()
                break
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.02)
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        proc.wait()
        wall = time.perf_counter() - start
        with contextlib.suppress(ValueError):
            peak = max(peak, int(Path(out.name).read_text().split()[-1]))
    ok = proc.returncode == 0
    return Run(wall, peak, ok, "" if ok else f"exit {proc.returncode}: {err.strip()[-300:]}")


# -- the bench's world ----------------------------------------------------------------
@dataclass
class World:
    server: DovecotServer
    work: Path
    tools: dict[str, str]
    python_env: dict[str, str]
    loads: dict[str, Seeded] = field(default_factory=dict)
    archives: dict[str, Path] = field(default_factory=dict)
    link: LinkProxy | None = None

    def measure(self, argv: list[str], env: dict[str, str] | None = None,
                cwd: Path | None = None) -> Run:
        """:func:`measure`, with the round trips it cost when behind the link."""
        if self.link is not None:
            self.link.reset()
        run = measure(argv, env, cwd=cwd)
        if self.link is not None:
            run.turns = self.link.turns
        return run

    def again(self, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None, runs: int = 3) -> Run:
        """The no-op re-run: the median of ``runs``, timed without the RSS sampler (whose
        20 ms polling would add up to a tenth of a no-op to the time)."""
        walls: list[float] = []
        for _ in range(runs):
            if self.link is not None:
                self.link.reset()
            t0 = time.perf_counter()
            proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
                return Run(walls[-1], 0, False, f"exit {proc.returncode}: {err}")
        run = Run(statistics.median(walls), 0, True)
        if self.link is not None:
            run.turns = self.link.turns
        return run

    def load(self, name: str, scale: float) -> Seeded:
        if name not in self.loads:
            self.loads[name] = seed(self.server, LOADS[name], scale=scale)
        return self.loads[name]

    def fresh_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    def forget(self, user: User, result: int) -> int:
        """Drop a destination account's mail once it was counted (disk stays small)."""
        shutil.rmtree(self.server.mail_dir / user.name, ignore_errors=True)
        return result

    def imap_url(self, user: User, port: int | None = None) -> str:
        return f"imap://{user.name}@127.0.0.1:{port or self.server.imap_port}?tls=none"

    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "migrate"])

    def mailmigrate(self, *args: str, **env: str) -> tuple[list[str], dict[str, str]]:
        return [*self.command, *args, "--quiet"], {**self.python_env, **env}


def imap_count(server: DovecotServer, user: User) -> int:
    """Messages in every folder of an account (STATUS), to check a tool's result."""
    client = imap_login(server, user)
    try:
        return sum(client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
                   for flags, _, name in client.list_folders() if b"\\Noselect" not in flags)
    finally:
        client.logout()


def maildir_count(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))


def sqlite_count(path: Path, table: str = "folder_messages") -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


# -- tools: each returns (first run, no-op run) and checks what it made -------------------
Tool = Callable[[World, Seeded, int | None], tuple[Run, Run | None]]


def checked(run: Run, got: int, want: int) -> Run:
    if run.ok and got != want:
        run.ok, run.note = False, f"made {got} messages, expected {want}"
    return run


def mm_backup(kind: str, connections: int = 1) -> Tool:
    def tool(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
        archive = w.fresh_dir("mm-") / ("a.sqlite" if kind == "sqlite" else "tree")
        argv, env = w.mailmigrate("backup", w.imap_url(s.user, port), str(archive), "--password-env",
                                  "BENCH_PW", "--max-connections", str(connections),
                                  BENCH_PW=s.user.password)
        first = w.measure(argv, env)
        again = w.again(argv, env)
        if kind == "sqlite":
            got = sqlite_count(archive) if first.ok else 0
        else:
            got = sqlite_count(archive / ".mailmigrate" / "index.sqlite", "messages") if first.ok else 0
        shutil.rmtree(archive.parent)
        return checked(first, got, s.count), again
    return tool


def dsync(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    dest = w.server.add_user()
    argv = ["doveadm", "-c", str(w.server.conf_path), "-o", "imapc_host=127.0.0.1",
            "-o", f"imapc_port={port or w.server.imap_port}", "-o", f"imapc_user={s.user.name}",
            "-o", f"imapc_password={s.user.password}", "-o", "imapc_features=rfc822.size fetch-headers",
            "-o", "mail_fsync=optimized", "backup", "-R", "-u", dest.name, "imapc:"]
    first = w.measure(argv)
    again = w.again(argv)
    return checked(first, w.forget(dest, maildir_count(w.server.maildir(dest))), s.count), again


def mbsync(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    home = w.fresh_dir("mbsync-")
    rc = home / "mbsyncrc"
    rc.write_text(f"IMAPAccount src\nHost 127.0.0.1\nPort {port or w.server.imap_port}\n"
                  f"User {s.user.name}\nPass {s.user.password}\nSSLType None\nAuthMechs LOGIN\n\n"
                  "IMAPStore remote\nAccount src\n\n"
                  f"MaildirStore local\nPath {home}/mail/\nInbox {home}/mail/INBOX\n"
                  "SubFolders Verbatim\n\n"
                  "Channel all\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\n"
                  "Sync Pull\nSyncState *\n")
    rc.chmod(0o600)
    (home / "mail").mkdir()
    argv = [w.tools["mbsync"], "-q", "-c", str(rc), "-a"]
    first = w.measure(argv)
    again = w.again(argv)
    got = maildir_count(home / "mail")
    shutil.rmtree(home)
    return checked(first, got, s.count), again


def _as_mail_user() -> list[str]:
    """getmail refuses to deliver as root: run it as the test suite's mail user."""
    if os.geteuid() != 0:
        return []
    pw = pwd.getpwnam(MAIL_USER)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


def getmail(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    home = w.fresh_dir("getmail-")
    home.chmod(0o755)
    for sub in ("mail/cur", "mail/new", "mail/tmp", "state"):
        (home / sub).mkdir(parents=True)
    rc = home / "getmailrc"
    rc.write_text(f"[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
                  f"port = {port or w.server.pop3_port}\nusername = {s.user.name}\n"
                  f"password = {s.user.password}\ntimeout = {GETMAIL_TIMEOUT}\n\n"
                  f"[destination]\ntype = Maildir\npath = {home}/mail/\n\n"
                  "[options]\nread_all = false\ndelete = false\nverbose = 0\n"
                  "message_log_verbose = false\n")
    if os.geteuid() == 0:
        pw = pwd.getpwnam(MAIL_USER)
        for p in [home, *home.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)
    argv = [*_as_mail_user(), w.tools["getmail"], "--rcfile", str(rc), "--getmaildir",
            str(home / "state")]
    total = Run(0.0, 0, True)
    stalls = 0
    for _ in range(60):  # until a run ends well, as repeated cron runs would
        run = w.measure(argv)
        total.wall += run.wall
        total.rss_kb = max(total.rss_kb, run.rss_kb)
        if run.ok:
            break
        stalls += 1
        total.wall -= GETMAIL_TIMEOUT  # the wait for a child it had already lost
    again = w.again(argv)
    distinct, files = distinct_messages(home / "mail")
    total.note = ", ".join(x for x in (f"{stalls} stalls" if stalls else "",
                                        f"{files - distinct} duplicates" if files > distinct else "")
                           if x)
    shutil.rmtree(home)
    return checked(total, distinct, s.count), again


def distinct_messages(path: Path) -> tuple[int, int]:
    """(distinct Message-IDs, files) of a Maildir: a run that dies before it records
    what it delivered delivers it again on the next run."""
    ids: set[bytes] = set()
    files = 0
    for p in path.rglob("*"):
        if p.is_file() and p.parent.name in ("cur", "new"):
            files += 1
            with open(p, "rb") as f:
                head = f.read(8192)
            for line in head.split(b"\n"):
                if line.lower().startswith(b"message-id:"):
                    ids.add(line.split(b":", 1)[1].strip())
                    break
    return len(ids), files


def mm_drain(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    archive = w.fresh_dir("mm-") / "a.sqlite"
    url = f"pop3://{s.user.name}@127.0.0.1:{port or w.server.pop3_port}?tls=none"
    argv, env = w.mailmigrate("drain", url, str(archive), "--password-env", "BENCH_PW",
                              BENCH_PW=s.user.password)
    first = w.measure(argv, env)
    again = w.again(argv, env)
    got = sqlite_count(archive) if first.ok else 0
    shutil.rmtree(archive.parent)
    return checked(first, got, s.count), again


def mm_copy(connections: int = 1) -> Tool:
    def tool(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
        dest = w.server.add_user()
        state = w.fresh_dir("mm-") / "state.db"
        argv, env = w.mailmigrate("copy", w.imap_url(s.user, port), w.imap_url(dest, port),
                                  "--password-env", "BENCH_PW", "--dest-password-env", "BENCH_DEST_PW",
                                  "--state", str(state), "--max-connections", str(connections),
                                  BENCH_PW=s.user.password, BENCH_DEST_PW=dest.password)
        first = w.measure(argv, env)
        again = w.again(argv, env)
        return checked(first, w.forget(dest, imap_count(w.server, dest)), s.count), again
    return tool


def imapsync(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    dest = w.server.add_user()
    home = w.fresh_dir("imapsync-")
    (home / "pw1").write_text(s.user.password + "\n")
    (home / "pw2").write_text(dest.password + "\n")
    p = str(port or w.server.imap_port)
    argv = [w.tools["imapsync"], "--host1", "127.0.0.1", "--port1", p, "--user1", s.user.name,
            "--passfile1", str(home / "pw1"), "--host2", "127.0.0.1", "--port2", p,
            "--user2", dest.name, "--passfile2", str(home / "pw2"), "--nossl1", "--nossl2",
            "--notls1", "--notls2", "--nolog", "--noreleasecheck", "--nofoldersizes",
            "--nofoldersizesatend", "--tmpdir", str(home)]
    first = w.measure(argv, cwd=home)
    again = w.again(argv, cwd=home)
    return checked(first, w.forget(dest, imap_count(w.server, dest)), s.count), again


def _archive_for(w: World, s: Seeded) -> Path:
    """The SQLite archive restore reads (one backup, made once per load)."""
    if s.load.name not in w.archives:
        archive = w.fresh_dir("archive-") / "a.sqlite"
        argv, env = w.mailmigrate("backup", w.imap_url(s.user), str(archive), "--password-env",
                                  "BENCH_PW", BENCH_PW=s.user.password)
        run = w.measure(argv, env)
        if not run.ok:
            raise SystemExit(f"could not make the archive for restore: {run.note}")
        w.archives[s.load.name] = archive
    return w.archives[s.load.name]


def mm_restore(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    dest = w.server.add_user()
    state = w.fresh_dir("mm-") / "state.db"
    argv, env = w.mailmigrate("restore", str(_archive_for(w, s)), w.imap_url(dest, port),
                              "--password-env", "BENCH_PW", "--state", str(state),
                              BENCH_PW=dest.password)
    first = w.measure(argv, env)
    again = w.again(argv, env)
    return checked(first, w.forget(dest, imap_count(w.server, dest)), s.count), again


def append_loop(w: World, s: Seeded, port: int | None) -> tuple[Run, Run | None]:
    dest = w.server.add_user()
    argv = [sys.executable, str(BENCH / "append_loop.py"), str(_archive_for(w, s)), "127.0.0.1",
            str(port or w.server.imap_port), dest.name]
    first = w.measure(argv, {**w.python_env, "APPEND_PW": dest.password})
    return checked(first, w.forget(dest, imap_count(w.server, dest)), s.count), None


# -- jobs -----------------------------------------------------------------------------------
@dataclass
class Job:
    name: str
    load: str
    ours: list[tuple[str, Tool]]  # the first one is the one the ratios use
    peers: list[tuple[str, Tool, str]]  # (name, tool, needed binary)
    link: bool = False


BACKUP_OURS = [("mailmigrate", mm_backup("sqlite")), ("mailmigrate tree", mm_backup("tree"))]
BACKUP_PEERS = [("dsync", dsync, "doveadm"), ("mbsync", mbsync, "mbsync")]
JOBS = [
    Job("backup-mixed", "mixed", BACKUP_OURS, BACKUP_PEERS),
    Job("backup-small", "small", BACKUP_OURS, BACKUP_PEERS),
    Job("drain", "drain", [("mailmigrate", mm_drain)], [("getmail6", getmail, "getmail")]),
    Job("copy", "transfer", [("mailmigrate", mm_copy())], [("imapsync", imapsync, "imapsync")]),
    Job("restore", "transfer", [("mailmigrate", mm_restore)], [("append-loop", append_loop, "")]),
    Job("link-backup", "transfer", [("mailmigrate x4", mm_backup("sqlite", 4)),
                                    ("mailmigrate x1", mm_backup("sqlite", 1))],
        [("mbsync", mbsync, "mbsync")], link=True),
    Job("link-copy", "transfer", [("mailmigrate x4", mm_copy(4))],
        [("imapsync", imapsync, "imapsync")], link=True),
]


def find_tools() -> dict[str, str]:
    found = {name: shutil.which(name) or "" for name in ("mbsync", "doveadm", "getmail")}
    found["imapsync"] = os.environ.get("IMAPSYNC") or shutil.which("imapsync") or ""
    return {k: v for k, v in found.items() if v}


def install() -> None:
    if os.geteuid() != 0:
        raise SystemExit("--install runs apt-get: run it as root (or install the packages yourself)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT, *IMAPSYNC_PERL],
                   check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@dataclass
class Outcome:
    job: str
    tool: str
    runs: list[Run]
    noops: list[Run]
    peer: bool = True

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def median(self) -> float | None:
        ok = self.ok_runs
        return statistics.median(r.wall for r in ok) if ok else None

    def rss_mb(self) -> float | None:
        ok = self.ok_runs
        return statistics.median(r.rss_kb for r in ok) / 1024 if ok else None

    def turns(self) -> int | None:
        ok = [r.turns for r in self.ok_runs if r.turns is not None]
        return int(statistics.median(ok)) if ok else None

    def noop(self) -> float | None:
        ok = [r for r in self.noops if r.ok]
        return statistics.median(r.wall for r in ok) if ok else None


def run_job(w: World, job: Job, repeat: int, scale: float) -> Iterator[Outcome]:
    seeded = w.load(job.load, scale)
    tools = [(name, tool) for name, tool in job.ours]
    for name, tool, binary in job.peers:
        if binary and binary not in w.tools:
            hint = ("see the top of bench/peers.py: imapsync is not in Debian"
                    if binary == "imapsync" else "install it (python bench/peers.py --install)")
            print(f"{job.name}: {name} skipped: {binary} not found; {hint}", file=sys.stderr)
            continue
        tools.append((name, tool))
    outcomes = {name: Outcome(job.name, name, [], [], peer=i >= len(job.ours))
                for i, (name, _) in enumerate(tools)}
    link = w.link = LinkProxy(w.server.imap_port) if job.link else None
    try:
        for r in range(repeat):
            for name, tool in tools:  # interleaved: A B A B, one fresh destination each
                first, again = tool(w, seeded, link.port if link else None)
                outcomes[name].runs.append(first)
                if again is not None:
                    outcomes[name].noops.append(again)
                state = "ok" if first.ok else f"FAILED ({first.note})"
                extra = f", {first.note}" if first.ok and first.note else ""
                turns = f", {first.turns} round trips" if first.turns is not None else ""
                print(f"{job.name} [{r + 1}/{repeat}] {name}: {first.wall:.2f} s, "
                      f"{first.rss_kb / 1024:.0f} MB{turns}{extra}"
                      + (f", no-op {again.wall:.2f} s" if again is not None else "")
                      + ("" if first.ok else f" {state}"), file=sys.stderr)
    finally:
        if link is not None:
            link.stop()
        w.link = None
    yield from outcomes.values()


# -- the report --------------------------------------------------------------------------------
def _fmt(x: float | None, unit: str = " s", digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}{unit}"


def report(outcomes: list[Outcome], repeat: int, scale: float, started: dict[str, str],
           ended: dict[str, str], w: World, installed: Installed, floor: float) -> str:
    lines = [f"Run of {started['date']}, `python bench/peers.py --repeat {repeat}"
             + (f" --scale {scale}" if scale != 1 else "") + "`; "
             f"medians of {repeat}, tools interleaved. Machine: {started['machine']}; "
             f"load average {started['load']} at the start, {ended['load']} at the end "
             "(shared with other work: compare the ratios, not the seconds). "
             f"mailmigrate ran {installed.how}; that interpreter starting and importing "
             f"typer and imapclient, nothing else, takes {floor:.3f} s (the no-op's floor).", ""]
    loads = sorted({o.job for o in outcomes})
    seeded = {j.name: w.loads[j.load] for j in JOBS if j.name in loads and j.load in w.loads}
    for name, s in sorted(seeded.items()):
        lines.append(f"- {name}: {s.count} messages, {s.total_bytes / 1e6:.0f} MB, "
                     f"{s.load.folders} folders" + (" behind the 30 ms / 5 MB/s link" if
                                                    name.startswith("link") else ""))
    lines += ["", "| job | tool | median | peak RSS | no-op | round trips | ratio | target |",
              "|---|---|---|---|---|---|---|---|"]
    by_job: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_job.setdefault(o.job, []).append(o)
    for job in JOBS:
        group = by_job.get(job.name)
        if not group:
            continue
        ours = group[0]
        for o in group:
            ratio = target = ""
            if o is not ours and ours.median() and o.median():
                ratio = f"{o.median() / ours.median():.2f}x"  # type: ignore[operator]
                ratio = ratio if o.peer else f"({ratio})"
                want = TARGETS.get((job.name, o.tool))
                if want is not None:
                    met = o.median() / ours.median() >= want  # type: ignore[operator]
                    target = f">= {want:g}x ({'met' if met else 'not met'})"
            notes = sorted({r.note for r in o.runs if r.note})
            failed = sum(1 for r in o.runs if not r.ok)
            tool = o.tool + (f" ({'; '.join(notes)})" if notes and not failed else "")
            if failed:
                tool += f" ({failed} of {len(o.runs)} runs failed: {notes[0][:80]})"
            turns = "" if o.turns() is None else str(o.turns())
            lines.append(f"| {job.name} | {tool} | {_fmt(o.median())} | {_fmt(o.rss_mb(), ' MB', 0)} | "
                         f"{_fmt(o.noop())} | {turns} | {ratio} | {target} |")
    lines += ["", "ratio: the row's median over the job's first row (mailmigrate); above 1, "
              "mailmigrate is faster. In parentheses: mailmigrate's own variants. Round trips: "
              "the times the client spoke again after the server (first run, behind the link)."]
    return "\n".join(lines) + "\n"


def machine_state() -> dict[str, str]:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cpus = os.cpu_count() or 0
    return {"date": dt.date.today().isoformat(), "load": load,
            "machine": f"{cpus} cores, {platform.python_implementation()} {platform.python_version()}"}


def merged(previous: str, text: str, ran: set[str]) -> str:
    """``text`` with the rows (and load lines) of the jobs it did not run taken from
    ``previous``, the block of an earlier run, so one job can be measured again."""
    def rows(block: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in block.splitlines():
            for job in JOBS:
                if line.startswith((f"| {job.name} |", f"- {job.name}:")):
                    out.setdefault(job.name, []).append(line)
        return out

    old_rows, new_rows = rows(previous), rows(text)
    kept = [j.name for j in JOBS if j.name not in ran and j.name in old_rows]
    if not kept:
        return text
    lines = text.splitlines()
    head = [x for x in lines if not any(x.startswith((f"| {j.name} |", f"- {j.name}:")) for j in JOBS)]
    loads = [x for j in JOBS for x in (new_rows if j.name in ran else old_rows).get(j.name, [])
             if x.startswith("- ")]
    table = [x for j in JOBS for x in (new_rows if j.name in ran else old_rows).get(j.name, [])
             if x.startswith("| ")]
    first = previous.strip().splitlines()[0].split(";")[0]
    head[0] += f" Rows of {', '.join(kept)} are from the run before: {first}"
    at_loads = head.index("") + 1
    out = head[:at_loads] + loads + head[at_loads:]
    at_table = out.index("|---|---|---|---|---|---|---|---|") + 1
    return "\n".join(out[:at_table] + table + out[at_table:]) + "\n"


def write_results(text: str, ran: set[str]) -> None:
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        text = merged(old[old.index(BEGIN) + len(BEGIN):old.index(END)], text, ran)
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## Against the peers (`python bench/peers.py`)\n" + block + "\n"
    RESULTS.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default=",".join(j.name for j in JOBS),
                        help="comma-separated: " + ", ".join(j.name for j in JOBS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--link-repeat", type=int, default=None,
                        help="repeats behind the slow link (default: --repeat)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each load (a trial run)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table, leave RESULTS.md (otherwise its block is rewritten; "
                        "rows of jobs not run this time are kept from the last run)")
    parser.add_argument("--install", action="store_true", help="apt-get the peers first (root)")
    opts = parser.parse_args()
    if opts.install:
        install()
    wanted = opts.jobs.split(",")
    unknown = [j for j in wanted if j not in {job.name for job in JOBS}]
    if unknown:
        raise SystemExit(f"unknown job {unknown[0]!r}; choose from {', '.join(j.name for j in JOBS)}")
    if not Path("/usr/bin/time").exists():
        raise SystemExit("GNU time is needed for peak RSS: apt-get install time "
                         "(or python bench/peers.py --install)")
    tools = find_tools()
    try:
        server = DovecotServer()
    except DovecotUnavailable as exc:
        raise SystemExit(f"bench/peers.py: {exc}") from None
    started = machine_state()
    work = Path(tempfile.mkdtemp(prefix="mmpeers"))
    work.chmod(0o755)
    env = python_env(work)
    installed = install_mailmigrate(work)
    floor = installed.floor(env)
    outcomes: list[Outcome] = []
    try:
        with server.start():
            w = World(server, work, tools, env, command=installed.command)
            for job in JOBS:
                if job.name in wanted:
                    repeat = opts.link_repeat if job.link and opts.link_repeat else opts.repeat
                    outcomes.extend(run_job(w, job, repeat, opts.scale))
            text = report(outcomes, opts.repeat, opts.scale, started, machine_state(), w,
                          installed, floor)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if not opts.no_write:
        write_results(text, set(wanted))
        print(f"written to {RESULTS.relative_to(ROOT)}", file=sys.stderr)


@dataclass
class Installed:
    """How mailmigrate runs in this benchmark: installed as a user installs it (pip into
    a virtual environment of the system's Python, the interpreter pipx uses), else from
    the source tree with this interpreter."""

    command: list[str]
    python: str
    how: str

    def floor(self, env: dict[str, str], runs: int = 7) -> float:
        """The no-op's floor: this interpreter starting and importing the CLI's two
        frameworks (typer, imapclient), median of ``runs``."""
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([self.python, "-c", "import typer, imapclient"], env=env, check=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def install_mailmigrate(work: Path) -> Installed:
    """``pip install`` of this tree into ``work/venv`` with /usr/bin/python3 (pipx's
    interpreter on Debian); the source tree on this interpreter when that cannot be done
    (no venv module, no package index), said in the report."""
    system = Path("/usr/bin/python3")
    venv = work / "venv"
    if system.exists():
        made = subprocess.run([str(system), "-m", "venv", str(venv)], capture_output=True)
        if made.returncode == 0:
            pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
                                 capture_output=True, text=True)
            if pip.returncode == 0:
                version = subprocess.run([str(venv / "bin" / "python"), "-c",
                                          "import platform; print(platform.python_version())"],
                                         capture_output=True, text=True).stdout.strip()
                return Installed([str(venv / "bin" / "mailmigrate")], str(venv / "bin" / "python"),
                                 f"installed with pip into a venv of /usr/bin/python3 {version}")
            print(f"pip install into a venv failed ({pip.stderr.strip()[-200:]}); running "
                  "from the source tree", file=sys.stderr)
    return Installed([sys.executable, "-m", "migrate"], sys.executable,
                     f"from the source tree on {sys.executable}")


def python_env(work: Path) -> dict[str, str]:
    """mailmigrate's environment, as installed: with its bytecode cached (pip compiles it;
    a PYTHONDONTWRITEBYTECODE=1 inherited here made every run compile every module, a
    third of a no-op run), in ``work`` rather than the source tree, compiled once now."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    subprocess.run([sys.executable, "-m", "migrate", "--help"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env


if __name__ == "__main__":
    main()
