"""Scale-out: `batch run --broker` and three `mailmigrate worker`s over a private Redis.

A worker is killed with kill -9 in the middle of a chunk, Redis is restarted while the
batch runs; the batch still completes, each message is on its destination exactly once,
and the per-host session caps, counted at the proxies, held across all workers.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli_helpers import cli_env, run_cli
from fleet_seed import assert_exactly_once

HEARTBEAT = "3"


class Worker:
    """One `mailmigrate worker` process, in its own working directory, its log lines collected."""

    def __init__(self, url: str, home: Path) -> None:
        home.mkdir()
        self.home = home
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migrate", "worker", "--broker", url, "--threads", "2",
             "--workdir", str(home / "work"), "--heartbeat-timeout", HEARTBEAT,
             "--log-file", str(home / "worker.log")],
            cwd=home, env=cli_env(PYTHONPATH=os.environ.get("PYTHONPATH", "")),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def has_child(self) -> bool:
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                if (task / "children").read_text().strip():
                    return True
            except OSError:
                continue
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _started_tokens(worker: Worker) -> list[str]:
    return [ln.rsplit("(", 1)[1].rstrip(")") for ln in worker.lines if "chunk start" in ln]


def test_scale_out_survives_a_dead_worker_and_a_redis_restart(dovecot, hosts, make_fleet,
                                                              redis_server, tmp_path):
    seed = int(os.environ.get("MM_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    fleet = make_fleet(9, per_folder=20, size=5000)
    ledger = tmp_path / "batch.sqlite"
    assert run_cli("batch", "init", str(ledger), "--accounts", str(fleet.csv)).code == 0
    workers = [Worker(redis_server.url, tmp_path / f"worker{i}") for i in range(3)]
    caps: list[str] = []
    for proxy in hosts.all():
        caps += ["--per-host", f"{proxy.key}=2"]
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "migrate", "batch", "run", str(ledger), "--broker", redis_server.url,
         "--heartbeat-timeout", HEARTBEAT, "--chunk-size", "30KB", "--attempts", "5",
         "--retry-delay", "0.5", *caps, "--json"],
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        # kill -9 the first worker while its chunk's child process is running
        victim = workers[0]
        deadline = time.monotonic() + 120
        while not (_started_tokens(victim) and victim.has_child()):
            assert time.monotonic() < deadline, f"seed {seed}: worker 0 never started a chunk"
            assert dispatcher.poll() is None, dispatcher.communicate()
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        killed_token = _started_tokens(victim)[-1]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        # then restart Redis while the batch goes on
        time.sleep(rng.uniform(0.5, 2.0))
        redis_server.restart()
        try:
            out, err = dispatcher.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            dispatcher.kill()
            out, err = dispatcher.communicate()
            logs = "\n".join(f"--- worker {i}\n" + "\n".join(w.lines[-40:])
                             for i, w in enumerate(workers))
            raise AssertionError(f"seed {seed}: the batch did not finish\n{err[-3000:]}\n{logs}"
                                 ) from None
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
        for w in workers:
            w.stop()
    assert dispatcher.returncode == 0, f"seed {seed}: {err}"
    assert '"failed": []' in out
    # the killed chunk ran to its end on another worker
    finished_elsewhere = [ln for w in workers[1:] for ln in w.lines
                          if "chunk done" in ln and f"({killed_token})" in ln]
    assert finished_elsewhere, f"seed {seed}: chunk {killed_token} never finished elsewhere"
    for w in workers[1:]:  # --log-file has the lines stderr had
        logged = (w.home / "worker.log").read_text(encoding="utf-8")
        assert [ln for ln in w.lines if "chunk done" in ln], f"seed {seed}: a worker did nothing"
        assert all(ln.split(" ", 1)[1] in logged for ln in w.lines if "chunk done" in ln)
    for proxy in hosts.all():
        assert proxy.peak_connections <= 2, (proxy.key, proxy.peak_connections)
    rows = run_cli("batch", "status", str(ledger), "--json").json()["accounts"]
    assert {r["state"] for r in rows} == {"synced"}, f"seed {seed}"
    assert sum(r["chunks"] for r in rows) > len(rows)  # several chunks per account
    for pair in fleet.pairs:
        assert_exactly_once(dovecot, pair.source, pair.dest)
