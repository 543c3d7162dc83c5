"""Progress goes to stderr: bars on a TTY, log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios

import pytest
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
    code, _, out, raw = run_on_a_terminal(backup_args(dovecot, account, tmp_path / "a.sqlite"),
                                          cli_env(account.password))
    assert code == 0
    drawn = raw.decode("utf-8", "replace")
    assert "folders" in drawn and "|" in drawn, drawn  # tqdm bars were drawn on the terminal
    assert out == "", "progress must not go to stdout"


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


# -- totals known up front, one STATUS per folder -------------------------------------------
def seed_folders(dovecot, account, counts: dict[str, int]) -> None:
    from seeding import bulk_append, create_folder, seed_message

    client = imap_login(dovecot, account)
    for name, n in counts.items():
        if name != "INBOX":
            create_folder(client, name)
        bulk_append(client, name, [seed_message(i, 3_000, tag=name) for i in range(n)])
    client.logout()


def test_the_total_is_known_before_the_first_message_moves(dovecot, account, tmp_path):
    """The engine's first pass (STATUS of every folder) tells the reporter the run's total
    before any message is fetched; an incremental run plans only what is new."""
    from migrate.config.endpoints import PasswordSource, parse_endpoint
    from migrate.stores.imap import ImapSource
    from migrate.stores.sqlite_archive import SqliteArchive

    seed_folders(dovecot, account, {"INBOX": 4, "Work": 7, "Lists": 2})
    endpoint = parse_endpoint(f"imap://{account.name}@127.0.0.1:{dovecot.imap_port}?tls=none")

    def run() -> RecordingReporter:
        source = ImapSource(endpoint, PasswordSource.literal(account.password))
        archive = SqliteArchive(tmp_path / "a.sqlite")
        reporter = RecordingReporter()
        try:
            transfer(source, archive, reporter=reporter)
        finally:
            source.close()
            archive.close()
        return reporter

    first = run()
    kinds = [kind for kind, _ in first.events]
    assert kinds.index("planned") < kinds.index("folder_start") < kinds.index("advance")
    planned = next(value for kind, value in first.events if kind == "planned")
    assert {k: n for k, n in planned.items() if n} == {"INBOX": 4, "Work": 7, "Lists": 2}
    assert {"INBOX", "Work", "Lists"} < set(planned)  # every folder, the empty ones with 0
    assert sum(n for kind, (n, _) in (e for e in first.events if e[0] == "advance")) == 13
    client = imap_login(dovecot, account)
    append(client, "Work", b"Subject: later\r\n\r\nnew\r\n")  # one new message, only here
    client.logout()
    again = run()
    replanned = next(v for k, v in again.events if k == "planned")
    assert {k: n for k, n in replanned.items() if n} == {"Work": 1}


@pytest.mark.parametrize("connections", [1, 3])
def test_a_noop_run_sends_one_status_per_folder(dovecot, account, tmp_path, connections):
    """The first pass's STATUS is reused by each folder's step: still one per folder."""
    from cli_helpers import PASSWORD_ENV
    from proxy import TcpProxy

    seed_folders(dovecot, account, {"INBOX": 3, "A": 2, "B": 2, "C": 1})
    archive = tmp_path / "a.sqlite"
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        args = ["backup", f"imap://{account.name}@127.0.0.1:{proxy.port}?tls=none", str(archive),
                "--password-env", PASSWORD_ENV, "--json", "--max-connections", str(connections)]
        assert run_cli(*args, password=account.password).code == 0
        proxy.reset_counters()
        again = run_cli(*args, password=account.password)
        sent = proxy.transcript_to_server
    assert again.code == 0 and again.json()["new_messages"] == 0
    assert sent.count(b" STATUS ") == again.json()["folders"] >= 4, sent
    assert b"FETCH" not in sent and b"SELECT" not in sent and b"EXAMINE" not in sent
    assert sent.count(b" LOGIN ") == 1, "a no-op run opens no extra connection"


# -- what the terminal shows -----------------------------------------------------------------
def run_on_a_terminal(argv: list[str], env: dict[str, str], act=None, columns: int = 100):
    """Run the CLI with stderr on a pseudo-terminal; returns (exit code, the screen as a
    terminal would show it at the end, stdout, the raw bytes the terminal got).
    ``act(proc)`` runs once the child is started."""
    import pyte

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "migrate", *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    if act is not None:
        act(proc)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=120)
    os.close(leader)
    screen = pyte.Screen(columns, 40)
    stream = pyte.ByteStream(screen)
    # a pty turns "\n" into "\r\n" (ONLCR); the raw bytes are fed as the terminal gets them
    stream.feed(b"".join(chunks))
    out = proc.stdout.read().decode() if proc.stdout else ""
    return code, [line.rstrip() for line in screen.display], out, b"".join(chunks)


def test_a_tty_run_ends_with_a_per_folder_table(dovecot, account, tmp_path):
    import re

    seed_folders(dovecot, account, {"INBOX": 3, "Work": 5, "Quiet": 0})
    code, lines, out, _ = run_on_a_terminal(backup_args(dovecot, account, tmp_path / "a.sqlite"),
                                            cli_env(account.password))
    assert code == 0, lines
    assert out == ""
    text = "\n".join(lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("folder"))
    rows = {line.split()[0]: line.split() for line in lines[header + 1:] if line}
    assert rows["INBOX"][1] == "3" and rows["Work"][1] == "5", text
    assert re.search(r"\(\d+ folders with nothing new\)", text), text  # Quiet, and the empty defaults
    assert rows["total"][1] == "8", text
    assert "msg/s" not in text and "|" not in text, "the bars made room for the table"


def test_ctrl_c_prints_its_line_below_the_bars(dovecot, account, tmp_path):
    """SIGINT mid-transfer (held there by the proxy): the bars are cleared first, so the
    message stands on a line of its own, and the exit code is 130."""
    import signal as signals

    from cli_helpers import PASSWORD_ENV
    from proxy import TcpProxy

    seed_folders(dovecot, account, {"INBOX": 60, "Work": 60})
    with TcpProxy(dovecot.host, dovecot.imap_port, record=False) as proxy:
        # mid-transfer: bars drawn, the client waits for more
        proxy.hold(after=120_000, direction="s2c", everything=True)

        def interrupt(proc) -> None:
            assert proxy.wait_held(60)
            proc.send_signal(signals.SIGINT)
            proxy.release()

        argv = ["backup", f"imap://{account.name}@127.0.0.1:{proxy.port}?tls=none",
                str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV]
        code, lines, _, _ = run_on_a_terminal(argv, cli_env(account.password), interrupt)
    assert code == 130, lines
    message = [line for line in lines if "interrupted" in line]
    assert message == ["mailmigrate: interrupted; run the same command again to resume"], lines
    assert not any("|" in line for line in lines), "no bar is left on the screen"


# -- log lines off a TTY, and --log-file ------------------------------------------------------
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} mailmigrate: "


def test_log_lines_off_a_tty_carry_timestamps(dovecot, account, tmp_path):
    import re

    seed(dovecot, account, 2)
    done = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite"), password=account.password)
    assert done.code == 0
    lines = done.err.splitlines()
    assert lines and all(re.match(STAMP, line) for line in lines), done.err
    assert any(re.match(STAMP + r"2 messages to transfer", line) for line in lines), done.err


def test_log_file_on_every_command(dovecot, account, tmp_path):
    import re

    seed(dovecot, account, 2)
    log = tmp_path / "logs" / "mm.log"
    quiet = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite", "--quiet", "--log-file",
                                 str(log)), password=account.password)
    assert quiet.code == 0 and quiet.err == ""
    text = log.read_text()
    assert re.search(STAMP + r"INBOX: 2 new", text) and "done: transferred 2 messages" in text
    failed = run_cli("ls", str(tmp_path / "missing.sqlite"), "--log-file", str(log))
    assert failed.code == 5 and failed.err.startswith("mailmigrate: error: ")
    assert re.search(STAMP + r"error: archive .*missing.sqlite does not exist", log.read_text())
    assert account.password not in log.read_text()


def test_human_bytes_uses_decimal_units_as_rate_does():
    from migrate.config.rates import parse_rate
    from migrate.engine.progress import human_bytes

    assert human_bytes(999) == "999 B"
    assert human_bytes(2_000_000) == "2.0 MB" and human_bytes(1_500) == "1.5 kB"
    assert parse_rate("2MB").bytes_per_second == 2_000_000  # the same MB
