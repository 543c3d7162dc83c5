"""Benchmark `mailmigrate batch run` (the local pool) against the same accounts copied one
after another, against a private Dovecot on loopback.

50 small accounts (3 folders, a few messages each) are copied twice, each time into
fresh destination accounts: once as 50 sequential `mailmigrate copy` runs (what a shell
loop over a CSV does), once as one `batch run --workers N`. Prints both wall times and
the speed-up (sequential / pool), in one run.

    python bench/bench_batch.py [--accounts 50] [--workers 8] [--per-folder 3]

Needs Dovecot installed (as for the tests); reuses tests/dovecot.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "fleet"))

from dovecot import DovecotServer  # noqa: E402
from fleet_seed import seed_account  # noqa: E402


def url(server: DovecotServer, user: str) -> str:
    return f"imap://{user}@{server.host}:{server.imap_port}?tls=none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--per-folder", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = DovecotServer("/").start()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="mmbatch"))
        secrets = tmp / "secrets"
        secrets.mkdir()
        sources = [server.add_user() for _ in range(args.accounts)]
        for user in sources:
            seed_account(server, user, per_folder=args.per_folder)
            (secrets / user.name).write_text(user.password)

        def fresh_dests() -> list:
            out = [server.add_user() for _ in sources]
            for user in out:
                (secrets / user.name).write_text(user.password)
            return out

        dests = fresh_dests()
        t0 = time.perf_counter()
        for src, dst in zip(sources, dests, strict=True):
            subprocess.run([sys.executable, "-m", "migrate", "copy", url(server, src.name),
                            url(server, dst.name), "--password-file", str(secrets / src.name),
                            "--dest-password-file", str(secrets / dst.name), "--quiet",
                            "--state", str(tmp / f"{dst.name}.state")],
                           check=True, env=env, stdin=subprocess.DEVNULL)
        sequential = time.perf_counter() - t0

        dests = fresh_dests()
        csv = tmp / "accounts.csv"
        csv.write_text("source,dest,source_password,dest_password\n" + "".join(
            f"{url(server, s.name)},{url(server, d.name)},file:{secrets / s.name},"
            f"file:{secrets / d.name}\n" for s, d in zip(sources, dests, strict=True)))
        ledger = tmp / "batch.sqlite"
        subprocess.run([sys.executable, "-m", "migrate", "batch", "init", str(ledger), "--accounts",
                        str(csv)], check=True, env=env, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "migrate", "batch", "run", str(ledger), "--workers",
                        str(args.workers), "--quiet"], check=True, env=env)
        pool = time.perf_counter() - t0
        messages = args.accounts * 3 * args.per_folder
        print(f"{args.accounts} accounts, {messages} messages, {os.cpu_count()} cores")
        print(f"sequential copy runs: {sequential:6.1f} s")
        print(f"batch run --workers {args.workers}: {pool:6.1f} s")
        print(f"speed-up (sequential / pool): {sequential / pool:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
