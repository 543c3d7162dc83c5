"""`schedule NAME --daily HH:MM`: systemd user units, a crontab line, --install."""

from __future__ import annotations

import configparser
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import imap_url, run_cli
from test_jobs import history, home, job_env, seed  # noqa: F401 (home is a fixture)


@pytest.fixture
def saved_job(dovecot, account, home, tmp_path):  # noqa: F811
    """A job a scheduler can run: its password in a file (an env variable would be
    missing under cron and systemd, and `schedule` refuses such a job)."""
    secret = home / "night.pw"
    secret.write_text(account.password + "\n")
    secret.chmod(0o600)
    result = run_cli("jobs", "add", "night", "--source", imap_url(dovecot, account),
                     "--dest", str(tmp_path / "a.sqlite"), "--password-file", str(secret),
                     env=job_env(home, account.password))
    assert result.code == 0, result.err
    return "night"


def units(text: str) -> dict[str, configparser.ConfigParser]:
    out = {}
    for block in text.split("# ~/.config/systemd/user/")[1:]:
        name, _, body = block.partition("\n")
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(body.split("\n# then:")[0])
        out[name] = parser
    return out


def test_systemd_units_printed(saved_job, home, account):  # noqa: F811
    result = run_cli("schedule", saved_job, "--daily", "02:30", env=job_env(home, account.password))
    assert result.code == 0, result.err
    parsed = units(result.out)
    assert set(parsed) == {"mailmigrate-night.service", "mailmigrate-night.timer"}
    timer = parsed["mailmigrate-night.timer"]
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = parsed["mailmigrate-night.service"]["Service"]
    assert service["Type"] == "oneshot"
    argv = shlex.split(service["ExecStart"])
    assert argv[:5] == [sys.executable, "-m", "migrate", "run", "night"]
    assert argv[5] == "--log-file" and argv[6].endswith("jobs/night/run.log")
    assert service["SuccessExitStatus"] == "6"
    assert f"\nEnvironment=MAILMIGRATE_CONFIG_DIR={home / 'config'}\n" in result.out
    assert "systemctl --user enable --now mailmigrate-night.timer" in result.out


@pytest.mark.parametrize(("value", "ok"), [("00:00", True), ("23:59", True), ("7:05", True),
                                           ("24:00", False), ("12:60", False), ("noon", False)])
def test_daily_validation(saved_job, home, value, ok):  # noqa: F811
    result = run_cli("schedule", saved_job, "--daily", value, "--cron", env=job_env(home))
    assert (result.code == 0) is ok, result.err
    if not ok:
        assert result.code == 2 and "HH:MM" in result.err


def test_cron_line_runs_the_job(saved_job, home, dovecot, account):  # noqa: F811
    """The printed crontab line, run by sh as cron would, runs the job."""
    env = job_env(home, account.password)
    result = run_cli("schedule", saved_job, "--daily", "7:05", "--cron", env=env)
    assert result.code == 0, result.err
    line = result.out.strip()
    fields = line.split(" ", 5)
    assert fields[:5] == ["5", "7", "*", "*", "*"]
    assert line.endswith("# mailmigrate job night")
    seed(dovecot, account, 3)
    command = fields[5]
    # as cron would: the line itself carries the MAILMIGRATE_* dirs
    bare = {k: v for k, v in env.items() if not k.startswith("MAILMIGRATE_")}
    done = subprocess.run(["sh", "-c", command], env=bare, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert history(home, "night")[0]["new_messages"] == 3
    assert (home / "state" / "jobs" / "night" / "run.log").exists()


def fake_tool(directory: Path, name: str, record: Path, stdin_copy: Path | None = None,
              listing: str = "") -> str:
    script = directory / name
    body = f'echo "$@" >> {shlex.quote(str(record))}\n'
    if stdin_copy is not None:
        body += (f'if [ "$1" = "-l" ]; then printf %s {shlex.quote(listing)}; exit 0; fi\n'
                 f'cat > {shlex.quote(str(stdin_copy))}\n')
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_install_systemd_writes_units_and_enables_the_timer(saved_job, home, tmp_path):  # noqa: F811
    calls = tmp_path / "calls"
    env = job_env(home, MAILMIGRATE_SYSTEMCTL=fake_tool(tmp_path, "systemctl", calls))
    result = run_cli("schedule", saved_job, "--daily", "03:15", "--install", env=env)
    assert result.code == 0, result.err
    unit_dir = home / ".config" / "systemd" / "user"
    assert (unit_dir / "mailmigrate-night.timer").read_text().count("OnCalendar=*-*-* 03:15:00") == 1
    assert (unit_dir / "mailmigrate-night.service").exists()
    assert calls.read_text().splitlines() == ["--user daemon-reload",
                                              "--user enable --now mailmigrate-night.timer"]


def test_install_cron_replaces_only_its_own_line(saved_job, home, tmp_path):  # noqa: F811
    calls, installed = tmp_path / "calls", tmp_path / "crontab.new"
    existing = "MAILTO=me\n0 1 * * * backup-other\n30 2 * * * old # mailmigrate job night\n"
    env = job_env(home, MAILMIGRATE_CRONTAB=fake_tool(tmp_path, "crontab", calls, installed, existing))
    result = run_cli("schedule", saved_job, "--daily", "04:00", "--cron", "--install", env=env)
    assert result.code == 0, result.err
    lines = installed.read_text().splitlines()
    assert lines[:2] == ["MAILTO=me", "0 1 * * * backup-other"]
    assert len(lines) == 3 and lines[2].startswith("0 4 * * * ")
    assert lines[2].endswith("# mailmigrate job night")


def test_schedule_unknown_job(home):  # noqa: F811
    result = run_cli("schedule", "nope", "--daily", "02:00", env=job_env(home))
    assert result.code == 2 and "no job named 'nope'" in result.err
    assert not (home / ".config" / "systemd").exists()
