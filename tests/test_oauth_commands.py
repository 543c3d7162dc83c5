"""Every command uses a signed-in account's token by itself: drain (POP3), restore,
copy (each side its own sign-in), verify, and saved jobs with `run`; and no token
or refresh token shows up in output, files or the job's command line."""

from __future__ import annotations

import json
import re

from cli_helpers import PASSWORD_ENV, run_cli
from oauth_helpers import (
    approve_on_device_page,
    cli_login,
    imap_url,
    new_account,
    oauth_logins,
)
from test_jobs import history

from migrate.config.jobs import Credential, Job


def signed_in(oauth_env, authserver, dovecot, local: str, messages: int = 0):
    user = new_account(authserver, dovecot, local, messages=messages)
    result = cli_login(oauth_env, user.name, on_code=approve_on_device_page(authserver, user.name))
    assert result.code == 0, result.err
    return user


def only_our_lines(stderr: str) -> None:
    """Nothing but our own one-line messages on stderr (off a terminal, log lines carry a
    timestamp first): no warnings, no tracebacks."""
    stray = [line for line in stderr.splitlines()
             if not re.match(r"^(\S+ )?mailmigrate: ", line)]
    assert stray == [], stderr


def test_drain_over_pop3(oauth_env, authserver, dovecot_as, tmp_path):
    user = signed_in(oauth_env, authserver, dovecot_as, "pop", messages=4)
    url = f"pop3://{user.name.replace('@', '%40')}@127.0.0.1:{dovecot_as.pop3_port}?tls=none"
    drained = run_cli("drain", url, str(tmp_path / "a.sqlite"), "--json", env=oauth_env)
    assert drained.code == 0, drained.err
    assert drained.json()["new_messages"] == 4
    only_our_lines(drained.err)


def test_restore_copy_and_verify(oauth_env, authserver, dovecot_as, tmp_path):
    source = signed_in(oauth_env, authserver, dovecot_as, "src", messages=3)
    dest = signed_in(oauth_env, authserver, dovecot_as, "dst")
    archive = str(tmp_path / "a.sqlite")
    assert run_cli("backup", imap_url(dovecot_as, source.name), archive, env=oauth_env).code == 0
    restored = run_cli("restore", archive, imap_url(dovecot_as, dest.name), "--json", env=oauth_env)
    assert restored.code == 0, restored.err
    assert restored.json()["new_messages"] == 3
    verified = run_cli("verify", archive, imap_url(dovecot_as, dest.name), "--json", env=oauth_env)
    assert verified.code == 0, verified.err
    assert verified.json()["equal"] is True
    # copy: each side logs in with its own sign-in (a token is never reused across).
    third = signed_in(oauth_env, authserver, dovecot_as, "third")
    copied = run_cli("copy", imap_url(dovecot_as, source.name), imap_url(dovecot_as, third.name),
                     "--json", env=oauth_env)
    assert copied.code == 0, copied.err
    assert copied.json()["new_messages"] == 3
    assert oauth_logins(dovecot_as, third.name) == ["OAUTHBEARER"]
    only_our_lines(restored.err + verified.err + copied.err)


def test_copy_dest_sign_in_beats_a_reused_source_password(oauth_env, authserver, dovecot_as, tmp_path):
    """copy reuses the source's --password-* for the destination when it has none of its
    own; a destination that is signed in uses that instead (its password differs)."""
    source = new_account(authserver, dovecot_as, "pwsrc", messages=2)
    dest = signed_in(oauth_env, authserver, dovecot_as, "okdst")
    copied = run_cli("copy", imap_url(dovecot_as, source.name), imap_url(dovecot_as, dest.name),
                     "--password-env", PASSWORD_ENV, "--json",
                     env={**oauth_env, PASSWORD_ENV: source.password})
    assert copied.code == 0, copied.err
    assert oauth_logins(dovecot_as, dest.name) == ["OAUTHBEARER"]


def test_saved_job_uses_the_sign_in_and_run_reports_a_revoked_one(oauth_env, oauth_home, authserver,
                                                                  dovecot_as, tmp_path):
    user = signed_in(oauth_env, authserver, dovecot_as, "job", messages=2)
    added = run_cli("jobs", "add", "mine", "--source", imap_url(dovecot_as, user.name), "--dest",
                    str(tmp_path / "mine.sqlite"), env=oauth_env)
    assert added.code == 0, added.err
    job_file = (oauth_home / "config" / "jobs" / "mine.toml").read_text()
    assert f'method = "oauth2-login"\nvalue = "{user.name}"' in job_file
    ran = run_cli("run", "mine", env=oauth_env)
    assert ran.code == 0, ran.err
    assert history(oauth_home, "mine")[-1]["new_messages"] == 2

    authserver.revoke_user(user.name)
    failed = run_cli("run", "mine", env=oauth_env)
    assert failed.code == 3
    errors = history(oauth_home, "mine")[-1]["errors"]
    assert errors and errors[0].endswith(f"sign in again: mailmigrate auth login {user.name}")


def test_no_token_anywhere(oauth_env, oauth_home, authserver, dovecot_as, tmp_path):
    """Access and refresh tokens stay out of stdout/stderr, JSON, job files, history,
    the index, the archive and the job's command line; the refresh token is only in
    the keyring."""
    user = signed_in(oauth_env, authserver, dovecot_as, "secret", messages=2)
    archive = tmp_path / "a.sqlite"
    outputs = []
    for args in (["backup", imap_url(dovecot_as, user.name), str(archive), "--json"],
                 ["auth", "list", "--json"], ["auth", "list"],
                 ["jobs", "add", "s", "--source", imap_url(dovecot_as, user.name), "--dest",
                  str(tmp_path / "s.sqlite")],
                 ["run", "s", "--json"], ["jobs", "show", "s", "--json"]):
        result = run_cli(*args, env=oauth_env)
        assert result.code == 0, result.err
        outputs.append(result.out + result.err)
    tokens = [t.access_token for t in authserver.tokens.values() if t.user == user.name]
    refresh = [t.refresh_token for t in authserver.tokens.values()
               if t.user == user.name and t.refresh_token]
    assert tokens and refresh
    files = {p: p.read_bytes() for p in [*oauth_home.rglob("*"), *tmp_path.glob("*.sqlite")]
             if p.is_file()}
    keyring = oauth_home / "keyring.json"
    for secret in tokens + refresh:
        assert not any(secret in text for text in outputs)
        assert [p for p, data in files.items() if secret.encode() in data and p != keyring] == []
    stored = json.loads(keyring.read_text())["mailmigrate-oauth2"][user.name]
    assert json.loads(stored)["refresh_token"] in refresh
    argv = Job("s", "backup", imap_url(dovecot_as, user.name), "x",
               Credential("oauth2-login", user.name)).argv()
    assert not any(secret in " ".join(argv) for secret in tokens + refresh)


def test_the_wizard_takes_the_sign_in(oauth_env, oauth_home, authserver, dovecot_as, tmp_path):
    """`jobs add NAME` on a terminal: for a signed-in address it asks for no password."""
    import os
    import pty
    import sys

    from test_jobs import _drain, _expect, _reap

    user = signed_in(oauth_env, authserver, dovecot_as, "wiz", messages=2)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "migrate", "jobs", "add", "wiz"],
                   oauth_env)
    screen = bytearray()
    try:
        _expect(fd, screen, b"backup (IMAP) or drain (POP3)")
        os.write(fd, b"\n")
        _expect(fd, screen, b"e-mail address")
        os.write(fd, imap_url(dovecot_as, user.name).encode() + b"\n")
        _expect(fd, screen, b"Archive")
        os.write(fd, str(tmp_path / "wiz.sqlite").encode() + b"\n")
        _expect(fd, screen, b"Folders to back up")
        os.write(fd, b"\n")  # all
        _expect(fd, screen, b"Folders to skip")
        os.write(fd, b"\n")  # the preset's, or none
        _expect(fd, screen, b"Saved job 'wiz'")
        _drain(fd, screen)
    finally:
        status = _reap(pid)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, screen.decode(errors="replace")
    assert f"Signed in with OAuth2 as {user.name}".encode() in screen
    assert b"password come from" not in screen
    assert run_cli("run", "wiz", env=oauth_env).code == 0
    assert history(oauth_home, "wiz")[-1]["new_messages"] == 2
