"""Soak test: many random fault trials against a private Dovecot, over the real TCP proxy.

Each trial picks a command (backup, drain, restore, copy) and a fault, runs the real
CLI through ``tests/proxy.py`` with that fault, then runs the same command again
(as a user would) until it exits 0, and checks the outcome:

* hang: a run that did not end within ``--run-timeout`` seconds;
* loss: a source message missing at the destination (or, for drain --delete,
  deleted from the server without being archived);
* duplicate: a message there more often than at the source;
* traceback: "Traceback" in any run's stderr.

Faults: ``cut`` (close after N bytes, either direction, FIN or RST), ``reset`` (RST
every connection once N bytes have passed), ``stall`` (nothing forwarded for longer
than --timeout), ``slow`` (a link at 150-600 KB/s, both ways, for the whole trial),
``kill`` (kill -9 at a counted byte, with what was sent still delivered), ``late``
(kill -9 with the rest held on the wire, let go at a random byte of the rerun or
after it), ``login`` (a cut in the greeting, LOGIN/USER/PASS or the first LIST).

    python bench/soak.py --trials 200 [--seed N] [--out bench/SOAK.md]

Needs Dovecot installed (as for the tests); reuses tests/dovecot.py and tests/proxy.py.
The short version runs in the test suite (tests/test_soak.py: a few trials, fixed seed).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, imap_url  # noqa: E402
from dovecot import DovecotServer  # noqa: E402
from proxy import TcpProxy  # noqa: E402
from seeding import (  # noqa: E402
    bulk_append,
    create_folder,
    folder_multiset,
    imap_login,
    seed_message,
)

COMMANDS = ("backup", "drain", "restore", "copy")
FAULTS = ("cut", "reset", "stall", "slow", "kill", "late", "login")
FOLDERS = ("INBOX", "Work")
SRC_PW = "MM_SOAK_SRC"
TIMEOUT = 2.0
FLAGS = ["--retries", "6", "--retry-delay", "0.05", "--timeout", str(TIMEOUT), "--json"]


@dataclass
class Outcome:
    trial: int
    command: str
    fault: str
    params: dict[str, Any]
    codes: list[int] = field(default_factory=list)
    hang: bool = False
    lost: int = 0
    duplicated: int = 0
    traceback: bool = False
    seconds: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return not (self.hang or self.lost or self.duplicated or self.traceback)


class Trial:
    def __init__(self, server: DovecotServer, work: Path, index: int, command: str,
                 fault: str, rng: random.Random, run_timeout: float) -> None:
        self.server, self.rng, self.run_timeout = server, rng, run_timeout
        self.work = work / f"t{index:04d}"
        self.work.mkdir(parents=True)
        self.out = Outcome(index, command, fault, {})
        self.src = server.add_user()
        self.want = self._seed()
        self.proxy = TcpProxy(server.host, server.pop3_port if command == "drain"
                              else server.imap_port, buffer_limit=16 << 20)
        self.faulted_side = "src" if command in ("backup", "drain") else \
            ("dst" if command == "restore" else rng.choice(("src", "dst")))
        self.out.params["side"] = self.faulted_side

    # -- set-up ------------------------------------------------------------------------
    def _seed(self) -> Counter[tuple[str, bytes]]:
        client = imap_login(self.server, self.src)
        want: Counter[tuple[str, bytes]] = Counter()
        try:
            folders = ("INBOX",) if self.out.command == "drain" else FOLDERS
            for folder in folders:
                if folder != "INBOX":
                    create_folder(client, folder)
                n = self.rng.randrange(10, 35)
                msgs = [seed_message(self.out.trial * 1000 + len(want) + i,
                                     self.rng.choice([600, 4_000, 30_000, 120_000, 700_000]),
                                     tag=f"soak{self.out.trial}") for i in range(n)]
                bulk_append(client, folder, msgs)
                want.update((folder, m) for m in msgs)
        finally:
            client.logout()
        return want

    def _url(self, user: Any, proxied: bool, scheme: str = "imap") -> str:
        port = self.proxy.port if proxied else (self.server.pop3_port if scheme == "pop3"
                                                else self.server.imap_port)
        return f"{scheme}://{user.name}@127.0.0.1:{port}?tls=none"

    def _args(self) -> tuple[list[str], dict[str, str]]:
        cmd, state = self.out.command, str(self.work / "state.sqlite")
        env = cli_env(self.src.password, **{SRC_PW: self.src.password})
        if cmd == "backup":
            self.archive = self.work / self.rng.choice(["a.sqlite", "tree"])
            return ["backup", self._url(self.src, True), str(self.archive), "--password-env",
                    PASSWORD_ENV, *FLAGS], env
        if cmd == "drain":
            self.archive = self.work / self.rng.choice(["a.sqlite", "tree"])
            self.delete = self.rng.random() < 0.5
            return ["drain", self._url(self.src, True, "pop3"), str(self.archive),
                    "--password-env", PASSWORD_ENV, *(["--delete"] if self.delete else []),
                    *FLAGS], env
        self.dst = self.server.add_user()
        env = cli_env(self.dst.password, **{SRC_PW: self.src.password})
        if cmd == "restore":
            archive = self.work / "src.sqlite"
            done = subprocess.run([sys.executable, "-m", "migrate", "backup",
                                   imap_url(self.server, self.src), str(archive),
                                   "--password-env", SRC_PW], env=env, capture_output=True)
            assert done.returncode == 0, done.stderr
            return ["restore", str(archive), self._url(self.dst, True), "--password-env",
                    PASSWORD_ENV, "--state", state, *FLAGS], env
        src_proxied, dst_proxied = self.faulted_side == "src", self.faulted_side == "dst"
        return ["copy", self._url(self.src, src_proxied), self._url(self.dst, dst_proxied),
                "--password-env", SRC_PW, "--dest-password-env", PASSWORD_ENV, "--state", state,
                *FLAGS], env

    # -- running -------------------------------------------------------------------------
    def _run(self, args: list[str], env: dict[str, str],
             arm: Any = None) -> tuple[int, str, str]:
        proc = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if arm is not None:
            arm(proc)
        try:
            out, err = proc.communicate(timeout=self.run_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.out.hang = True
            self.out.note += f" hang after {self.run_timeout:.0f} s;"
        self.out.codes.append(proc.returncode)
        if "Traceback" in err:
            self.out.traceback = True
            self.out.note += " " + err[err.index("Traceback"):][:300].replace("\n", " | ") + ";"
        return proc.returncode, out, err

    def _arm(self, proc: subprocess.Popen[str]) -> None:
        """Set this trial's fault on the proxy for the first run."""
        p, r, f = self.proxy, self.rng, self.out.fault
        total = sum(len(m) for _, m in self.want) + 6000
        n = r.randrange(100, total)
        # Most bytes flow to the server when it is the destination, from it otherwise.
        data = "c2s" if self.faulted_side == "dst" else "s2c"
        d = data if r.random() < 0.7 else ("s2c" if data == "c2s" else "c2s")
        self.out.params.update(at=n, direction=d)
        if f == "cut":
            rst = r.random() < 0.5
            self.out.params["rst"] = rst
            p.cut_after(n if d == data else n // 50, direction=d, rst=rst)
        elif f == "reset":
            threading.Thread(target=self._reset_after, args=(n,), daemon=True).start()
        elif f == "stall":
            p.stall(TIMEOUT * 1.5 + r.random() * 2, after=n if d == data else n // 50, direction=d)
        elif f in ("kill", "late"):
            p.keep_delivering = True
            if f == "late":
                p.hold(after=n, direction=data)
            p.when_bytes(n, lambda: proc.send_signal(signal.SIGKILL), direction=data)
        elif f == "login":
            pattern = r.choice([b"* OK", b" LOGIN ", b" LIST ", b"USER ", b"PASS ", b"+OK"])
            direction = "s2c" if pattern in (b"* OK", b"+OK") else "c2s"
            times = r.choice((1, 2))
            self.out.params.update(pattern=pattern.decode().strip(), times=times)
            p.cut_on(pattern, direction=direction, times=times, forward=r.random() < 0.5)

    def _reset_after(self, n: int) -> None:
        start = self.proxy.bytes_from_server + self.proxy.bytes_to_server
        end = time.monotonic() + self.run_timeout
        while self.proxy.bytes_from_server + self.proxy.bytes_to_server < start + n:
            if time.monotonic() > end:
                return
            time.sleep(0.002)
        self.proxy.reset()

    def run(self) -> Outcome:
        t0 = time.monotonic()
        try:
            args, env = self._args()
            if self.out.fault == "slow":
                rate = self.rng.randrange(150_000, 600_000)
                self.out.params["rate"] = rate
                self.proxy.drip(rate, "both")  # stays for every run of the trial
            code, _, _ = self._run(args, env, self._arm)
            if self.out.fault == "slow" and code != 0:
                self.out.note += f" the slow link needed more than one run (exit {code});"
            if self.out.fault == "late":
                # What the killed run had sent is still on the wire: it lands at a random
                # byte of the rerun (the rerun waits, on the wire, until it has), or after.
                land = self.rng.randrange(0, sum(len(m) for _, m in self.want) + 6000)
                self.out.params["land"] = land
                index = self.proxy.connections_accepted
                self.proxy.clear_faults(release=False)
                self.proxy.when_bytes(land, lambda: self._land(index), min_index=index)
                code, _, _ = self._run(args, env)
                self._land()
                code, _, _ = self._run(args, env)
            else:
                self.proxy.clear_faults()
            for _ in range(3):
                if code == 0 or self.out.hang:
                    break
                code, _, _ = self._run(args, env)
            self._check()
        except Exception as exc:  # a broken trial is reported, not hidden
            self.out.note += f" trial error: {type(exc).__name__}: {str(exc)[:200]};"
            self.out.lost = self.out.lost or -1
        finally:
            self.proxy.release()
            self.proxy.stop()
            self.out.seconds = time.monotonic() - t0
        return self.out

    def _land(self, upto: int | None = None) -> None:
        """Let every held connection go and wait until the server is done with those
        accepted before ``upto`` (all, by default)."""
        self.proxy.release()
        deadline = time.monotonic() + 60
        for index in range(self.proxy.connections_accepted if upto is None else upto):
            if not self.proxy.wait_connection_closed(index, max(0.0, deadline - time.monotonic())):
                break

    # -- checking ------------------------------------------------------------------------
    def _check(self) -> None:
        cmd = self.out.command
        if cmd in ("restore", "copy"):
            have = folder_multiset(self.server, self.dst, FOLDERS)
        elif cmd == "backup":
            have = Counter((f, raw) for f, box in archive_contents(self.archive).items()
                           for raw, _, _ in box.values())
        else:
            have = self._drained()
            if self.delete:
                left = folder_multiset(self.server, self.src, FOLDERS)
                gone = self.want - left  # deleted from the server ...
                unarchived = gone - have  # ... without being archived
                self.out.lost += sum(unarchived.values())
        want = self.want
        self.out.lost += sum((want - have).values())
        self.out.duplicated += sum((have - want).values())
        if self.out.lost or self.out.duplicated:
            self.out.note += f" codes {self.out.codes};"

    def _drained(self) -> Counter[tuple[str, bytes]]:
        if self.archive.suffix == ".sqlite":
            conn = sqlite3.connect(self.archive)
            try:
                return Counter(("INBOX", bytes(r)) for (r,) in conn.execute(
                    "SELECT m.raw FROM folder_messages fm JOIN messages m ON m.id = fm.message_id"))
            finally:
                conn.close()
        from migrate.stores.mbox_archive import MboxArchive

        store = MboxArchive(self.archive, readonly=True)
        try:
            return Counter((folder.name, msg.raw) for folder in store.list_folders()
                           for msg in store.iter_messages(folder))
        finally:
            store.close()


def soak(server: DovecotServer, trials: int, seed: int, work: Path, run_timeout: float = 180.0,
         cover: bool = False, log: Any = None) -> list[Outcome]:
    """Run ``trials`` trials; ``cover`` cycles through commands and faults instead of drawing."""
    rng = random.Random(seed)
    outcomes = []
    for i in range(trials):
        command = COMMANDS[i % len(COMMANDS)]
        fault = FAULTS[i % len(FAULTS)] if cover else rng.choice(FAULTS)
        trial = Trial(server, work, i, command, fault, random.Random(rng.randrange(1 << 30)),
                      run_timeout)
        out = trial.run()
        outcomes.append(out)
        if log is not None:
            log(f"{i:4d} {command:8s} {fault:6s} {'ok ' if out.ok else 'BAD'} codes={out.codes} "
                f"{out.seconds:5.1f}s {json.dumps(out.params)}{out.note}")
    return outcomes


def report(outcomes: list[Outcome], seed: int, seconds: float) -> str:
    by: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        by.setdefault((o.command, o.fault), []).append(o)
    lines = [f"## Soak run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(outcomes)} trials, "
             f"seed {seed}, {seconds / 60:.1f} min",
             "",
             f"hangs {sum(o.hang for o in outcomes)}, losses {sum(max(o.lost, 0) for o in outcomes)}, "
             f"duplicates {sum(o.duplicated for o in outcomes)}, tracebacks "
             f"{sum(o.traceback for o in outcomes)}, broken trials "
             f"{sum(o.lost < 0 for o in outcomes)}",
             "",
             "| command | " + " | ".join(FAULTS) + " |",
             "|---|" + "---|" * len(FAULTS)]
    for cmd in COMMANDS:
        cells = []
        for f in FAULTS:
            got = by.get((cmd, f), [])
            bad = sum(not o.ok for o in got)
            cells.append(f"{len(got)}" + (f" ({bad} bad)" if bad else ""))
        lines.append(f"| {cmd} | " + " | ".join(cells) + " |")
    bad = [o for o in outcomes if not o.ok]
    if bad:
        lines += ["", "Failed trials:"]
        lines += [f"- {o.trial} {o.command}/{o.fault} {json.dumps(o.params)}: lost {o.lost}, "
                  f"duplicated {o.duplicated}, hang {o.hang}, traceback {o.traceback};{o.note}"
                  for o in bad]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--run-timeout", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=None, help="append the report to this file")
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
    # kill/TERM: stop the private Dovecot and remove the work directory on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="mmsoak"))
    server = DovecotServer("/").start()
    t0 = time.monotonic()
    try:
        outcomes = soak(server, opts.trials, seed, work, opts.run_timeout,
                        log=lambda line: print(line, flush=True))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = report(outcomes, seed, time.monotonic() - t0)
    print(text)
    if opts.out:
        with open(opts.out, "a", encoding="utf-8") as fp:
            fp.write("\n" + text)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
