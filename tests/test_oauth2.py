"""OAuth2 for real: Dovecot's oauth2 passdb asks a token-introspection endpoint
(tests/oauth_server.py) on loopback; we log in with XOAUTH2 and OAUTHBEARER over
IMAP and POP3, and refresh a token that expired between two connections."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_helpers import run_cli
from dovecot import DovecotServer, User
from seeding import bulk_append, imap_login, seed_messages
from test_jobs import history, job_env

from migrate.config.endpoints import PasswordSource, parse_endpoint
from migrate.errors import AuthError
from migrate.stores.imap import connect_imap
from migrate.stores.pop3 import Pop3Session


@pytest.fixture
def oauth_user(dovecot_oauth: DovecotServer) -> User:
    return dovecot_oauth.add_user()


def token_command(directory: Path, tokens: list[str], *, expires_in: int | None = None) -> str:
    """A script printing the next token of ``tokens`` on each run (like a refresh
    helper), counting its runs in ``directory/runs``."""
    (directory / "tokens").write_text("\n".join(tokens) + "\n")
    script = directory / "token.sh"
    json_out = f"'{{\"access_token\": \"'\"$t\"'\", \"expires_in\": {expires_in}}}'"
    out = '"$t"' if expires_in is None else json_out
    script.write_text(
        "#!/bin/sh\n"
        f"cd {directory}\n"
        "n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs\n"
        't=$(sed -n "${n}p" tokens)\n'
        f"printf '%s\\n' {out}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def runs(directory: Path) -> int:
    return int((directory / "runs").read_text())


def url(server: DovecotServer, user: User, scheme: str = "imap", auth: str | None = None) -> str:
    port = server.imap_port if scheme == "imap" else server.pop3_port
    query = "?tls=none" + (f"&auth={auth}" if auth else "")
    return f"{scheme}://{user.name}@{server.host}:{port}{query}"


def logins(server: DovecotServer, user: User) -> list[str]:
    return [line.split("method=")[1].split(",")[0] for line in server.log_text().splitlines()
            if "Login: user=<" + user.name + ">" in line]


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_imap_login_with_each_mechanism(dovecot_oauth, oauth_user, introspection, tmp_path, mech):
    introspection.grant(f"tok-{mech}-{oauth_user.name}", oauth_user.name)
    cmd = token_command(tmp_path, [f"tok-{mech}-{oauth_user.name}"])
    client = connect_imap(parse_endpoint(url(dovecot_oauth, oauth_user, auth=mech)),
                          PasswordSource(oauth2_command=cmd))
    assert client.list_folders()
    client.logout()
    assert logins(dovecot_oauth, oauth_user) == [mech.upper()]


def test_mechanism_chosen_from_capabilities(dovecot_oauth, oauth_user, introspection, tmp_path):
    """A token command without ?auth=: the standard OAUTHBEARER where offered."""
    introspection.grant("tok-cap", oauth_user.name)
    client = connect_imap(parse_endpoint(url(dovecot_oauth, oauth_user)),
                          PasswordSource(oauth2_command=token_command(tmp_path, ["tok-cap"])))
    client.logout()
    assert logins(dovecot_oauth, oauth_user) == ["OAUTHBEARER"]


def test_expired_token_is_refreshed_on_the_next_login(dovecot_oauth, oauth_user, introspection,
                                                      tmp_path):
    """The reconnect an hour into a run: the cached token is refused, the command
    runs again, and the same PasswordSource logs in with the new token."""
    introspection.grant("tok-1", oauth_user.name)
    introspection.grant("tok-2", oauth_user.name)
    password = PasswordSource(oauth2_command=token_command(tmp_path, ["tok-1", "tok-2"]))
    endpoint = parse_endpoint(url(dovecot_oauth, oauth_user, auth="xoauth2"))
    connect_imap(endpoint, password).logout()
    assert runs(tmp_path) == 1
    introspection.expire("tok-1")
    introspection.requests.clear()
    connect_imap(endpoint, password).logout()  # refused tok-1, refreshed, tok-2 accepted
    assert runs(tmp_path) == 2
    assert introspection.requests == ["tok-1", "tok-2"]
    assert logins(dovecot_oauth, oauth_user) == ["XOAUTH2", "XOAUTH2"]


def test_token_expiring_soon_is_refreshed_before_login(dovecot_oauth, oauth_user, introspection,
                                                       tmp_path):
    """JSON from the command with expires_in: a token that expires within a minute
    is replaced before it is used, so the server never sees the stale one."""
    introspection.grant("soon-1", oauth_user.name)
    introspection.grant("soon-2", oauth_user.name)
    password = PasswordSource(oauth2_command=token_command(tmp_path, ["soon-1", "soon-2"],
                                                           expires_in=30))
    endpoint = parse_endpoint(url(dovecot_oauth, oauth_user, auth="oauthbearer"))
    introspection.requests.clear()
    connect_imap(endpoint, password).logout()
    connect_imap(endpoint, password).logout()
    assert introspection.requests == ["soon-1", "soon-2"]


def test_refused_twice_is_an_auth_error(dovecot_oauth, oauth_user, introspection, tmp_path):
    password = PasswordSource(oauth2_command=token_command(tmp_path, ["bogus-1", "bogus-2"]))
    with pytest.raises(AuthError, match="authentication failed"):
        connect_imap(parse_endpoint(url(dovecot_oauth, oauth_user, auth="xoauth2")), password)
    assert runs(tmp_path) == 2  # one refresh, then give up


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_pop3_login_and_refresh(dovecot_oauth, oauth_user, introspection, tmp_path, mech):
    introspection.grant(f"p-{mech}-2", oauth_user.name)  # the first token is never valid
    password = PasswordSource(oauth2_command=token_command(tmp_path, [f"p-{mech}-1", f"p-{mech}-2"]))
    endpoint = parse_endpoint(url(dovecot_oauth, oauth_user, "pop3", mech), protocols=("pop3",))
    assert Pop3Session(endpoint, password, 10.0, "auto").close() is True
    assert runs(tmp_path) == 2
    assert logins(dovecot_oauth, oauth_user) == [mech.upper()]


def test_backup_and_job_with_oauth2_token_command(dovecot_oauth, oauth_user, introspection, tmp_path):
    """End to end through the CLI: backup --oauth2-token-command, and a saved job."""
    client = imap_login(dovecot_oauth, oauth_user)
    bulk_append(client, "INBOX", list(seed_messages(6, tag="oauth")))
    client.logout()
    introspection.grant("cli-1", oauth_user.name)
    introspection.grant("cli-2", oauth_user.name)
    cmd = token_command(tmp_path, ["cli-1", "cli-2", "cli-2", "cli-2"])
    archive = tmp_path / "a.sqlite"
    result = run_cli("backup", url(dovecot_oauth, oauth_user, auth="xoauth2"), str(archive),
                     "--oauth2-token-command", cmd, "--json")
    assert result.code == 0, result.err
    assert result.json()["new_messages"] == 6
    assert "cli-1" not in result.out + result.err, "tokens are secrets too"

    home = tmp_path / "home"
    home.mkdir()
    introspection.expire("cli-1")
    added = run_cli("jobs", "add", "oauth", "--source", url(dovecot_oauth, oauth_user, auth="xoauth2"),
                    "--dest", str(archive), "--oauth2-token-command", cmd, env=job_env(home))
    assert added.code == 0, added.err
    job_text = (home / "config" / "jobs" / "oauth.toml").read_text()
    assert "cli-" not in job_text
    assert f'method = "oauth2"\nvalue = "{cmd}"' in job_text
    assert run_cli("run", "oauth", env=job_env(home)).code == 0
    assert history(home, "oauth")[0]["new_messages"] == 0
