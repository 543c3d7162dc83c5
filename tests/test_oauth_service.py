"""Admin grants for a domain, against the real loopback authorization server and
Dovecot: a Google-style service account with domain-wide delegation (JWT bearer,
RFC 7523, one assertion per mailbox) and a Microsoft-365-style app (client
credentials), configured once with `auth service add` and named by saved jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli
from oauth_helpers import imap_url, oauth_logins
from seeding import bulk_append, imap_login, seed_messages
from test_jobs import history

from migrate.config.endpoints import parse_endpoint
from migrate.config.oauth.service import google_service, microsoft_service, save_service
from migrate.config.oauth.tokens import oauth_password_source
from migrate.stores.imap import connect_imap

GMAIL_SCOPE = "https://mail.google.com/"
M365_SCOPE = "https://outlook.office365.com/.default"


def mailboxes(authserver, dovecot, domain: str, n: int, messages: int = 3) -> list[str]:
    names = []
    for i in range(n):
        user = dovecot.add_user(name=f"m{i}_{os.urandom(3).hex()}@{domain}")
        authserver.add_user(user.name)
        client = imap_login(dovecot, user)
        bulk_append(client, "INBOX", list(seed_messages(messages, tag=f"svc{i}")))
        client.logout()
        names.append(user.name)
    return names


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def google_key(authserver, tmp_path: Path, domain: str) -> Path:
    key = authserver.add_service_account(f"migrator@{domain.split('.')[0]}.iam.test", domain,
                                         (GMAIL_SCOPE,))
    return private_file(tmp_path / f"{domain}-key.json", json.dumps(key))


def secrets_of(authserver, users: list[str]) -> list[str]:
    return [t.access_token for t in authserver.tokens.values() if t.user in users]


def files_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*")
                   if p.is_file() and p.suffix != ".sqlite")


def test_a_service_key_gives_five_mailboxes_their_tokens_in_one_process(
        tmp_path, monkeypatch, authserver, dovecot_as):
    """One process, five mailboxes, two connections each: one JWT assertion per
    mailbox (sub = the mailbox), and the second connection reuses the cached token."""
    monkeypatch.setenv("MAILMIGRATE_CONFIG_DIR", str(tmp_path / "config"))
    boxes = mailboxes(authserver, dovecot_as, "five.test", 5, messages=0)
    save_service(google_service("five", google_key(authserver, tmp_path, "five.test")))
    start = len(authserver.assertions)
    for box in boxes:
        source = oauth_password_source("oauth2-service", "five", "password", mailbox=box)
        assert source is not None
        for _ in range(2):
            connect_imap(parse_endpoint(imap_url(dovecot_as, box)), source).logout()
    assert authserver.assertions[start:] == [(box, GMAIL_SCOPE) for box in boxes]
    assert [oauth_logins(dovecot_as, box) for box in boxes] == [["OAUTHBEARER"] * 2] * 5


def test_a_domain_key_backs_up_five_mailboxes_as_saved_jobs(oauth_env, oauth_home, tmp_path, authserver,
                                                           dovecot_as):
    boxes = mailboxes(authserver, dovecot_as, "corp.test", 5)
    key = google_key(authserver, tmp_path, "corp.test")
    added = run_cli("auth", "service", "add", "corp", "--google-key", str(key), "--test", boxes[0],
                    env=oauth_env)
    assert added.code == 0, added.err
    assert f"Token OK for {boxes[0]}" in added.out
    service_file = (oauth_home / "config" / "oauth2" / "services" / "corp.toml").read_text()
    assert "PRIVATE KEY" not in service_file and str(key) in service_file
    for i, box in enumerate(boxes):
        job = run_cli("jobs", "add", f"box{i}", "--source", imap_url(dovecot_as, box),
                      "--dest", str(tmp_path / f"box{i}.sqlite"), "--oauth2-service", "corp",
                      env=oauth_env)
        assert job.code == 0, job.err
        assert "Login OK" in job.out
        job_file = (oauth_home / "config" / "jobs" / f"box{i}.toml").read_text()
        assert 'method = "oauth2-service"\nvalue = "corp"' in job_file
    start = len(authserver.assertions)
    for i in range(5):
        ran = run_cli("run", f"box{i}", env=oauth_env)
        assert ran.code == 0, ran.err
        assert history(oauth_home, f"box{i}")[-1]["new_messages"] == 3
    assert sorted(sub for sub, _ in authserver.assertions[start:]) == sorted(boxes)
    leaked = [t for t in secrets_of(authserver, boxes) if t in files_text(oauth_home)]
    assert leaked == []


def test_a_key_file_others_can_read_is_refused(oauth_env, tmp_path, authserver):
    key = google_key(authserver, tmp_path, "loose.test")
    key.chmod(0o644)
    added = run_cli("auth", "service", "add", "loose", "--google-key", str(key), env=oauth_env)
    assert added.code == 2
    assert added.err.strip() == (f"mailmigrate: error: the service account key file {key} is "
                                 f"readable by other users (mode 644); run `chmod 600 {key}` "
                                 "and try again")


def test_a_mailbox_outside_the_delegation_is_an_auth_error(oauth_env, tmp_path, authserver, dovecot_as):
    key = google_key(authserver, tmp_path, "deleg.test")
    assert run_cli("auth", "service", "add", "deleg", "--google-key", str(key), env=oauth_env).code == 0
    outsider = mailboxes(authserver, dovecot_as, "other.test", 1)[0]
    backup = run_cli("backup", imap_url(dovecot_as, outsider), str(tmp_path / "a.sqlite"),
                     "--quiet", env={**oauth_env, "MAILMIGRATE_OAUTH2_SERVICE": "deleg"})
    assert backup.code == 3
    lines = backup.err.strip().splitlines()
    assert len(lines) == 1, backup.err
    line = lines[0]
    assert f"refused service account 'deleg' for {outsider}" in line
    assert "domain-wide delegation" in line


def test_microsoft_app_client_credentials(oauth_env, oauth_home, tmp_path, authserver, dovecot_as):
    [box] = mailboxes(authserver, dovecot_as, "contoso.test", 1)
    authserver.add_app("m365-app", "app-s3cret-value", box, (M365_SCOPE,))
    secret = private_file(tmp_path / "secret", "app-s3cret-value\n")
    added = run_cli("auth", "service", "add", "m365", "--client-id", "m365-app", "--token-url",
                    authserver.token_url, "--client-secret-file", str(secret), "--test", box,
                    env=oauth_env)
    assert added.code == 0, added.err
    start = len(authserver.token_requests)
    backup = run_cli("backup", imap_url(dovecot_as, box), str(tmp_path / "a.sqlite"), "--json",
                     env={**oauth_env, "MAILMIGRATE_OAUTH2_SERVICE": "m365"})
    assert backup.code == 0, backup.err
    assert backup.json()["new_messages"] == 3
    assert authserver.token_requests[start:] == ["client_credentials"]
    assert "app-s3cret-value" not in files_text(oauth_home) + backup.out + backup.err
    # A wrong (or expired) secret: exit 3, one line.
    secret.write_text("wrong")
    refused = run_cli("backup", imap_url(dovecot_as, box), str(tmp_path / "b.sqlite"), "--quiet",
                      env={**oauth_env, "MAILMIGRATE_OAUTH2_SERVICE": "m365"})
    assert refused.code == 3
    [line] = refused.err.strip().splitlines()
    assert "refused the app of OAuth2 service 'm365' (invalid_client" in line


def test_microsoft_secret_from_stdin_lives_in_the_keyring(oauth_env, oauth_home, tmp_path, authserver,
                                                          dovecot_as):
    [box] = mailboxes(authserver, dovecot_as, "fabrikam.test", 1)
    authserver.add_app("kr-app", "kr-s3cret", box, (M365_SCOPE,))
    added = run_cli("auth", "service", "add", "kr", "--client-id", "kr-app", "--token-url",
                    authserver.token_url, "--client-secret-stdin", "--test", box, env=oauth_env,
                    stdin="kr-s3cret\n")
    assert added.code == 0, added.err
    keyring = json.loads((oauth_home / "keyring.json").read_text())
    assert keyring["mailmigrate-oauth2-service"]["kr"] == "kr-s3cret"
    assert "kr-s3cret" not in (oauth_home / "config" / "oauth2" / "services" / "kr.toml").read_text()
    job = run_cli("jobs", "add", "kr", "--source", imap_url(dovecot_as, box), "--dest",
                  str(tmp_path / "kr.sqlite"), "--oauth2-service", "kr", env=oauth_env)
    assert job.code == 0, job.err
    assert run_cli("run", "kr", env=oauth_env).code == 0
    assert history(oauth_home, "kr")[-1]["new_messages"] == 3
    removed = run_cli("auth", "service", "remove", "kr", env=oauth_env)
    assert removed.code == 0
    assert "kr" not in json.loads((oauth_home / "keyring.json").read_text())["mailmigrate-oauth2-service"]


def test_tenant_names_the_token_endpoint():
    svc = microsoft_service("t", "app", tenant="contoso.onmicrosoft.com", token_url=None,
                            secret_file=None, secret_in_keyring=True)
    assert svc.token_url == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert svc.scopes == [M365_SCOPE]


@pytest.mark.parametrize(("text", "message"), [
    ('kind = "google"\ntoken_url = "https://x/token"\nscopes = "mail"\nkey_file = "/k"\n',
     "scopes has the wrong type"),
    ('kind = "google"\ntoken_url = "https://x/token"\nscopes = ["mail"]\n', "needs its key file"),
    ('kind = "yahoo"\ntoken_url = "https://x/token"\nscopes = ["mail"]\n', "kind must be one of"),
    ('kind = "microsoft"\ntoken_url = "https://x/token"\nscopes = ["m"]\nclient_id = "a"\n',
     "give the client secret one way"),
    ('kind = "google"\nscopes = ["mail"]\nkey_file = "/k"\n', "missing 1 required"),
    ('kind = "google"\ntoken = "x"\n', "unknown key 'token'"),
])
def test_a_hand_edited_service_file_is_checked(tmp_path, monkeypatch, text, message):
    from migrate.config.oauth.service import load_service, services_dir
    from migrate.errors import UsageError

    monkeypatch.setenv("MAILMIGRATE_CONFIG_DIR", str(tmp_path))
    services_dir().mkdir(parents=True)
    (services_dir() / "hand.toml").write_text(text)
    with pytest.raises(UsageError, match=message):
        load_service("hand")


def test_service_tokens_per_mailbox_refreshed_before_expiry(tmp_path, authserver):
    from migrate.config.oauth.service import ServiceTokens

    authserver.add_user("a@clock.test")
    authserver.add_user("b@clock.test")
    svc = google_service("clock", google_key(authserver, tmp_path, "clock.test"))
    now = [0.0]
    tokens = ServiceTokens(svc, clock=lambda: now[0])
    a1, lifetime = tokens.token("a@clock.test")
    b1, _ = tokens.token("b@clock.test")
    assert a1 != b1 and lifetime == 3600 and tokens.fetched == 2
    now[0] = 3500.0  # 100 s left: still cached, per mailbox
    assert tokens.token("a@clock.test") == (a1, 100.0)
    now[0] = 3560.0  # inside the 60 s margin: a new assertion before the old token runs out
    a2, _ = tokens.token("a@clock.test")
    assert a2 != a1 and tokens.fetched == 3
    assert tokens.token("a@clock.test", force=True)[0] not in (a1, a2)  # refused: fetched again
