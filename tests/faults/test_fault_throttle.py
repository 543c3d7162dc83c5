"""Throttling: the server's "slow down" hints ([THROTTLED], BYE [UNAVAILABLE] with a
reason) are honoured by backing off and retrying; --rate keeps us under a ceiling."""

from __future__ import annotations

import time

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, backup_args, cli_env, run_cli
from hostile_imap import HFolder, HMessage, HostileImap
from seeding import bulk_append, imap_login, seed_message

from migrate.engine.ratelimit import Pacer, Rate, parse_rate
from migrate.errors import UsageError
from migrate.model import Message


def test_throttled_and_bye_with_reason_back_off_and_finish(tmp_path):
    folders = [HFolder(b"INBOX", [HMessage(i + 1, seed_message(i, 3000, tag="t")) for i in range(10)],
                       throttle=2),
               HFolder(b"Work", [HMessage(i + 1, seed_message(i, 3000, tag="w")) for i in range(5)],
                       bye_once=True)]
    archive = tmp_path / "a.sqlite"
    with HostileImap(folders) as server:
        done = run_cli("backup", f"imap://u@127.0.0.1:{server.port}?tls=none", str(archive),
                       "--password-env", PASSWORD_ENV, "--json", "--retry-delay", "0.05",
                       env=cli_env("pw"))
    assert done.code == 0, done.err
    assert "Traceback" not in done.err
    assert "asked us to slow down" in done.err and "[THROTTLED] slow down please" in done.err
    assert "down for maintenance" in done.err  # the BYE's reason is shown
    assert done.err.count("reconnecting in") >= 3
    got = archive_contents(archive)
    assert len(got["INBOX"]) == 10 and len(got["Work"]) == 5


def test_throttling_that_never_ends_stops_with_exit_4(tmp_path):
    folders = [HFolder(b"INBOX", [HMessage(1, seed_message(1, 3000, tag="n"))], throttle=99)]
    with HostileImap(folders) as server:
        done = run_cli("backup", f"imap://u@127.0.0.1:{server.port}?tls=none",
                       str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV,
                       "--retries", "2", "--retry-delay", "0.01", env=cli_env("pw"))
    assert done.code == 4, done.err
    assert "Traceback" not in done.err and "slow down" in done.err and "gave up" in done.err


@pytest.mark.parametrize(("text", "rate"), [
    ("20", Rate(messages_per_second=20)), ("20msg/s", Rate(messages_per_second=20)),
    ("500KB", Rate(bytes_per_second=500_000)), ("2MB/s", Rate(bytes_per_second=2_000_000)),
    ("1MiB", Rate(bytes_per_second=1 << 20)),
    ("20KB after 700MB", Rate(bytes_per_second=20_000, free_bytes=700_000_000)),
    ("5/s after 100", Rate(messages_per_second=5, free_messages=100))])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "fast", "5 parsecs", "-3", "20KB after 10", "20 after 5MB",
                                  "20KB after"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(UsageError):
        parse_rate(text)


def test_an_allowance_is_unpaced_and_the_rest_is_paced():
    """'1KB after 10KB': the first 10 KB go at once, then one KB per second, counted
    over every connection that shares the pacer."""
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(parse_rate("1KB after 10KB"), clock=lambda: now[0], sleep=sleep)
    msg = Message(key="1", raw=b"x" * 2_000)
    for _ in range(5):  # 10 KB: inside the allowance
        pacer.pace([msg])
    assert slept == []
    pacer.pace([msg])  # 2 KB past it at 1 KB/s
    assert slept == [pytest.approx(2.0)]


def test_rate_paces_a_real_backup(dovecot, account, tmp_path):
    client = imap_login(dovecot, account)
    bulk_append(client, "INBOX", [seed_message(i, 10_000, tag="rate") for i in range(30)])
    client.logout()
    start = time.monotonic()
    by_count = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite", "--rate", "20"),
                       password=account.password)
    counted = time.monotonic() - start
    assert by_count.code == 0, by_count.err
    start = time.monotonic()
    by_bytes = run_cli(*backup_args(dovecot, account, tmp_path / "b.sqlite", "--rate", "100KB"),
                       password=account.password)
    sized = time.monotonic() - start
    assert by_bytes.code == 0, by_bytes.err
    assert counted >= 1.4, counted  # 30 messages at 20/s
    assert sized >= 2.8, sized  # 300 KB at 100 KB/s
    bad = run_cli(*backup_args(dovecot, account, tmp_path / "c.sqlite", "--rate", "fast"),
                  password=account.password)
    assert bad.code == 2 and "bad --rate" in bad.err


def test_overquota_on_append_stops_clearly_with_exit_1(tmp_path):
    """Retrying cannot make room: the run stops at the first refused batch, one line."""
    source = [HFolder(b"INBOX", [HMessage(i + 1, seed_message(i, 2000, tag="q")) for i in range(8)]),
              HFolder(b"Work", [HMessage(i + 1, seed_message(i, 2000, tag="qw")) for i in range(8)])]
    archive = tmp_path / "a.sqlite"
    with HostileImap(source) as server:
        made = run_cli("backup", f"imap://u@127.0.0.1:{server.port}?tls=none", str(archive),
                       "--password-env", PASSWORD_ENV, env=cli_env("pw"))
    assert made.code == 0, made.err
    env = cli_env("pw", XDG_STATE_HOME=str(tmp_path / "xdg"))
    with HostileImap([HFolder(b"INBOX")], overquota=True) as full:
        done = run_cli("restore", str(archive), f"imap://u@127.0.0.1:{full.port}?tls=none",
                       "--password-env", PASSWORD_ENV, "--retry-delay", "0.01", env=env)
        appends = full.appends
    assert done.code == 1, done.err
    assert "Traceback" not in done.err
    lines = [ln for ln in done.err.splitlines() if ln.startswith("mailmigrate: error:")]
    assert len(lines) == 1 and "over quota" in lines[0] and "free space" in lines[0], done.err
    assert appends <= 8, appends  # stopped in the first folder, not tried 16 times


def test_dovecot_overquota_stops_the_restore_and_the_next_run_finishes_exactly_once(
        dovecot, account, tmp_path):
    """Dovecot's own quota plugin: APPEND beyond the quota gets NO [OVERQUOTA]. The run
    stops with one line and exit 1, keeping what fitted; with room made, the next run
    appends only the rest."""
    client = imap_login(dovecot, account)
    sent = [seed_message(i, 30_000, tag="quota") for i in range(12)]
    bulk_append(client, "INBOX", sent)
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(dovecot, account, archive), password=account.password).code == 0
    small = dovecot.add_user(quota_bytes=150_000)  # room for 4 of the 12 messages
    env = cli_env(small.password, XDG_STATE_HOME=str(tmp_path / "xdg"))
    dest = f"imap://{small.name}@127.0.0.1:{dovecot.imap_port}?tls=none"
    args = ["restore", str(archive), dest, "--password-env", PASSWORD_ENV, "--folder", "INBOX",
            "--retry-delay", "0.01"]
    full = run_cli(*args, env=env)
    assert full.code == 1, full.err
    assert "Traceback" not in full.err
    errors = [ln for ln in full.err.splitlines() if ln.startswith("mailmigrate: error:")]
    assert len(errors) == 1 and "over quota" in errors[0], full.err
    kept = imap_login(dovecot, small)
    kept.select_folder("INBOX", readonly=True)
    fitted = len(kept.search(["ALL"]))
    kept.logout()
    assert 1 <= fitted < 12, fitted
    dovecot.set_quota(small, 10_000_000)
    again = run_cli(*args, env=env)
    assert again.code == 0, again.err
    done = imap_login(dovecot, small)
    done.select_folder("INBOX", readonly=True)
    bodies = [d[b"BODY[]"] for d in done.fetch(done.search(["ALL"]), ["BODY.PEEK[]"]).values()]
    done.logout()
    assert sorted(bodies) == sorted(m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in sent)
