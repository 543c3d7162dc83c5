"""The kill -9 loop shared by the exactly-once tests of backup, restore and copy.

Start the real CLI, SIGKILL it mid-run, repeat; between runs the source grows, so
every run has mail to move. The instant of each kill is chosen, not raced: the
CLI talks to the server through a TcpProxy, which holds all traffic after a random
number of bytes below what the run must move (the mail added since the last run),
so the CLI is stopped mid-transfer, waiting for the server, while its other
threads go on storing and committing for a random pause; then SIGKILL. A kill
therefore always lands, on a loaded machine too, and lands at a different point of
the transfer each time. The seed is printed in every failure and can be replayed
with MM_KILL_SEED.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

from proxy import TcpProxy
from seeding import bulk_append, create_folder, seed_message

FOLDERS = ["INBOX", "Alpha", "Beta/Gamma"]


def kill_seed() -> tuple[int, random.Random]:
    seed = int(os.environ.get("MM_KILL_SEED", random.randrange(1 << 30)))
    return seed, random.Random(seed)


def via(proxy: TcpProxy, server) -> SimpleNamespace:
    """``server`` as the CLI sees it through ``proxy`` (what cli_helpers' URL builders take)."""
    return SimpleNamespace(host=proxy.host, imap_port=proxy.port, pop3_port=proxy.port,
                           real=server)


class GrowingMailbox:
    """An IMAP account whose FOLDERS get ``n`` more synthetic messages per call."""

    def __init__(self, client, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.count = 0
        for name in FOLDERS[1:]:
            create_folder(client, name, parents=True)

    def add(self, n: int) -> int:
        """Append n messages to each folder; returns the bytes added."""
        added = 0
        for name in FOLDERS:
            batch = [seed_message(self.count + i, self.rng.choice([600, 5_000, 40_000]),
                                  tag=name[:4]) for i in range(n)]
            self.count += n
            added += sum(len(raw) for raw in batch)
            bulk_append(self.client, name, batch)
        return added


def run_until_killed(argv: list[str], env: dict[str, str], proxy: TcpProxy, rng: random.Random,
                     arm: Callable[[], None], pause: tuple[float, float]) -> tuple[bool, str, int]:
    """Start the CLI with the proxy armed by ``arm``; once the hold begins, wait a random
    pause and SIGKILL it. Returns (killed, stderr, exit status)."""
    arm()
    proc = subprocess.Popen([sys.executable, "-m", "migrate", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    killed = False
    try:
        while proc.poll() is None:
            if proxy.wait_held(0.05):
                # the CLI waits for bytes that do not come: it cannot finish, its
                # writer thread may still be storing what it has (a random share of it;
                # `held` is set by now, so waiting on it would not pause at all)
                time.sleep(rng.uniform(*pause))
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        proc.wait()
    finally:
        proxy.release()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return killed, err, proc.returncode


def kill_loop(cli_args: list[str], env: dict[str, str], rng: random.Random, seed: int,
              grow: Callable[[], int], proxy: TcpProxy, first_bytes: int, *, to_server: bool = False,
              pause: tuple[float, float] = (0.0, 0.4), kills_wanted: int = 12) -> int:
    """Run ``mailmigrate CLI_ARGS`` (whose server is reached through ``proxy``) and kill it
    mid-transfer ``kills_wanted`` times; ``grow()`` adds mail and returns its bytes.
    ``to_server``: count the bytes the CLI sends (restore), not those it receives."""
    budget, kills = first_bytes, 0
    for attempt in range(kills_wanted):
        if attempt:
            budget = grow()  # what this run must move at least
        point = rng.randrange(0, max(budget, 1))
        killed, err, code = run_until_killed(
            cli_args, env, proxy, rng,
            lambda point=point: proxy.hold(after=point, direction="c2s" if to_server else "s2c",
                                           everything=True), pause)
        assert code in (0, -signal.SIGKILL), f"seed {seed}: {err}"
        assert killed, f"seed {seed}: run {attempt + 1} finished before byte {point} of {budget}"
        kills += 1
    return kills
