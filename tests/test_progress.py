"""Progress goes to stderr: bars on a TTY, log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios

from cli_helpers import backup_args, cli_env, run_cli
from seeding import append, imap_login

from migrate.engine.transfer import transfer
from migrate.reporting import RecordingReporter


def seed(dovecot, account, n: int = 5) -> None:
    client = imap_login(dovecot, account)
    for i in range(n):
        append(client, "INBOX", f"Subject: p{i}\r\n\r\nbody {i}\r\n".encode())
    client.logout()


def test_tty_gets_progress_bars(dovecot, account, tmp_path):
    seed(dovecot, account)
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate", *backup_args(dovecot, account, tmp_path / "a.sqlite")],
        env=cli_env(account.password), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "folders" in screen and "|" in screen, screen  # tqdm bar drawn on the terminal
    assert proc.stdout is not None and proc.stdout.read() == b"", "progress must not go to stdout"


def test_log_lines_when_not_a_tty_and_silence_with_quiet(dovecot, account, tmp_path):
    seed(dovecot, account)
    logged = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite"),
                     password=account.password)
    assert logged.code == 0 and logged.out == ""
    assert "INBOX: 5 new" in logged.err and "done: transferred 5 messages" in logged.err
    quiet = run_cli(*backup_args(dovecot, account, tmp_path / "b.sqlite", "--quiet", "--json"),
                    password=account.password)
    assert quiet.code == 0 and quiet.err == ""
    assert json.loads(quiet.out)["new_messages"] == 5  # exactly one JSON object on stdout


def test_engine_reports_through_the_reporter_protocol(dovecot, account, tmp_path):
    from migrate.config.endpoints import PasswordSource, parse_endpoint  # the library, no CLI
    from migrate.stores.imap import ImapSource
    from migrate.stores.sqlite_archive import SqliteArchive

    seed(dovecot, account, 3)
    endpoint = parse_endpoint(f"imap://{account.name}@127.0.0.1:{dovecot.imap_port}?tls=none")
    source = ImapSource(endpoint, PasswordSource.literal(account.password))
    archive = SqliteArchive(tmp_path / "lib.sqlite")
    reporter = RecordingReporter()
    result = transfer(source, archive, reporter=reporter)
    source.close()
    archive.close()
    assert result.new_messages == 3
    advanced = sum(n for kind, value in reporter.events if kind == "advance" for n in [value[0]])
    assert advanced == 3
    assert ("folder_start", "INBOX") in reporter.events


def test_password_prompt_on_a_tty(dovecot, account, tmp_path):
    """No --password-* option on a terminal: ask, without echo, and never print it."""
    import pty

    from cli_helpers import imap_url

    seed(dovecot, account, 1)
    archive = tmp_path / "a.sqlite"
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on the terminal, as a user would start it
        os.execvpe(sys.executable, [sys.executable, "-m", "migrate", "backup",
                                    imap_url(dovecot, account), str(archive), "--quiet"],
                   cli_env())
    screen = b""
    while b"password for" not in screen:
        screen += os.read(fd, 1024)
    os.write(fd, account.password.encode() + b"\n")
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        screen += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert account.password.encode() not in screen, "the password must not be echoed"
    assert archive.exists()
