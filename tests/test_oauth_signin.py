"""Sign in once, then every command logs in by itself: against a real authorization
server (tests/oauth_server.py, authlib's server side) whose tokens Dovecot's oauth2
passdb validates through that server's introspection endpoint."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cli_helpers import PASSWORD_ENV, run_cli
from oauth_helpers import (
    CODE_DOMAIN,
    approve_on_device_page,
    browser,
    cli_login,
    imap_url,
    logins,
    new_account,
    oauth_logins,
)
from proxy import TcpProxy

from migrate.config.endpoints import PasswordSource, parse_endpoint
from migrate.stores.imap import connect_imap


def signed_in(oauth_env, authserver, dovecot_as, local: str, messages: int = 0, size: int | None = None):
    user = new_account(authserver, dovecot_as, local, messages=messages, size=size)
    result = cli_login(oauth_env, user.name, on_code=approve_on_device_page(authserver, user.name))
    assert result.code == 0, result.err
    return user


def archived(archive: Path) -> int:
    import sqlite3

    with sqlite3.connect(archive) as conn:
        return conn.execute("SELECT count(*) FROM folder_messages").fetchone()[0]


def test_device_sign_in_then_backup_logs_in_by_itself(oauth_env, oauth_home, authserver, dovecot_as,
                                                      tmp_path):
    user = new_account(authserver, dovecot_as, "alice", messages=5)
    result = cli_login(oauth_env, user.name, on_code=approve_on_device_page(authserver, user.name))
    assert result.code == 0, result.err
    assert "enter the code" in result.err and "Signed in" in result.out
    listed = run_cli("auth", "list", "--json", env=oauth_env)
    assert [(g["address"], g["provider"], g["store"]) for g in listed.json()["sign_ins"]] == \
        [(user.name, "testidp", "keyring")]
    keyring = json.loads((oauth_home / "keyring.json").read_text())
    assert json.loads(keyring["mailmigrate-oauth2"][user.name])["refresh_token"]

    before = len(authserver.token_requests)
    archive = tmp_path / "a.sqlite"
    backup = run_cli("backup", imap_url(dovecot_as, user.name), str(archive), "--json", env=oauth_env)
    assert backup.code == 0, backup.err
    assert backup.json()["new_messages"] == 5
    assert authserver.token_requests[before:] == ["refresh_token"]  # one refresh, no prompt
    assert oauth_logins(dovecot_as, user.name) == ["OAUTHBEARER"]


def test_access_token_expires_mid_run_and_is_refreshed(oauth_env, authserver, dovecot_as, tmp_path):
    """The hour runs out mid-transfer: the connection drops (a proxy cuts it after a
    counted number of bytes), the reconnect's login is refused because the token the
    run started with has expired, the run refreshes it and finishes, each message once."""
    user = signed_in(oauth_env, authserver, dovecot_as, "mid", messages=40, size=4000)
    archive = tmp_path / "a.sqlite"
    before = len(authserver.token_requests)
    with TcpProxy(dovecot_as.host, dovecot_as.imap_port) as proxy:
        proxy.cut_after(60_000)  # mid-transfer: the 40 messages are 160 KB
        url = f"imap://{user.name.replace('@', '%40')}@127.0.0.1:{proxy.port}?tls=none"
        # Every token issued from now on passes one login only, then is expired.
        authserver.logins_per_token = 1
        try:
            backup = run_cli("backup", url, str(archive), "--json", "--retry-delay", "0",
                             env=oauth_env)
        finally:
            authserver.logins_per_token = None
    assert backup.code == 0, backup.err
    assert backup.json()["new_messages"] == 40, backup.err
    assert archived(archive) == 40
    assert authserver.token_requests[before:] == ["refresh_token", "refresh_token"]
    first, second = [t for t in authserver.access_tokens_of(user.name)][-2:]
    assert authserver.introspected.count(first) == 2  # accepted, then refused as expired
    assert authserver.introspected.count(second) == 1
    assert oauth_logins(dovecot_as, user.name) == ["OAUTHBEARER", "OAUTHBEARER"]


def test_revoked_grant_exits_3_with_one_line_saying_how_to_sign_in(oauth_env, authserver, dovecot_as,
                                                                    tmp_path):
    user = signed_in(oauth_env, authserver, dovecot_as, "revoked", messages=1)
    authserver.revoke_user(user.name)
    backup = run_cli("backup", imap_url(dovecot_as, user.name), str(tmp_path / "a.sqlite"),
                     "--quiet", env=oauth_env)
    assert backup.code == 3
    lines = backup.err.strip().splitlines()
    assert len(lines) == 1, backup.err
    assert lines[0].startswith(f"mailmigrate: error: the OAuth2 sign-in for {user.name} was "
                               "revoked or has expired (invalid_grant")
    assert lines[0].endswith(f"sign in again: mailmigrate auth login {user.name}")
    assert oauth_logins(dovecot_as, user.name) == []


def test_pkce_sign_in_through_a_browser_then_auth_token(oauth_env, authserver, dovecot_as):
    user = new_account(authserver, dovecot_as, "web", domain=CODE_DOMAIN)
    result = cli_login(oauth_env, user.name, on_url=browser(user.name))
    assert result.code == 0, result.err
    assert "code_challenge_method=S256" in result.err
    assert authserver.token_requests[-1] == "authorization_code"
    printed = run_cli("auth", "token", user.name, "--json", env=oauth_env)
    assert printed.code == 0, printed.err
    token = printed.json()
    assert token["token_type"] == "Bearer" and 3500 < token["expires_in"] <= 3600
    # The token is good for IMAP: Dovecot asks the authorization server and lets us in.
    endpoint = parse_endpoint(imap_url(dovecot_as, user.name))
    connect_imap(endpoint, PasswordSource(oauth2_tokens=lambda _: (token["access_token"], None))
                 ).logout()
    assert oauth_logins(dovecot_as, user.name) == ["OAUTHBEARER"]


def test_denied_in_the_browser_is_an_auth_error(oauth_env, authserver, dovecot_as):
    user = new_account(authserver, dovecot_as, "nope", domain=CODE_DOMAIN)
    result = cli_login(oauth_env, user.name, on_url=browser(user.name, decision="deny"))
    assert result.code == 3
    assert f"the sign-in for {user.name} was denied" in result.err
    assert run_cli("auth", "list", "--json", env=oauth_env).json()["sign_ins"] == []


def test_denied_on_the_device_page_is_an_auth_error(oauth_env, authserver, dovecot_as):
    user = new_account(authserver, dovecot_as, "nodev")

    def deny(code: str) -> None:
        import requests

        requests.post(f"{authserver.base}/device", data={"user_code": code, "decision": "deny"},
                      timeout=10)

    result = cli_login(oauth_env, user.name, on_code=deny)
    assert result.code == 3
    assert "was denied at Test IdP" in result.err


def test_logout_revokes_at_the_provider_and_forgets(oauth_env, oauth_home, authserver, dovecot_as, tmp_path):
    user = signed_in(oauth_env, authserver, dovecot_as, "bye", messages=1)
    out = run_cli("auth", "logout", user.name, env=oauth_env)
    assert out.code == 0, out.err
    assert run_cli("auth", "list", "--json", env=oauth_env).json()["sign_ins"] == []
    assert user.name not in json.loads((oauth_home / "keyring.json").read_text())["mailmigrate-oauth2"]
    assert all(t.refresh_revoked for t in authserver.tokens.values() if t.user == user.name)
    # Without a sign-in the command is back to asking for a password (and there is no TTY).
    backup = run_cli("backup", imap_url(dovecot_as, user.name), str(tmp_path / "a.sqlite"), env=oauth_env)
    assert backup.code == 2
    assert "no password for" in backup.err


def test_without_a_keyring_a_0600_file_said_once(oauth_env, oauth_home, authserver, dovecot_as, tmp_path):
    no_keyring = {**oauth_env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    first = signed_in(no_keyring, authserver, dovecot_as, "nokr1", messages=2)
    secrets_file = oauth_home / "config" / "oauth2" / "refresh-tokens.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
    second = new_account(authserver, dovecot_as, "nokr2")
    again = cli_login(no_keyring, second.name, on_code=approve_on_device_page(authserver, second.name))
    assert again.code == 0, again.err
    assert "WARNING" not in again.err  # said once: when the file was made
    listed = run_cli("auth", "list", "--json", env=no_keyring).json()["sign_ins"]
    assert sorted(g["store"] for g in listed) == ["file", "file"]
    backup = run_cli("backup", imap_url(dovecot_as, first.name), str(tmp_path / "a.sqlite"),
                     "--json", env=no_keyring)
    assert backup.code == 0, backup.err
    secrets_file.chmod(0o644)
    refused = run_cli("backup", imap_url(dovecot_as, first.name), str(tmp_path / "b.sqlite"),
                      env=no_keyring)
    assert refused.code == 2
    assert "readable by other users (mode 644); run `chmod 600" in refused.err


def test_first_file_sign_in_warns_loudly(oauth_env, oauth_home, authserver, dovecot_as):
    file_store = {**oauth_env, "MAILMIGRATE_OAUTH2_STORE": "file"}
    user = new_account(authserver, dovecot_as, "loud")
    result = cli_login(file_store, user.name, on_code=approve_on_device_page(authserver, user.name))
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if "WARNING" in line]
    assert len(warning) == 1
    assert "no system keyring here" in warning[0] and "refresh-tokens.json" in warning[0]
    assert "keyring.json" not in {p.name for p in oauth_home.iterdir()}


def test_a_password_option_still_wins(oauth_env, authserver, dovecot_as, tmp_path):
    user = signed_in(oauth_env, authserver, dovecot_as, "pw", messages=1)
    before = len(authserver.token_requests)
    backup = run_cli("backup", imap_url(dovecot_as, user.name), str(tmp_path / "a.sqlite"),
                     "--password-env", PASSWORD_ENV, env={**oauth_env, PASSWORD_ENV: user.password})
    assert backup.code == 0, backup.err
    assert authserver.token_requests[before:] == []
    assert logins(dovecot_as, user.name) == ["PLAIN", "PLAIN"]  # seeding, then the backup
    assert oauth_logins(dovecot_as, user.name) == []


def test_a_token_never_goes_to_another_providers_server(oauth_env, authserver, dovecot_as, tmp_path):
    """Signed in with testidp (whose server is 127.0.0.1): a URL naming another host
    for the same user name gets no token, it falls back to asking for a password."""
    user = signed_in(oauth_env, authserver, dovecot_as, "elsewhere", messages=1)
    before = len(authserver.token_requests)
    url = f"imap://{user.name.replace('@', '%40')}@localhost:{dovecot_as.imap_port}?tls=none"
    backup = run_cli("backup", url, str(tmp_path / "a.sqlite"), env=oauth_env)
    assert backup.code == 2 and "no password for" in backup.err
    assert authserver.token_requests[before:] == []


def test_auth_token_without_sign_in_says_how(oauth_env):
    result = run_cli("auth", "token", "ghost@idp.test", env=oauth_env)
    assert result.code == 3
    assert result.err.strip() == ("mailmigrate: error: no OAuth2 sign-in stored for ghost@idp.test; "
                                  "sign in once with `mailmigrate auth login ghost@idp.test`")


def test_url_asking_for_oauth_without_sign_in_names_auth_login(oauth_env, dovecot_as, tmp_path):
    result = run_cli("backup", imap_url(dovecot_as, "ghost@idp.test", "&auth=xoauth2"),
                     str(tmp_path / "a.sqlite"), env=oauth_env)
    assert result.code == 2
    assert "sign in once with `mailmigrate auth login ghost@idp.test`" in result.err
