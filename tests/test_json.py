"""One JSON shape for scripts: every command's --json output, after success and after
an error, validates against docs/summary.schema.json; the envelope agrees with the
process's exit code; errors come as JSON on stdout with the human line on stderr;
"not found" exits 2 everywhere.

Every command is run for real (against the private Dovecot), and a test fails when
a command that has --json is missing from this file.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from oauth_helpers import approve_on_device_page, cli_login, new_account
from oauth_helpers import imap_url as oauth_url
from seeding import bulk_append, create_folder, imap_login, seed_message
from test_jobs import home, job_env  # noqa: F401 (home is a fixture)
from test_oauth_service import google_key

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "summary.schema.json")
                    .read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
SEEN: set[str] = set()


def check(result, code: int, command: str) -> dict:
    """The run's stdout is exactly one envelope of ``command`` that validates, says the
    exit code the process had, and (on failure) has its line on stderr too."""
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, f"one JSON object on stdout, got: {result.out!r}"
    payload = json.loads(lines[0])
    errors = sorted(VALIDATOR.iter_errors(payload), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    assert payload["command"] == command
    assert payload["exit_code"] == code and payload["ok"] == (code == 0)
    if code:
        assert payload["errors"], payload
        assert "mailmigrate: error:" in result.err or code == 1, result.err
    SEEN.add(command)
    return payload


@pytest.fixture
def mailbox(dovecot, account):
    client = imap_login(dovecot, account)
    create_folder(client, "Work")
    bulk_append(client, "INBOX", [seed_message(i, 2_000, tag="json") for i in range(4)])
    bulk_append(client, "Work", [seed_message(10 + i, 2_000, tag="json") for i in range(2)])
    client.logout()
    return account


def test_every_command_validates(dovecot, mailbox, home, tmp_path):  # noqa: F811
    account = mailbox
    archive = tmp_path / "a.sqlite"
    env = cli_env(account.password)
    out = check(run_cli(*backup_args(dovecot, account, archive, "--json"), env=env), 0, "backup")
    assert out["new_messages"] == 6 and out["errors"] == []
    listed = check(run_cli("ls", str(archive), "--json"), 0, "ls")
    assert {f["folder"] for f in listed["folders"]} >= {"INBOX", "Work"}
    found = check(run_cli("search", str(archive), "", "--json"), 0, "search")
    first_id = str(found["results"][0]["id"])
    shown = check(run_cli("show", str(archive), first_id, "--json"), 0, "show")
    assert shown["folder"] in ("INBOX", "Work")
    check(run_cli("export", str(archive), f"eml:{tmp_path / 'eml'}", "--json"), 0, "export")
    check(run_cli("verify", str(archive), "--json"), 0, "verify")
    compared = check(run_cli("verify", str(archive), imap_url(dovecot, account), "--password-env",
                             PASSWORD_ENV, "--json", env=env), 0, "verify")
    assert compared["equal"] is True
    drained = check(run_cli("drain", f"pop3://{account.name}@127.0.0.1:{dovecot.pop3_port}?tls=none",
                            str(tmp_path / "pop.sqlite"), "--password-env", PASSWORD_ENV, "--json",
                            env=env), 0, "drain")
    assert drained["new_messages"] == 4

    other = dovecot.add_user()
    state = {"MAILMIGRATE_STATE_DIR": str(tmp_path / "state")}
    restored = check(run_cli("restore", str(archive), imap_url(dovecot, other), "--password-env",
                             "MM_OTHER", "--json", env=cli_env(**state, MM_OTHER=other.password)),
                     0, "restore")
    assert restored["new_messages"] == 6
    third = dovecot.add_user()
    copied = check(run_cli("copy", imap_url(dovecot, account), imap_url(dovecot, third),
                           "--password-env", PASSWORD_ENV, "--dest-password-env", "MM_THIRD", "--json",
                           env=cli_env(account.password, **state, MM_THIRD=third.password)),
                   0, "copy")
    assert copied["new_messages"] == 6
    assert Path(copied["state"]).is_relative_to(tmp_path / "state"), "MAILMIGRATE_STATE_DIR moves it"

    check(run_cli("providers", "--json"), 0, "providers")
    jenv = job_env(home, account.password)
    secret = home / "pw"
    secret.write_text(account.password + "\n")
    added = check(run_cli("jobs", "add", "j", "--source", imap_url(dovecot, account), "--dest",
                          str(tmp_path / "j.sqlite"), "--password-file", str(secret), "--json",
                          env=jenv), 0, "jobs add")
    assert added["job"] == "j" and added["job_command"] == "backup"
    ran = check(run_cli("run", "j", "--json", env=jenv), 0, "run")
    assert ran["new_messages"] == 6 and ran["job_command"] == "backup"
    check(run_cli("jobs", "list", "--json", env=jenv), 0, "jobs list")
    assert len(check(run_cli("jobs", "show", "j", "--json", env=jenv), 0, "jobs show")["history"]) == 1
    check(run_cli("schedule", "j", "--daily", "03:00", "--json", env=jenv), 0, "schedule")
    check(run_cli("schedule", "j", "--weekly", "sun 03:00", "--cron", "--json", env=jenv), 0, "schedule")
    check(run_cli("jobs", "remove", "j", "--json", env=jenv), 0, "jobs remove")


def test_errors_come_as_json_too(dovecot, account, tmp_path):
    archive = tmp_path / "a.sqlite"
    wrong = check(run_cli(*backup_args(dovecot, account, archive, "--json"), password="nope"),
                  3, "backup")
    assert wrong["error"]["type"] == "AuthError"
    assert "b'" not in wrong["errors"][0] and "authentication failed" in wrong["errors"][0]
    assert not archive.exists(), "a run that cannot log in leaves no archive"
    unknown = check(run_cli("backup", "--json", "--no-such-option"), 2, "backup")
    assert "--no-such-option" in unknown["errors"][0]
    nopw = check(run_cli(*backup_args(dovecot, account, archive, "--json"), env=cli_env()), 2, "backup")
    assert "is not set" in nopw["errors"][0] and not archive.exists()  # said before connecting
    missing = check(run_cli("ls", str(tmp_path / "none.sqlite"), "--json"), 5, "ls")
    assert missing["error"]["type"] == "ArchiveError"
    refused = check(run_cli("backup", "imap://u@127.0.0.1:9?tls=none", str(archive), "--password-env",
                            PASSWORD_ENV, "--json", "--retries", "0", password="pw"), 4, "backup")
    assert "cannot connect" in refused["errors"][0] and not archive.exists()


def test_not_found_exits_2_everywhere(dovecot, mailbox, home, tmp_path):  # noqa: F811
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(dovecot, mailbox, archive), password=mailbox.password).code == 0
    for args, command in ((("show", str(archive), "999999"), "show"),
                          (("export", str(archive), f"eml:{tmp_path / 'x'}", "--id", "999999"), "export"),
                          (("jobs", "show", "nope"), "jobs show"), (("run", "nope"), "run"),
                          (("schedule", "nope", "--daily", "02:00"), "schedule")):
        result = run_cli(*args, "--json", env=job_env(home))
        payload = check(result, 2, command)
        assert "no message with ID" in payload["errors"][0] or "no job named" in payload["errors"][0]
    assert not (tmp_path / "x").exists(), "an unknown ID exports nothing"


def test_auth_commands(oauth_env, authserver, dovecot_as, tmp_path):
    """auth login, list, token and service list: the envelope, and a token whose
    --json still feeds --oauth2-token-command; the token never reaches the log file."""
    user = new_account(authserver, dovecot_as, "json", messages=2)
    log = tmp_path / "auth.log"
    login = cli_login(oauth_env, user.name, "--json", "--log-file", str(log),
                      on_code=approve_on_device_page(authserver, user.name))
    signed = check(login, 0, "auth login")
    assert (signed["address"], signed["provider"], signed["store"]) == (user.name, "testidp", "keyring")
    listed = check(run_cli("auth", "list", "--json", env=oauth_env), 0, "auth list")
    assert [g["address"] for g in listed["sign_ins"]] == [user.name]
    token = check(run_cli("auth", "token", user.name, "--json", "--log-file", str(log),
                          env=oauth_env), 0, "auth token")
    assert token["token_type"] == "Bearer" and token["access_token"]
    assert token["access_token"] not in log.read_text(encoding="utf-8")
    command = shlex.join([sys.executable, "-m", "migrate", "auth", "token", user.name, "--json"])
    backup = run_cli("backup", oauth_url(dovecot_as, user.name), str(tmp_path / "a.sqlite"),
                     "--oauth2-token-command", command, "--json", env=oauth_env)
    assert check(backup, 0, "backup")["new_messages"] == 2
    ghost = check(run_cli("auth", "token", "ghost@idp.test", "--json", "--log-file", str(log),
                          env=oauth_env), 3, "auth token")
    assert "no OAuth2 sign-in stored for ghost@idp.test" in ghost["error"]["message"]
    assert "no OAuth2 sign-in stored for ghost@idp.test" in log.read_text(encoding="utf-8")

    empty = check(run_cli("auth", "service", "list", "--json", env=oauth_env), 0, "auth service list")
    assert empty["services"] == []
    key = google_key(authserver, tmp_path, "json.test")
    assert run_cli("auth", "service", "add", "corp", "--google-key", str(key), env=oauth_env).code == 0
    services = check(run_cli("auth", "service", "list", "--json", env=oauth_env), 0,
                     "auth service list")["services"]
    assert [(s["name"], s["key_file"]) for s in services] == [("corp", str(key))]
    typo = check(run_cli("auth", "service", "list", "--json", "--no-such-option", env=oauth_env), 2,
                 "auth service list")
    assert "--no-such-option" in typo["errors"][0]


def _password_ref(directory: Path, user) -> str:
    path = directory / f"{user.name}.pw"
    path.write_text(user.password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return f"file:{path}"


def test_batch_commands(dovecot, tmp_path):
    """batch verify, run (and --final), retry and status on a ledger of two copy accounts,
    one of which fails on a wrong password: exit 1, its line in errors and in the log file."""
    pairs = [(dovecot.add_user(), dovecot.add_user()) for _ in range(2)]
    for i, (source, _dest) in enumerate(pairs):
        client = imap_login(dovecot, source)
        bulk_append(client, "INBOX", [seed_message(20 * i + n, 1_000, tag="batch") for n in range(3)])
        client.logout()
    rows = ["kind,source,dest,source_password,dest_password"]
    rows += [f"copy,{imap_url(dovecot, s)},{imap_url(dovecot, d)},{_password_ref(tmp_path, s)},"
             f"{_password_ref(tmp_path, d)}" for s, d in pairs]
    (tmp_path / "accounts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ledger = str(tmp_path / "batch.sqlite")
    assert run_cli("batch", "init", ledger, "--accounts", str(tmp_path / "accounts.csv")).code == 0

    verified = check(run_cli("batch", "verify", ledger, "--json"), 0, "batch verify")
    assert verified["mode"] == "verify" and verified["finished"] == 2
    assert len(verified["differing"]) == 2  # nothing copied yet
    bad = pairs[1][0]
    (tmp_path / f"{bad.name}.pw").write_text("wrong-password\n", encoding="utf-8")
    log = tmp_path / "batch.log"
    ran = check(run_cli("batch", "run", ledger, "--json", "--attempts", "1", "--log-file", str(log)),
                1, "batch run")
    assert ran["mode"] == "run" and ran["messages"] == 3 and ran["finished"] == 1
    assert [f["account"].split("@")[0] for f in ran["failed"]] == [bad.name]
    assert len(ran["errors"]) == 1 and ran["errors"][0].startswith(f"failed: {bad.name}@")
    logged = log.read_text(encoding="utf-8")
    assert f"failed: {bad.name}@" in logged and "full done:" in logged
    assert "wrong-password" not in logged + ran["errors"][0]

    status = check(run_cli("batch", "status", ledger, "--json"), 0, "batch status")
    assert sorted(r["state"] for r in status["accounts"]) == ["failed", "synced"]
    assert status["totals"]["accounts"] == 2
    (tmp_path / f"{bad.name}.pw").write_text(bad.password + "\n", encoding="utf-8")
    retried = check(run_cli("batch", "retry", ledger, "--json"), 0, "batch retry")
    assert retried["mode"] == "retry" and retried["accounts"] == 1 and retried["messages"] == 3
    final = check(run_cli("batch", "run", ledger, "--final", "--json"), 0, "batch run")
    assert final["mode"] == "final" and final["messages"] == 0
    both = check(run_cli("batch", "status", ledger, "--json", "--csv"), 2, "batch status")
    assert "--json or --csv" in both["errors"][0]
    wrong = check(run_cli("batch", "verify", ledger, "--final", "--json"), 2, "batch verify")
    assert "--final" in wrong["errors"][0] and "batch verify --help" in wrong["errors"][0]
    missing = check(run_cli("batch", "status", str(tmp_path / "none.sqlite"), "--json"), 2,
                    "batch status")
    assert "no ledger at" in missing["error"]["message"]


def test_every_json_command_is_covered() -> None:
    """Runs last in this file: a new command with --json must get a case above."""
    from test_help import PATHS, click_command

    with_json = {" ".join(p) for p in PATHS if p and any("--json" in (param.opts or [])
                                                         for param in click_command(p).params)}
    assert with_json <= SEEN | {"mailmigrate"}, f"not validated: {sorted(with_json - SEEN)}"
