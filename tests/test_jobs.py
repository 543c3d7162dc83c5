"""Saved jobs against the real Dovecot: add (flags and the pty wizard), run twice,
history, lock, quiet under cron, log file, keyring through a file backend."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env, imap_url, run_cli
from seeding import bulk_append, imap_login, seed_messages

from migrate.errors import EXIT_JOB_RUNNING

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private home: config, state and keyring never touch the real ones."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def job_env(home: Path, password: str | None = None, **extra: str) -> dict[str, str]:
    env = cli_env(password,
                  HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                  XDG_STATE_HOME=str(home / ".local/state"), XDG_DATA_HOME=str(home / ".local/share"),
                  MAILMIGRATE_CONFIG_DIR=str(home / "config"), MAILMIGRATE_STATE_DIR=str(home / "state"),
                  PYTHON_KEYRING_BACKEND="keyring_file_backend.FileKeyring",
                  MM_TEST_KEYRING_FILE=str(home / "keyring.json"),
                  PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def seed(dovecot, account, n: int, tag: str = "job") -> None:
    client = imap_login(dovecot, account)
    try:
        bulk_append(client, "INBOX", list(seed_messages(n, tag=tag)))
    finally:
        client.logout()


def add_job(dovecot, account, home: Path, name: str, archive: Path, *extra: str,
            stdin: str | None = None):
    return run_cli("jobs", "add", name, "--source", imap_url(dovecot, account),
                   "--dest", str(archive), *extra, stdin=stdin,
                   env=job_env(home, account.password))


def history(home: Path, name: str, password: str | None = None) -> list[dict]:
    result = run_cli("jobs", "show", name, "--json", env=job_env(home, password))
    assert result.code == 0, result.err
    return result.json()["history"]


def test_job_added_with_flags_runs_twice_second_adds_nothing(dovecot, account, home, tmp_path):
    seed(dovecot, account, 12)
    archive = tmp_path / "a.sqlite"
    added = add_job(dovecot, account, home, "nightly", archive, "--password-env", PASSWORD_ENV,
                    "--folder", "INBOX")
    assert added.code == 0, added.err
    assert "Login OK" in added.out
    job_file = home / "config" / "jobs" / "nightly.toml"
    text = job_file.read_text()
    assert account.password not in text, "a job file never holds the password unless asked"
    data = tomllib.loads(text)
    assert data["credentials"] == {"method": "env", "value": PASSWORD_ENV}
    assert data["folders"] == ["INBOX"] and data["command"] == "backup"
    assert job_file.stat().st_mode & 0o077 == 0

    env = job_env(home, account.password)
    first = run_cli("run", "nightly", env=env)
    assert first.code == 0, first.err
    assert first.out == "" and first.err == "", "quiet when stdout is not a terminal"
    second = run_cli("run", "nightly", "--json", env=env)
    assert second.code == 0, second.err
    assert json.loads(second.out)["new_messages"] == 0

    runs = history(home, "nightly")
    assert [r["new_messages"] for r in runs] == [12, 0]
    assert runs[0]["new_bytes"] > 0 and runs[1]["new_bytes"] == 0
    assert all(r["exit_code"] == 0 and r["errors"] == [] and r["duration_s"] > 0 for r in runs)
    shown = run_cli("jobs", "show", "nightly", env=env)
    assert "12 messages" in shown.out and "0 messages" in shown.out, shown.out
    assert account.password not in shown.out
    listed = run_cli("jobs", "list", env=env)
    assert "nightly" in listed.out and "exit 0" in listed.out

    seed(dovecot, account, 3, tag="later")
    log = tmp_path / "logs" / "run.log"
    third = run_cli("run", "nightly", "--log-file", str(log), env=env)
    assert third.code == 0, third.err
    assert third.out == "" and third.err == ""
    log_text = log.read_text()
    assert "run nightly: backup" in log_text and "exit 0, 3 new messages" in log_text
    assert account.password not in log_text
    assert [r["new_messages"] for r in history(home, "nightly")] == [12, 0, 3]

    removed = run_cli("jobs", "remove", "nightly", env=env)
    assert removed.code == 0 and not job_file.exists()
    assert run_cli("run", "nightly", env=env).code == 2


def test_add_tests_the_login_and_saves_nothing_on_failure(dovecot, account, home, tmp_path):
    result = run_cli("jobs", "add", "bad", "--source", imap_url(dovecot, account),
                     "--dest", str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV,
                     env=job_env(home, "wrong-password"))
    assert result.code == 3, result.err
    assert "authentication failed" in result.err
    assert not (home / "config" / "jobs" / "bad.toml").exists()


def test_failed_run_is_in_history_with_its_error(dovecot, account, home, tmp_path):
    assert add_job(dovecot, account, home, "j", tmp_path / "a.sqlite",
                   "--password-env", PASSWORD_ENV).code == 0
    result = run_cli("run", "j", env=job_env(home, "changed-since"))
    assert result.code == 3
    assert "authentication failed" in result.err  # cron mails stderr
    (last,) = history(home, "j")
    assert last["exit_code"] == 3 and "authentication failed" in last["errors"][0]
    log = tmp_path / "j.log"
    log.write_text("mailmigrate: error: an old error from a run long ago\n")
    logged = run_cli("run", "j", "--log-file", str(log), env=job_env(home, "changed-since"))
    assert logged.code == 3 and logged.err == ""  # it went to the log file
    last = history(home, "j")[-1]
    assert len(last["errors"]) == 1 and "authentication failed" in last["errors"][0]
    assert "exit 3" in log.read_text()


def test_plaintext_password_only_with_the_explicit_flag(dovecot, account, home, tmp_path):
    result = add_job(dovecot, account, home, "plain", tmp_path / "a.sqlite",
                     "--store-plaintext-password", stdin=account.password + "\n")
    assert result.code == 0, result.err
    data = tomllib.loads((home / "config" / "jobs" / "plain.toml").read_text())
    assert data["credentials"] == {"method": "plaintext", "value": account.password}
    env = job_env(home)  # no password in the environment: the job file has it
    seed(dovecot, account, 2)
    assert run_cli("run", "plain", env=env).code == 0
    assert history(home, "plain")[0]["new_messages"] == 2
    shown = run_cli("jobs", "show", "plain", env=env)
    assert account.password not in shown.out


def test_keyring_through_a_file_backend(dovecot, account, home, tmp_path):
    seed(dovecot, account, 4)
    result = add_job(dovecot, account, home, "kr", tmp_path / "a.sqlite", "--keyring",
                     stdin=account.password + "\n")
    assert result.code == 0, result.err
    text = (home / "config" / "jobs" / "kr.toml").read_text()
    assert account.password not in text
    account_key = f"{account.name}@{dovecot.host}"
    stored = json.loads((home / "keyring.json").read_text())
    assert stored == {"mailmigrate": {account_key: account.password}}
    assert tomllib.loads(text)["credentials"] == {"method": "keyring", "value": account_key}
    run = run_cli("run", "kr", env=job_env(home))
    assert run.code == 0, run.err
    assert history(home, "kr")[0]["new_messages"] == 4
    assert run_cli("jobs", "remove", "kr", env=job_env(home)).code == 0
    assert json.loads((home / "keyring.json").read_text()) == {"mailmigrate": {}}


def test_job_lock_second_start_exits_6_and_kill_9_frees_it(dovecot, account, home, tmp_path):
    assert add_job(dovecot, account, home, "locked", tmp_path / "a.sqlite",
                   "--password-env", PASSWORD_ENV).code == 0
    lock = home / "state" / "jobs" / "locked" / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from migrate.stores.lock import ArchiveLock\n"
         f"ArchiveLock(Path({str(lock)!r}), 0).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        env = job_env(home, account.password)
        second = run_cli("run", "locked", env=env)
        assert second.code == EXIT_JOB_RUNNING == 6
        assert "already running" in second.err and f"pid {holder.pid}" in second.err
        assert history(home, "locked") == [], "a refused start leaves no history line"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    again = run_cli("run", "locked", env=env)
    assert again.code == 0, again.err


def test_concurrent_runs_one_wins(dovecot, account, home, tmp_path):
    """Two starts at once (a timer firing while a manual run goes): one runs, one exits 6."""
    seed(dovecot, account, 40)
    assert add_job(dovecot, account, home, "race", tmp_path / "a.sqlite",
                   "--password-env", PASSWORD_ENV).code == 0
    env = job_env(home, account.password)
    procs = [subprocess.Popen([sys.executable, "-m", "migrate", "run", "race"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    codes = sorted(p.wait(120) for p in procs)
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    # Either they overlapped (0 and 6) or the first finished before the second
    # started (0 and 0); never a failure, never two writers at once.
    assert codes in ([0, 6], [0, 0])
    assert sum(r["new_messages"] for r in history(home, "race")) == 40


def _expect(fd: int, screen: bytearray, text: bytes, timeout: float = 60) -> None:
    """Read the terminal until ``text`` shows; a wizard that asks something else
    fails the test (select, so that a question nobody answers cannot hang it)."""
    import select

    deadline = time.monotonic() + timeout
    while text not in screen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"waited for {text!r}; screen so far:\n{screen.decode(errors='replace')}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"EOF waiting for {text!r}:\n{screen.decode(errors='replace')}")
        screen += chunk


def _reap(pid: int) -> int:
    """The wizard's wait status; a wizard still waiting for an answer (the test failed
    at a question) is killed first, so the failure is reported instead of hanging."""
    import signal

    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    return status


def _drain(fd: int, screen: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        screen += chunk


def test_interactive_wizard_over_a_pty(dovecot, account, home, tmp_path):
    """`jobs add NAME` on a terminal asks like a setup wizard; the password goes to
    the keyring without echo; then the job runs twice, the second adding nothing."""
    seed(dovecot, account, 5)
    archive = tmp_path / "wizard.sqlite"
    env = job_env(home)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "migrate", "jobs", "add", "wiz"], env)
    screen = bytearray()
    try:
        _expect(fd, screen, b"backup (IMAP) or drain (POP3)")
        os.write(fd, b"bakup\n")  # a typo asks again
        _expect(fd, screen, b"try again")
        os.write(fd, b"\n")  # the default: backup
        _expect(fd, screen, b"e-mail address")
        os.write(fd, b"nobody\n")  # neither an address nor a URL: asked again
        _expect(fd, screen, b"neither an e-mail address")
        os.write(fd, imap_url(dovecot, account).encode() + b"\n")
        _expect(fd, screen, b"Archive")
        assert f"Server: {dovecot.host}:{dovecot.imap_port}".encode() in screen
        os.write(fd, str(archive).encode() + b"\n")
        _expect(fd, screen, b"Folders to back up")
        os.write(fd, b"INBOX, Work\n")
        _expect(fd, screen, b"password come from")
        assert b"[keyring]" in screen, "the keyring is the default where it exists"
        os.write(fd, b"\n")
        _expect(fd, screen, b"kept in the system keyring")
        os.write(fd, account.password.encode() + b"\n")
        _expect(fd, screen, b"Saved job 'wiz'")
        _drain(fd, screen)
    finally:
        status = _reap(pid)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, screen.decode(errors="replace")
    assert b"Login OK" in screen
    assert account.password.encode() not in screen, "the password is never echoed"
    saved = tomllib.loads((home / "config" / "jobs" / "wiz.toml").read_text())
    assert account.password not in (home / "config" / "jobs" / "wiz.toml").read_text()
    assert saved["folders"] == ["INBOX", "Work"] and saved["credentials"]["method"] == "keyring"
    for _ in range(2):
        result = run_cli("run", "wiz", env=env)
        assert result.code == 0, result.err
    assert [r["new_messages"] for r in history(home, "wiz")] == [5, 0]


def test_job_file_round_trip_and_validation(home, monkeypatch):
    from migrate.config.jobs import Credential, Job, load_job, save_job
    from migrate.errors import UsageError

    monkeypatch.setenv("MAILMIGRATE_CONFIG_DIR", str(home / "config"))
    job = Job("t-1", "copy", "imaps://a@x.example", "imaps://b@y.example",
              Credential("command", 'pass show "mail/a"'), Credential("env", "B_PW"),
              folders=["Work", "Ünïcode \"quoted\""], options={"since": "2024-01-01", "dry-run": True,
                                                              "map": ["Sent=Gesendet", "a\\b=c"]})
    save_job(job)
    assert load_job("t-1") == job
    assert job.argv()[:3] == ["copy", "imaps://a@x.example", "imaps://b@y.example"]
    assert job.argv()[-4:-2] == ["--password-command", 'pass show "mail/a"']
    assert job.argv()[-2:] == ["--dest-password-env", "B_PW"]
    with pytest.raises(UsageError, match="exists already"):
        save_job(job)
    with pytest.raises(UsageError, match="bad job name"):
        load_job("../etc/passwd")
    Job("x", "drain", "pop3s://a@b", "/tmp/a", Credential("oauth2", "tok")).validate()
    # OAuth2 on every side a job logs in to: restore's one server, both of a copy's.
    restore = Job("x", "restore", "/tmp/a.sqlite", "imaps://a@b", Credential("oauth2", "tok-cmd"))
    restore.validate()
    assert restore.argv()[-2:] == ["--oauth2-token-command", "tok-cmd"]
    both = Job("x", "copy", "imaps://a@x", "imaps://b@y", Credential("oauth2", "src-cmd"),
               Credential("oauth2", "dst-cmd"))
    both.validate()
    assert both.argv()[-4:] == ["--oauth2-token-command", "src-cmd",
                                "--dest-oauth2-token-command", "dst-cmd"]
    for key in ("oauth2-token-command", "dest-oauth2-token-command"):
        with pytest.raises(UsageError, match="managed by the job"):
            Job("x", "copy", "imaps://a@x", "imaps://b@y", Credential("env", "A"),
                Credential("env", "B"), options={key: "cmd"}).validate()
    with pytest.raises(UsageError, match="managed by the job"):
        Job("x", "backup", "imaps://a@b", "/tmp/a", Credential("env", "X"),
            options={"password-env": "Y"}).validate()


def test_wizard_turns_an_address_into_a_url() -> None:
    """What the wizard does with "me@gmx.de": the preset's domain, IMAP or POP3 by command."""
    from migrate.cli.wizard import address_url
    from migrate.config.endpoints import parse_endpoint
    from migrate.errors import UsageError

    url, provider = address_url(" me@gmx.de ", "backup")
    assert (url, provider) == ("imaps://me@gmx.de", None)
    assert parse_endpoint(url).host == "imap.gmx.net"
    url, _ = address_url("me@web.de", "drain")
    assert parse_endpoint(url, protocols=("pop3",)).host == "pop3.web.de"
    assert address_url("imap://u@127.0.0.1:143?tls=none", "backup") == (
        "imap://u@127.0.0.1:143?tls=none", None)
    with pytest.raises(UsageError, match="neither an e-mail address"):
        address_url("nobody", "backup")
