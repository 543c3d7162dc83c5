"""Benchmark `mailmigrate backup` against a private Dovecot on loopback.

Mirrors the DESIGN.md reference load: by default 5,000 messages / ~358 MB in
15 folders (sizes drawn from a fixed long-tailed distribution), an empty
archive, then a no-op re-run. Reports msgs/s, MB/s, peak RSS (of the CLI
process alone, from wait4) and the no-op time, median of --repeat runs.

    python bench/bench_backup.py [--messages 5000] [--folders 15] [--repeat 3]
                                 [--connections 1,3]

Needs Dovecot installed (as for the tests); reuses tests/dovecot.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from dovecot import DovecotServer  # noqa: E402
from loads import sizes  # noqa: E402
from proxy import TcpProxy  # noqa: E402
from seeding import bulk_append, create_folder, imap_login, seed_message  # noqa: E402


def run(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and the CLI's own peak RSS (KiB, VmHWM via tests/rss_probe.py)."""
    rss_file = Path(tempfile.mkstemp(prefix="mmrss")[1])
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "rss_probe.py"), *args],
                          env={**env, "MM_RSS_FILE": str(rss_file)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode())
    peak = int(rss_file.read_text())
    rss_file.unlink()
    return took, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--folders", type=int, default=15)
    parser.add_argument("--megabytes", type=float, default=358)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", default="sqlite,tree")
    parser.add_argument("--connections", default="1",
                        help="comma-separated --max-connections values to compare")
    parser.add_argument("--per-connection-mbps", type=float, default=0,
                        help="cap each connection at this many MB/s through a loopback proxy "
                        "(emulates a provider's per-connection throughput limit)")
    opts = parser.parse_args()
    rng = random.Random(42)
    with DovecotServer() as server:
        user = server.add_user()
        client = imap_login(server, user)
        names = ["INBOX"] + [f"Folder{i:02d}" for i in range(1, opts.folders)]
        for name in names[1:]:
            create_folder(client, name)
        all_sizes = sizes(opts.messages, opts.megabytes, rng)
        t0 = time.perf_counter()
        for i, size in enumerate(all_sizes):
            bulk_append(client, names[i % len(names)], [seed_message(i, size)])
        total_bytes = sum(all_sizes)
        client.logout()
        print(f"seeded {opts.messages} messages, {total_bytes / 1e6:.0f} MB in "
              f"{len(names)} folders ({time.perf_counter() - t0:.1f}s)")
        env = dict(os.environ, BENCH_PW=user.password)
        port = server.imap_port
        proxy = None
        if opts.per_connection_mbps:
            proxy = TcpProxy("127.0.0.1", server.imap_port, record=False)
            proxy.connection_bandwidth = opts.per_connection_mbps * 1e6
            port = proxy.port
            print(f"each connection capped at {opts.per_connection_mbps:g} MB/s by a proxy")
        url = f"imap://{user.name}@127.0.0.1:{port}?tls=none"
        runs = [(k, int(c)) for k in opts.kinds.split(",") for c in opts.connections.split(",")]
        for kind, connections in runs:
            full, noop, rss = [], [], []
            for _ in range(opts.repeat):
                work = Path(tempfile.mkdtemp(prefix="mmbench"))
                archive = work / ("a.sqlite" if kind == "sqlite" else "tree")
                args = ["backup", url, str(archive), "--password-env", "BENCH_PW", "--quiet",
                        "--max-connections", str(connections)]
                took, peak = run(args, env)
                again, _ = run(args, env)
                full.append(took)
                noop.append(again)
                rss.append(peak)
                shutil.rmtree(work)
            t = statistics.median(full)
            print(f"{kind:7s} x{connections} {opts.messages / t:7.0f} msgs/s "
                  f"{total_bytes / 1e6 / t:6.1f} MB/s "
                  f"peak RSS {statistics.median(rss) / 1024:5.0f} MB  "
                  f"no-op {statistics.median(noop):.2f}s  (full run {t:.1f}s)")


if __name__ == "__main__":
    main()
