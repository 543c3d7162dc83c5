"""The kill -9 loop shared by the exactly-once tests of backup, restore and copy.

Start the real CLI, SIGKILL it at a random moment, repeat; between runs the
source grows so that kills keep landing mid-transfer rather than in no-op runs.
The seed is printed in every failure and can be replayed with MM_KILL_SEED.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from seeding import bulk_append, create_folder, seed_message

FOLDERS = ["INBOX", "Alpha", "Beta/Gamma"]


def kill_seed() -> tuple[int, random.Random]:
    seed = int(os.environ.get("MM_KILL_SEED", random.randrange(1 << 30)))
    return seed, random.Random(seed)


class GrowingMailbox:
    """An IMAP account whose FOLDERS get ``n`` more synthetic messages per call."""

    def __init__(self, client, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.count = 0
        for name in FOLDERS[1:]:
            create_folder(client, name, parents=True)

    def add(self, n: int) -> None:
        for name in FOLDERS:
            batch = [seed_message(self.count + i, self.rng.choice([600, 5_000, 40_000]),
                                  tag=name[:4]) for i in range(n)]
            self.count += n
            bulk_append(self.client, name, batch)


def kill_loop(cli_args: list[str], env: dict[str, str], rng: random.Random, seed: int,
              grow: Callable[[], None], pause: tuple[float, float] = (0.3, 1.5)) -> int:
    """Run ``mailmigrate CLI_ARGS`` until at least 10 SIGKILLs landed mid-run; returns kills."""
    kills = attempts = 0
    while kills < 12 and attempts < 80:
        attempts += 1
        if attempts > 1:
            grow()  # keep the transfer busy so kills land mid-batch
        proc = subprocess.Popen([sys.executable, "-m", "migrate", *cli_args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        time.sleep(rng.uniform(*pause))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}: {err}"
    assert kills >= 10, f"seed {seed}: only {kills} kills landed"
    return kills
