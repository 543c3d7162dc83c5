"""One JSON shape for scripts: every command's --json output, after success and after
an error, validates against docs/summary.schema.json; the envelope agrees with the
process's exit code; errors come as JSON on stdout with the human line on stderr;
"not found" exits 2 everywhere.

Every command is run for real (against the private Dovecot), and a test fails when
a command that has --json is missing from this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, imap_url, run_cli
from seeding import bulk_append, create_folder, imap_login, seed_message
from test_jobs import home, job_env  # noqa: F401 (home is a fixture)

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


def test_every_json_command_is_covered() -> None:
    """Runs last in this file: a new command with --json must get a case above."""
    from test_help import PATHS, click_command

    with_json = {" ".join(p) for p in PATHS if p and any("--json" in (param.opts or [])
                                                         for param in click_command(p).params)}
    assert with_json <= SEEN | {"mailmigrate"}, f"not validated: {sorted(with_json - SEEN)}"
