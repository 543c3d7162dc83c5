"""The `jobs add` wizard on a pseudo-terminal, and the checks that keep a saved job
runnable where it will run: a typo asks again, drain asks for retention, an
environment variable is warned about (and `schedule` refuses such a job), a password
file is offered and written 0600, the keyring without its extra is said, and an
existing name is refused before any question or login."""

from __future__ import annotations

import os
import pty
import sys
import tomllib

import pytest
from cli_helpers import run_cli
from test_jobs import _drain, _expect, home, job_env, seed  # noqa: F401 (home is a fixture)


def start_wizard(env: dict[str, str], name: str) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "migrate", "jobs", "add", name], env)
    return pid, fd


def converse(fd: int, screen: bytearray, turns: list[tuple[bytes, str]]) -> None:
    """Answer each question (the bytes it shows) with its answer, in order."""
    for question, answer in turns:
        _expect(fd, screen, question)
        os.write(fd, answer.encode() + b"\n")


def finish(pid: int, fd: int, screen: bytearray) -> int:
    _drain(fd, screen)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status)


def test_drain_wizard_asks_retention_and_warns_about_an_env_password(dovecot, account, home, tmp_path):  # noqa: F811
    env = job_env(home, account.password)
    pid, fd = start_wizard(env, "pop")
    screen = bytearray()
    url = f"pop3://{account.name}@{dovecot.host}:{dovecot.pop3_port}?tls=none"
    try:
        converse(fd, screen, [(b"backup (IMAP) or drain (POP3)", "drain"), (b"e-mail address", url),
                              (b"Archive", str(tmp_path / "pop.sqlite")),
                              (b"once it is archived", "sometimes"),  # not an answer: asked again
                              (b"try again", "14"), (b"password come from", "env"),
                              (b"Environment variable", "MM_TEST_PASSWORD")])
        _expect(fd, screen, b"Saved job 'pop'")
    finally:
        code = finish(pid, fd, screen)
    text = screen.decode(errors="replace")
    assert code == 0, text
    assert "will not be set when the job runs on a schedule" in text
    saved = tomllib.loads((home / "config" / "jobs" / "pop.toml").read_text())
    assert saved["command"] == "drain"
    assert saved["options"] == {"delete-older-than": "14"}
    assert saved["credentials"] == {"method": "env", "value": "MM_TEST_PASSWORD"}

    refused = run_cli("schedule", "pop", "--daily", "02:30", env=env)
    assert refused.code == 2 and "$MM_TEST_PASSWORD" in refused.err and "--password-file" in refused.err
    allowed = run_cli("schedule", "pop", "--daily", "02:30", "--env-is-set", env=env)
    assert allowed.code == 0 and "OnCalendar=*-*-* 02:30:00" in allowed.out

    again = start_wizard(env, "pop")  # an existing name: refused before the first question
    screen = bytearray()
    code = finish(*again, screen)
    assert code == 2 and b"exists already" in screen and b"What should it do" not in screen


def test_wizard_offers_a_password_file_and_writes_it_private(dovecot, account, home, tmp_path):  # noqa: F811
    seed(dovecot, account, 3)
    env = job_env(home)  # no password in the environment
    pwfile = home / "secret" / "box.pw"
    pid, fd = start_wizard(env, "box")
    screen = bytearray()
    url = f"imap://{account.name}@{dovecot.host}:{dovecot.imap_port}?tls=none"
    try:
        converse(fd, screen, [(b"backup (IMAP) or drain (POP3)", ""), (b"e-mail address", url),
                              (b"Archive", str(tmp_path / "box.sqlite")), (b"Folders to back up", ""),
                              (b"Folders to skip", ""), (b"password come from", "file"),
                              (b"File holding it", str(pwfile)), (b"written to", account.password)])
        _expect(fd, screen, b"Saved job 'box'")
    finally:
        code = finish(pid, fd, screen)
    assert code == 0, screen.decode(errors="replace")
    assert account.password.encode() not in screen, "never echoed"
    assert pwfile.read_text() == account.password + "\n"
    assert pwfile.stat().st_mode & 0o077 == 0
    saved = tomllib.loads((home / "config" / "jobs" / "box.toml").read_text())
    assert saved["credentials"] == {"method": "file", "value": str(pwfile)}
    assert "folders" not in saved or saved["folders"] == []
    ran = run_cli("run", "box", "--json", env=env)
    assert ran.code == 0, ran.err
    assert ran.json()["new_messages"] == 3
    assert run_cli("schedule", "box", "--every", "6", "--cron", env=env).out.startswith("0 */6 * * * ")


def test_a_wrong_password_writes_no_password_file(dovecot, account, home, tmp_path):  # noqa: F811
    pwfile = home / "wrong.pw"
    pid, fd = start_wizard(job_env(home), "w")
    screen = bytearray()
    url = f"imap://{account.name}@{dovecot.host}:{dovecot.imap_port}?tls=none"
    try:
        converse(fd, screen, [(b"backup (IMAP)", ""), (b"e-mail address", url),
                              (b"Archive", str(tmp_path / "w.sqlite")), (b"Folders to back up", ""),
                              (b"Folders to skip", ""), (b"password come from", "file"),
                              (b"File holding it", str(pwfile)), (b"written to", "not-the-password")])
    finally:
        code = finish(pid, fd, screen)
    assert code == 3, screen.decode(errors="replace")
    assert not pwfile.exists() and not (home / "config" / "jobs" / "w.toml").exists()


def test_the_keyring_without_its_extra_is_said_not_dropped(monkeypatch, capsys):
    import migrate.cli.jobs as jobs
    import migrate.cli.wizard as wizard
    from migrate.config.endpoints import parse_endpoint
    from migrate.errors import UsageError

    monkeypatch.setattr(wizard, "keyring_available", lambda: False)
    monkeypatch.setattr(jobs, "keyring_available", lambda: False)
    with pytest.raises(UsageError, match="optional keyring extra"):
        jobs.choose_credential(env=None, file=None, command=None, use_keyring=True, oauth2=None,
                               plaintext=False, account="a@b", label="password", secrets={})
    answers = iter(["keyring", "command", "pass show mail/me"])
    monkeypatch.setattr(wizard.typer, "prompt", lambda *a, **k: next(answers))
    cred = wizard._ask_credential("n", parse_endpoint("imaps://me@mail.example.org"), {})
    assert (cred.method, cred.value) == ("command", "pass show mail/me")
    assert "optional keyring extra" in capsys.readouterr().out


def test_schedule_weekly_every_and_relative_since():
    from migrate.cli.common import parse_since
    from migrate.clock import now
    from migrate.config import schedule as sched
    from migrate.errors import UsageError

    week = sched.parse_weekly("Sunday 03:15")
    assert (week.on_calendar(), week.cron_fields()) == ("Sun *-*-* 03:15:00", "15 3 * * 0")
    assert sched.parse_weekly("mon").cron_fields() == "30 2 * * 1"
    every = sched.choose(None, None, 4)
    assert (every.on_calendar(), every.cron_fields()) == ("*-*-* 00/4:00:00", "0 */4 * * *")
    for bad in ((None, None, None), ("02:30", None, 3), (None, "someday", None), (None, None, 0)):
        with pytest.raises(UsageError):
            sched.choose(*bad)
    today = now().astimezone().date()
    assert (today - parse_since("7d")).days == 7
    assert (today - parse_since("2w")).days == 14
    assert (today - parse_since("yesterday")).days == 1
    assert parse_since("today") == today and str(parse_since("2024-01-31")) == "2024-01-31"
    with pytest.raises(UsageError, match="7d"):
        parse_since("last tuesday")
