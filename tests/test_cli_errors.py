"""Expected failures: one line naming the problem and the fix, a documented exit code."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from seeding import append, imap_login

from migrate.stores.lock import ArchiveLock


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wrong_password_exits_3(dovecot, account, tmp_path):
    result = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite"), password="wrong")
    assert_one_line_error(result, 3, "authentication failed", account.name)
    assert "wrong" not in result.err


def test_unreachable_server_exits_4(tmp_path):
    """The first connection is retried like any other, then the run gives up (exit 4)."""
    url = f"imap://someone@127.0.0.1:{closed_port()}?tls=none"
    result = run_cli("backup", url, str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV,
                     "--retries", "2", "--retry-delay", "0.01", "--quiet", password="x")
    assert_one_line_error(result, 4, "cannot connect", "127.0.0.1", "gave up after 2")


@pytest.mark.parametrize("url,needle", [
    ("imap://user:secret@127.0.0.1/", "passwords are not accepted in urls"),
    ("http://user@127.0.0.1/", "scheme"),
    ("imap://127.0.0.1/", "no user"),
    ("imap://user@/", "no host"),
    ("imap://user@127.0.0.1:notaport/", "bad url"),
    ("imap://user@mail.example.com/?tls=none", "--insecure"),
    ("imap://user@127.0.0.1/?tls=maybe", "tls must be"),
])
def test_bad_urls_exit_2(tmp_path, url, needle):
    result = run_cli("backup", url, str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV,
                     password="x")
    assert_one_line_error(result, 2, needle)
    assert "secret" not in result.err
    assert not (tmp_path / "a.sqlite").exists()


def test_unknown_option_exits_2(tmp_path):
    result = run_cli("backup", "imap://u@127.0.0.1", str(tmp_path / "a.sqlite"), "--frobnicate")
    assert result.code == 2 and "Traceback" not in result.err


def test_no_password_source_without_tty_exits_2(dovecot, account, tmp_path):
    result = run_cli("backup", imap_url(dovecot, account), str(tmp_path / "a.sqlite"),
                     env=cli_env())
    assert_one_line_error(result, 2, "--password-env")


def test_password_file_and_command(dovecot, account, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(account.password + "\n")
    by_file = run_cli("backup", imap_url(dovecot, account), str(tmp_path / "a.sqlite"),
                      "--password-file", str(secret), env=cli_env())
    assert by_file.code == 0, by_file.err
    by_cmd = run_cli("backup", imap_url(dovecot, account), str(tmp_path / "b.sqlite"),
                     "--password-command", f"cat {secret}", env=cli_env())
    assert by_cmd.code == 0, by_cmd.err
    both = run_cli("backup", imap_url(dovecot, account), str(tmp_path / "c.sqlite"),
                   "--password-file", str(secret), "--password-command", "true", env=cli_env())
    assert_one_line_error(both, 2, "only one")


def test_tls_is_verified(dovecot, account, tmp_path):
    imaps = f"imaps://{account.name}@localhost:{dovecot.imaps_port}"
    untrusted = run_cli("backup", imaps, str(tmp_path / "a.sqlite"), "--password-env",
                        PASSWORD_ENV, password=account.password)
    assert_one_line_error(untrusted, 4, "not trusted", "--cafile")
    trusted = run_cli("backup", imaps, str(tmp_path / "a.sqlite"), "--password-env",
                      PASSWORD_ENV, "--cafile", str(dovecot.ca_file), password=account.password)
    assert trusted.code == 0, trusted.err
    starttls = f"imap://{account.name}@localhost:{dovecot.imap_port}"
    upgraded = run_cli("backup", starttls, str(tmp_path / "b.sqlite"), "--password-env",
                       PASSWORD_ENV, "--cafile", str(dovecot.ca_file), password=account.password)
    assert upgraded.code == 0, upgraded.err


def test_corrupt_archive_exits_5_and_is_left_alone(dovecot, account, tmp_path):
    archive = tmp_path / "a.sqlite"
    archive.write_bytes(b"this is not a database" * 100)
    result = run_cli(*backup_args(dovecot, account, archive), password=account.password)
    assert_one_line_error(result, 5, str(archive))
    assert archive.read_bytes() == b"this is not a database" * 100


def test_archive_path_not_writable_exits_5(dovecot, account, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "a.sqlite", blocker / "tree"):
        result = run_cli(*backup_args(dovecot, account, target), password=account.password)
        assert_one_line_error(result, 5)


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_locked_archive_exits_5_then_works(dovecot, account, tmp_path, kind):
    archive = tmp_path / kind
    client = imap_login(dovecot, account)
    append(client, "INBOX", b"Subject: x\r\n\r\ny\r\n")
    client.logout()
    assert run_cli(*backup_args(dovecot, account, archive), password=account.password).code == 0
    lock_path = (archive.with_name(archive.name + ".lock") if kind.endswith(".sqlite")
                 else archive / ".mailmigrate" / "lock")
    with ArchiveLock(lock_path, wait_seconds=0):
        locked = run_cli(*backup_args(dovecot, account, archive, "--lock-wait", "0.3"),
                         password=account.password)
    assert_one_line_error(locked, 5, "locked by another")
    after = run_cli(*backup_args(dovecot, account, archive, "--json"), password=account.password)
    assert after.code == 0 and after.json()["new_messages"] == 0


def test_two_concurrent_runs_never_corrupt(dovecot, account, tmp_path):
    from seeding import bulk_append, seed_message

    client = imap_login(dovecot, account)
    bulk_append(client, "INBOX", [seed_message(i, 20_000) for i in range(300)])
    client.logout()
    archive = tmp_path / "a.sqlite"
    args = [sys.executable, "-m", "migrate", *backup_args(dovecot, account, archive, "--quiet",
                                                          "--lock-wait", "60")]
    procs = [subprocess.Popen(args, env=cli_env(account.password), stderr=subprocess.PIPE)
             for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs if p.stderr]
    conn = sqlite3.connect(archive)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM folder_messages").fetchone()[0] == 300


def test_password_never_in_output_or_archive(dovecot, tmp_path):
    user = dovecot.add_user(password="Sup3r-Secret-Pw")
    client = imap_login(dovecot, user)
    append(client, "INBOX", b"Subject: s\r\n\r\nhi\r\n")
    client.logout()
    for kind in ("a.sqlite", "tree"):
        archive = tmp_path / kind
        result = run_cli(*backup_args(dovecot, user, archive, "--json"), password=user.password)
        assert result.code == 0
        assert user.password not in result.out + result.err
        files = [archive] if archive.is_file() else [p for p in archive.rglob("*") if p.is_file()]
        for path in files + list(tmp_path.glob("*-wal")):
            assert user.password.encode() not in Path(path).read_bytes()
