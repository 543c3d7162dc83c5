"""`batch` on one machine: the local pool against two source and two destination hosts."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from cli_helpers import cli_env, run_cli
from fleet_seed import assert_exactly_once


def status(ledger) -> dict:
    done = run_cli("batch", "status", str(ledger), "--json")
    assert done.code == 0, done.err
    return done.json()


def caps_args(hosts, caps) -> list[str]:
    out = []
    for proxy, cap in zip(hosts.all(), caps, strict=True):
        out += ["--per-host", f"{proxy.key}={cap}"]
    return out


def test_local_pool_finishes_every_account_under_the_host_caps(dovecot, hosts, make_fleet, tmp_path):
    fleet = make_fleet(30)
    ledger = tmp_path / "batch.sqlite"
    init = run_cli("batch", "init", str(ledger), "--accounts", str(fleet.csv))
    assert init.code == 0, init.err
    before = run_cli("batch", "verify", str(ledger), "--workers", "4", "--quiet")
    assert before.code == 0, before.err
    rows = status(ledger)["accounts"]
    assert len(rows) == 30
    assert all(r["state"] == "verified" and r["verify"]["equal"] is False for r in rows)
    assert sum(r["verify"]["to_copy"]["messages"] for r in rows) == sum(p.messages for p in fleet.pairs)
    for p in hosts.all():
        p.peak_connections = 0
    caps = [2, 3, 2, 3]
    run = run_cli("batch", "run", str(ledger), "--workers", "8", *caps_args(hosts, caps), "--json")
    assert run.code == 0, run.err
    summary = run.json()
    assert summary["finished"] == 30 and summary["failed"] == []
    assert summary["messages"] == sum(p.messages for p in fleet.pairs)
    for proxy, cap in zip(hosts.all(), caps, strict=True):
        assert 1 <= proxy.peak_connections <= cap, (proxy.key, proxy.peak_connections, cap)
    after = run_cli("batch", "verify", str(ledger), "--workers", "4", "--quiet")
    assert after.code == 0, after.err
    rows = status(ledger)["accounts"]
    assert {r["state"] for r in rows} == {"synced"}
    assert all(r["verify"]["equal"] for r in rows), [r["account"] for r in rows
                                                     if not r["verify"]["equal"]]
    for pair in fleet.pairs:
        assert_exactly_once(dovecot, pair.source, pair.dest)


def test_kill9_of_the_dispatcher_then_rerun_is_exactly_once(dovecot, hosts, make_fleet, tmp_path):
    seed = int(os.environ.get("MM_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    fleet = make_fleet(8, per_folder=25, size=6000)
    ledger = tmp_path / "batch.sqlite"
    assert run_cli("batch", "init", str(ledger), "--accounts", str(fleet.csv)).code == 0
    argv = [sys.executable, "-m", "migrate", "batch", "run", str(ledger), "--workers", "4",
            "--chunk-size", "40KB", "--quiet"]
    kills = 0
    for _ in range(30):
        proc = subprocess.Popen(argv, env=cli_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 2.5))
        if proc.poll() is not None:
            assert proc.returncode == 0, f"seed {seed}: {proc.stderr.read().decode()}"
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # the chunks die with their dispatcher: no session is left open on any host
        for proxy in hosts.all():
            assert proxy.wait_closed(10), f"seed {seed}: {proxy.key} still has sessions"
        if kills >= 6:
            break
    assert kills >= 3, f"seed {seed}: only {kills} kills landed mid-batch"
    done = run_cli("batch", "run", str(ledger), "--json", "--quiet")
    assert done.code == 0, f"seed {seed}: {done.err}"
    rows = status(ledger)["accounts"]
    assert {r["state"] for r in rows} == {"synced"}, f"seed {seed}"
    for pair in fleet.pairs:
        assert_exactly_once(dovecot, pair.source, pair.dest)


def test_a_bad_password_fails_that_account_alone(dovecot, hosts, make_fleet, tmp_path):
    fleet = make_fleet(4)
    bad = fleet.pairs[1]
    (tmp_path / "secrets" / f"{bad.source.name}.pw").write_text("wrong-password\n")
    ledger = tmp_path / "batch.sqlite"
    assert run_cli("batch", "init", str(ledger), "--accounts", str(fleet.csv)).code == 0
    run = run_cli("batch", "run", str(ledger), "--attempts", "2", "--retry-delay", "0", "--quiet")
    assert run.code == 1
    assert f"failed: {bad.source.name}@" in run.err
    rows = {r["account"].split("@")[0]: r for r in status(ledger)["accounts"]}
    failed = rows[bad.source.name]
    assert failed["state"] == "failed" and failed["attempts"] == 2
    assert "authentication failed" in failed["last_error"].lower() or "login" in failed["last_error"].lower()
    assert "wrong-password" not in json.dumps(status(ledger))
    others = [p for p in fleet.pairs if p is not bad]
    assert all(rows[p.source.name]["state"] == "synced" for p in others)
    for pair in others:
        assert_exactly_once(dovecot, pair.source, pair.dest)
    table = run_cli("batch", "status", str(ledger), "--csv").out.splitlines()
    assert table[0].startswith("id,account,kind,state,pass,messages,bytes,errors,last_error")
    assert len(table) == 5 and sum(",failed," in ln for ln in table) == 1
    text = run_cli("batch", "status", str(ledger))
    line = next(ln for ln in text.out.splitlines() if bad.source.name in ln)
    assert "failed" in line and failed["last_error"][:30] in line
    # fixed, `batch retry` runs only that account
    (tmp_path / "secrets" / f"{bad.source.name}.pw").write_text(bad.source.password + "\n")
    again = run_cli("batch", "retry", str(ledger), "--json", "--quiet")
    assert again.code == 0, again.err
    assert again.json()["accounts"] == 1
    assert_exactly_once(dovecot, bad.source, bad.dest)
    # a second run is a delta pass that moves nothing; --final then marks every account done
    delta = run_cli("batch", "run", str(ledger), "--json", "--quiet")
    assert delta.code == 0 and delta.json()["messages"] == 0
    final = run_cli("batch", "run", str(ledger), "--final", "--json", "--quiet")
    assert final.code == 0, final.err
    rows = status(ledger)["accounts"]
    assert {r["state"] for r in rows} == {"done"} and {r["pass"] for r in rows} == {"final"}
    assert run_cli("batch", "run", str(ledger), "--json", "--quiet").json()["accounts"] == 0


def test_a_refused_message_is_counted_once(dovecot, tmp_path):
    """A restore chunk whose server refuses one message (an empty one, as Dovecot does)
    exits 1 with that message in its envelope's errors and in message_errors: the
    ledger counts it once, names it, and the account still finishes."""
    dest = dovecot.add_user()
    mbox = tmp_path / "mixed.mbox"
    mbox.write_bytes(b"From a@b Mon Jan  2 15:04:05 2006\nSubject: before\n\nok\n\n"
                     b"From a@b Mon Jan  2 15:04:06 2006\n\n"  # an empty message: refused
                     b"From a@b Mon Jan  2 15:04:07 2006\nSubject: after\n\nok too\n")
    secret = tmp_path / "dest.pw"
    secret.write_text(dest.password + "\n")
    secret.chmod(0o600)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("kind,source,dest,source_password,dest_password\n"
                        f"restore,{mbox},imap://{dest.name}@127.0.0.1:{dovecot.imap_port}?tls=none,,"
                        f"file:{secret}\n")
    ledger = tmp_path / "batch.sqlite"
    assert run_cli("batch", "init", str(ledger), "--accounts", str(accounts)).code == 0
    run = run_cli("batch", "run", str(ledger), "--json", "--quiet")
    assert run.code == 1, run.err
    summary = run.json()
    assert summary["messages"] == 2 and summary["finished"] == 1
    [row] = summary["with_errors"]
    assert row["errors"] == 1 and "mixed" in row["first"] and "rejected" in row["first"], row
    [account] = status(ledger)["accounts"]
    assert account["state"] == "synced" and account["errors"] == 1, account
