"""OAuth2 where we write: restore to, copy from and to, verify and saved jobs, against
the real Dovecot whose oauth2 passdb asks tests/oauth_server.py about each token.

The destination accounts are OAuth2-only from our side (their passwords are never
handed to the CLI, and Dovecot's log shows only XOAUTH2/OAUTHBEARER logins for
them). A token revoked mid-run, with the connection cut, must be replaced by
running the token command again, and the run must still end exactly once. No
token may show up in argv, stdout/stderr, --json, state files, job files or the
job history.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, CliResult, backup_args, cli_env, run_cli
from dovecot import DovecotServer, User
from oauth_server import IntrospectionServer
from proxy import TcpProxy
from seeding import bulk_append, create_folder, imap_login, seed_message
from test_backup import server_state
from test_jobs import history, job_env
from test_oauth2 import logins, runs, token_command, url
from test_restore import placed

OAUTH_MECHS = {"XOAUTH2", "OAUTHBEARER"}


def fresh_tokens(introspection: IntrospectionServer, user: User, label: str) -> tuple[str, str]:
    """Two granted tokens for ``user``, unlikely to occur anywhere by chance."""
    first, second = (f"{label}{n}-{secrets.token_hex(8)}" for n in (1, 2))
    introspection.grant(first, user.name)
    introspection.grant(second, user.name)
    return first, second


def tokens_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def seed_two_folders(server: DovecotServer, user: User, n: int, size: int, tag: str) -> int:
    """n messages of ``size`` bytes in INBOX and in Alpha: enough bytes that a cut
    at a third of them lands mid-transfer."""
    client = imap_login(server, user)
    try:
        create_folder(client, "Alpha")
        for folder in ("INBOX", "Alpha"):
            bulk_append(client, folder, [seed_message(i, size, tag=f"{tag}{folder[:2]}")
                                         for i in range(n)])
    finally:
        client.logout()
    return 2 * n


def logins_through(proxy: TcpProxy) -> set[str]:
    """How the CLI logged in (LOGIN, or the SASL mechanism), from what it sent through
    ``proxy``; the tests' own password logins for inspection do not pass there."""
    found = re.findall(rb"^[A-Za-z0-9.]+ (LOGIN|AUTHENTICATE [A-Z0-9-]+)", proxy.transcript_to_server,
                       re.MULTILINE)
    return {m.decode().removeprefix("AUTHENTICATE ") for m in found}


def count(state: dict) -> int:
    return sum(len(box) for box in state.values())


def proxied(server: DovecotServer, proxy: TcpProxy, user: User, auth: str | None = None) -> str:
    query = "?tls=none" + (f"&auth={auth}" if auth else "")
    return f"imap://{user.name}@127.0.0.1:{proxy.port}{query}"


def run_watched(args: list[str], env: dict[str, str],
                when: Callable[[], bool] | None = None, then: Callable[[], None] | None = None,
                ) -> tuple[CliResult, list[bytes]]:
    """Run the CLI, sampling its /proc/<pid>/cmdline; call ``then`` once ``when`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cmdlines: list[bytes] = []
    fired: list[bool] = []

    def watch() -> None:
        while proc.poll() is None:
            try:
                cmdlines.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
            except OSError:
                break
            if then is not None and not fired and when is not None and when():
                then()
                fired.append(True)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=240)
    watcher.join(timeout=5)
    assert then is None or fired, "the mid-run fault never fired: the run ended first"
    return CliResult(proc.returncode, out, err), cmdlines


def assert_nowhere(tokens: list[str], texts: list[str], cmdlines: list[bytes],
                   roots: list[Path]) -> None:
    """No token in any output, any sampled argv, or any file under ``roots``."""
    assert cmdlines, "the process was never observed"
    files = [p for root in roots if root.exists() for p in
             ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    assert files, "nothing written to look into"
    for token in tokens:
        for text in texts:
            assert token not in text
        for cmdline in cmdlines:
            assert token.encode() not in cmdline
        for path in files:
            assert token.encode() not in path.read_bytes(), path


# -- restore --------------------------------------------------------------------------------
def test_restore_to_oauth2_destination_refreshes_a_token_revoked_mid_run(
        dovecot_oauth, introspection, tmp_path):
    a, b = dovecot_oauth.add_user(), dovecot_oauth.add_user()
    total = seed_two_folders(dovecot_oauth, a, 50, 20_000, "rst")
    archive = tmp_path / "a.sqlite"
    done = run_cli(*backup_args(dovecot_oauth, a, archive), password=a.password)
    assert done.code == 0, done.err
    first, second = fresh_tokens(introspection, b, "rst")
    tdir = tokens_dir(tmp_path, "tok")
    cmd = token_command(tdir, [first] + [second] * 5)
    state_home = tmp_path / "xdg"
    env = cli_env(None, XDG_STATE_HOME=str(state_home))

    def revoke_and_cut() -> None:
        introspection.expire(first)
        proxy.reset()

    with TcpProxy(dovecot_oauth.host, dovecot_oauth.imap_port) as proxy:
        dest = proxied(dovecot_oauth, proxy, b, auth="xoauth2")
        args = ["restore", str(archive), dest, "--oauth2-token-command", cmd, "--json",
                "--retry-delay", "0.05"]
        result, cmdlines = run_watched(args, env, lambda: proxy.bytes_to_server > 300_000,
                                       revoke_and_cut)
        assert result.code == 0, result.err
        assert "reconnecting" in result.err  # the run went on after the cut
        assert runs(tdir) == 2, "the refused token was replaced by a second run of the command"
        assert count(server_state(dovecot_oauth, b)) == total
        assert placed(server_state(dovecot_oauth, b)) == placed(server_state(dovecot_oauth, a))
        again, more = run_watched(args, env)
        assert logins_through(proxy) == {"XOAUTH2"}  # never a password login
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0
    assert placed(server_state(dovecot_oauth, b)) == placed(server_state(dovecot_oauth, a))
    assert_nowhere([first, second], [result.out, result.err, again.out, again.err],
                   cmdlines + more, [state_home])


# -- copy -----------------------------------------------------------------------------------
def test_copy_with_oauth2_on_both_sides_survives_revocation_mid_run(
        dovecot_oauth, introspection, tmp_path):
    """Source and destination each get their own token command; both tokens are
    revoked at once with every connection cut, and both sides refresh."""
    a, c = dovecot_oauth.add_user(), dovecot_oauth.add_user()
    total = seed_two_folders(dovecot_oauth, a, 50, 20_000, "cpy")
    src_first, src_second = fresh_tokens(introspection, a, "src")
    dst_first, dst_second = fresh_tokens(introspection, c, "dst")
    src_dir, dst_dir = tokens_dir(tmp_path, "src"), tokens_dir(tmp_path, "dst")
    src_cmd = token_command(src_dir, [src_first] + [src_second] * 5)
    dst_cmd = token_command(dst_dir, [dst_first] + [dst_second] * 5)
    state_home = tmp_path / "xdg"
    env = cli_env(None, XDG_STATE_HOME=str(state_home))

    def revoke_and_cut() -> None:
        introspection.expire(src_first)
        introspection.expire(dst_first)
        proxy.reset()

    with TcpProxy(dovecot_oauth.host, dovecot_oauth.imap_port) as proxy:
        args = ["copy", proxied(dovecot_oauth, proxy, a), proxied(dovecot_oauth, proxy, c),
                "--oauth2-token-command", src_cmd, "--dest-oauth2-token-command", dst_cmd,
                "--json", "--retry-delay", "0.05"]
        result, cmdlines = run_watched(args, env, lambda: proxy.bytes_to_server > 300_000,
                                       revoke_and_cut)
        assert result.code == 0, result.err
        assert "reconnecting" in result.err
        assert (runs(src_dir), runs(dst_dir)) == (2, 2)
        assert count(server_state(dovecot_oauth, c)) == total
        assert placed(server_state(dovecot_oauth, c)) == placed(server_state(dovecot_oauth, a))
        again, more = run_watched(args, env)
        # Without ?auth= the standard OAUTHBEARER is picked where offered.
        assert logins_through(proxy) == {"OAUTHBEARER"}
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 0
    assert placed(server_state(dovecot_oauth, c)) == placed(server_state(dovecot_oauth, a))
    assert_nowhere([src_first, src_second, dst_first, dst_second],
                   [result.out, result.err, again.out, again.err], cmdlines + more, [state_home])
    # verify logs in the same way, each side with its own command.
    same = run_cli("verify", url(dovecot_oauth, a), url(dovecot_oauth, c), "--oauth2-token-command",
                   src_cmd, "--dest-oauth2-token-command", dst_cmd, env=env)
    assert same.code == 0, same.out + same.err


def test_copy_password_source_to_oauth2_destination(dovecot_oauth, introspection, tmp_path):
    """The usual migration: a password at the old provider, OAuth2 at the new one."""
    a, c = dovecot_oauth.add_user(), dovecot_oauth.add_user()
    client = imap_login(dovecot_oauth, a)
    bulk_append(client, "INBOX", [seed_message(i, tag="mix") for i in range(7)])
    client.logout()
    token, _ = fresh_tokens(introspection, c, "mix")
    cmd = token_command(tmp_path, [token] * 4)
    env = cli_env(a.password, XDG_STATE_HOME=str(tmp_path / "xdg"))
    result = run_cli("copy", url(dovecot_oauth, a), url(dovecot_oauth, c, auth="oauthbearer"),
                     "--password-env", PASSWORD_ENV, "--dest-oauth2-token-command", cmd, "--json",
                     env=env)
    assert result.code == 0, result.err
    assert result.json()["new_messages"] == 7
    assert logins(dovecot_oauth, a)[-1] == "PLAIN" and logins(dovecot_oauth, c) == ["OAUTHBEARER"]
    # verify ARCHIVE-less, server against server: the same options mean the same sides.
    same = run_cli("verify", url(dovecot_oauth, a), url(dovecot_oauth, c), "--password-env",
                   PASSWORD_ENV, "--dest-oauth2-token-command", cmd, env=env)
    assert same.code == 0, same.out + same.err
    assert token not in result.out + result.err + same.out + same.err


# -- saved jobs -----------------------------------------------------------------------------
def test_copy_job_with_oauth2_on_both_sides_runs_twice(dovecot_oauth, introspection, tmp_path):
    a, c = dovecot_oauth.add_user(), dovecot_oauth.add_user()
    client = imap_login(dovecot_oauth, a)
    bulk_append(client, "INBOX", [seed_message(i, tag="job") for i in range(5)])
    client.logout()
    src_token, _ = fresh_tokens(introspection, a, "jsrc")
    dst_token, _ = fresh_tokens(introspection, c, "jdst")
    src_cmd = token_command(tokens_dir(tmp_path, "src"), [src_token] * 6)
    dst_cmd = token_command(tokens_dir(tmp_path, "dst"), [dst_token] * 6)
    home = tmp_path / "home"
    home.mkdir()
    env = job_env(home)
    added = run_cli("jobs", "add", "move", "--command", "copy", "--source", url(dovecot_oauth, a),
                    "--dest", url(dovecot_oauth, c), "--oauth2-token-command", src_cmd,
                    "--dest-oauth2-token-command", dst_cmd, env=env)
    assert added.code == 0, added.err
    assert "Login OK" in added.out
    job_text = (home / "config" / "jobs" / "move.toml").read_text()
    assert f'[credentials]\nmethod = "oauth2"\nvalue = "{src_cmd}"' in job_text
    assert f'[dest_credentials]\nmethod = "oauth2"\nvalue = "{dst_cmd}"' in job_text
    for _ in range(2):
        ran = run_cli("run", "move", env=env)
        assert ran.code == 0, ran.err
    assert [r["new_messages"] for r in history(home, "move")] == [5, 0]
    shown = run_cli("jobs", "show", "move", "--json", env=env)
    assert shown.json()["dest_credentials"] == {"method": "oauth2", "value": dst_cmd}
    written = [p.read_bytes() for p in home.rglob("*") if p.is_file()]  # job, history, state
    assert any(p.name == "history.jsonl" for p in home.rglob("*"))
    for token in (src_token, dst_token):
        assert token not in added.out + added.err + shown.out
        assert all(token.encode() not in data for data in written)


def test_restore_job_with_oauth2_destination(dovecot_oauth, introspection, tmp_path):
    a, b = dovecot_oauth.add_user(), dovecot_oauth.add_user()
    client = imap_login(dovecot_oauth, a)
    bulk_append(client, "INBOX", [seed_message(i, tag="rjob") for i in range(4)])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(dovecot_oauth, a, archive), password=a.password).code == 0
    token, _ = fresh_tokens(introspection, b, "rjob")
    cmd = token_command(tmp_path, [token] * 4)
    home = tmp_path / "home"
    home.mkdir()
    env = job_env(home)
    added = run_cli("jobs", "add", "back", "--command", "restore", "--source", str(archive),
                    "--dest", url(dovecot_oauth, b, auth="xoauth2"), "--oauth2-token-command", cmd,
                    env=env)
    assert added.code == 0, added.err
    assert run_cli("run", "back", env=env).code == 0
    assert [r["new_messages"] for r in history(home, "back")] == [4]
    assert set(logins(dovecot_oauth, b)) == {"XOAUTH2"}


# -- usage errors (no server needed: refused before any connection) ---------------------------
URL_A = "imap://a@127.0.0.1:9?tls=none"
URL_B = "imap://b@127.0.0.1:9?tls=none"


def one_line_usage_error(result: CliResult, *names: str) -> None:
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and result.err.startswith("mailmigrate: error: ")
    for name in names:
        assert name in result.err


@pytest.mark.parametrize("args, names", [
    (["restore", "a.sqlite", URL_B, "--password-env", "X", "--oauth2-token-command", "t"],
     ["--oauth2-token-command", "--password-env"]),
    (["copy", URL_A, URL_B, "--password-file", "pw", "--oauth2-token-command", "t",
      "--dest-password-env", "X"], ["--oauth2-token-command", "--password-file"]),
    (["copy", URL_A, URL_B, "--password-env", "X", "--dest-password-command", "p",
      "--dest-oauth2-token-command", "t"], ["--dest-oauth2-token-command", "--dest-password-command"]),
    (["verify", URL_A, URL_B, "--password-env", "X", "--dest-oauth2-token-command", "t",
      "--dest-password-env", "Y"], ["--dest-oauth2-token-command", "--dest-password-env"]),
    # A source token command is never reused for the destination.
    (["copy", URL_A, URL_B, "--oauth2-token-command", "t"],
     ["not reused", "--dest-oauth2-token-command", "--dest-password-env"]),
    # ?auth=xoauth2 asks for a token: name the option of that side.
    (["copy", URL_A, URL_B + "&auth=xoauth2", "--password-env", "X"],
     ["auth=xoauth2", "--dest-oauth2-token-command"]),
    (["restore", "a.sqlite", URL_B + "&auth=oauthbearer", "--password-env", "X"],
     ["auth=oauthbearer", "--oauth2-token-command"]),
], ids=["restore-both", "copy-source-both", "copy-dest-both", "verify-dest-both",
        "copy-no-fallback", "copy-dest-auth", "restore-auth"])
def test_conflicting_or_missing_credentials_are_one_line_usage_errors(tmp_path, args, names):
    one_line_usage_error(run_cli(*args, env=cli_env(None, X="x", Y="y",
                                                    XDG_STATE_HOME=str(tmp_path))), *names)


def test_help_names_the_new_options():
    copy_help = run_cli("copy", "--help", env=cli_env(None, COLUMNS="200")).out
    assert "--oauth2-token-command" in copy_help and "--dest-oauth2-token-command" in copy_help
    assert "one account" in copy_help  # why the token command does not fall back
    assert "--oauth2-token-command" in run_cli("restore", "--help", env=cli_env(None, COLUMNS="200")).out
    assert "--dest-oauth2-token-command" in run_cli("jobs", "add", "--help",
                                                    env=cli_env(None, COLUMNS="200")).out
