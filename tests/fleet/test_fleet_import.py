"""The account importers: our CSV, imapsync's lines and Exchange Online's CSV, through
`batch init`; bad rows are named by line and nothing is imported."""

from __future__ import annotations

import json

from cli_helpers import run_cli


def init(tmp_path, text: str, *extra: str, name: str = "accounts.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    ledger = tmp_path / "batch.sqlite"
    return ledger, run_cli("batch", "init", str(ledger), "--accounts", str(path), *extra)


def accounts(ledger) -> list[dict]:
    return run_cli("batch", "status", str(ledger), "--json").json()["accounts"]


def test_native_csv_with_kinds_templates_and_references(tmp_path):
    archive = tmp_path / "old.sqlite"
    archive.write_bytes(b"")
    ledger, done = init(tmp_path, (
        "kind,source,dest,source_password,dest_password\n"
        "# a comment line\n"
        "copy,imaps://alice@old.example.com,imaps://alice@new.example.net,env:A_OLD,file:/s/a\n"
        ",imaps://bob@old.example.com,imaps://bob%40new.example.net@new.example.net,"
        "command:pass show b,oauth2-command:token-for bob\n"
        "backup,imaps://carol@old.example.com,archives/{user}.sqlite,keyring:carol,\n"
        "drain,pop3s://dave@old.example.com,archives/{local}-pop,env:D,\n"
        f"restore,{archive},imaps://erin@new.example.net,,env:E\n"))
    assert done.code == 0, done.err
    rows = accounts(ledger)
    assert [r["kind"] for r in rows] == ["copy", "copy", "backup", "drain", "restore"]
    assert rows[1]["dest_password"] == "oauth2-command:token-for bob"
    assert rows[1]["account"] == "bob@old.example.com -> bob@new.example.net@new.example.net"
    assert rows[2]["dest"].endswith("/archives/carol.sqlite")
    assert rows[3]["dest"].endswith("/archives/dave-pop")
    assert {r["state"] for r in rows} == {"new"}


def test_imapsync_lines(tmp_path):
    ledger, done = init(tmp_path, (
        "# imapsync sync_loop file\n"
        "host1;user1;password1;host2;user2;password2\n"  # a header, as in imapsync's FAQ
        "imap.old.example.com;alice;env:PW1;imap.new.example.net;alice@new.example.net;env:PW2;\n"
        "127.0.0.1:1143;bob;s3cret;imap://127.0.0.1:1144?tls=none;bob;t0p;\n"),
        "--allow-clear-passwords", name="file.txt")
    assert done.code == 0, done.err
    rows = accounts(ledger)
    assert len(rows) == 2, "the header line is not an account"
    assert rows[0]["source"] == "imaps://alice@imap.old.example.com"
    assert rows[0]["dest"] == "imaps://alice%40new.example.net@imap.new.example.net"
    assert rows[1]["dest"] == "imap://bob@127.0.0.1:1144?tls=none"
    # a clear password is kept, but never shown
    shown = json.dumps(rows)
    assert "s3cret" not in shown and "t0p" not in shown
    assert rows[1]["source_password"] == "plain:(hidden)"


def test_exchange_csv_needs_the_hosts(tmp_path):
    text = ("EmailAddress,UserName,Password\n"
            "alice@new.example.net,alice@old.example.com,env:ALICE\n"
            "bob@new.example.net,bob,env:BOB\n")
    _, missing = init(tmp_path, text)
    assert missing.code == 2 and "--source-host and --dest-host" in missing.err
    ledger, done = init(tmp_path, text, "--source-host", "imap.old.example.com",
                        "--dest-host", "outlook.office365.com", "--dest-password", "env:ADMIN_TOKEN")
    assert done.code == 0, done.err
    rows = accounts(ledger)
    assert rows[0]["source"] == "imaps://alice%40old.example.com@imap.old.example.com"
    assert rows[0]["dest"] == "imaps://alice%40new.example.net@outlook.office365.com"
    assert [r["dest_password"] for r in rows] == ["env:ADMIN_TOKEN"] * 2


def test_bad_rows_are_named_by_line_and_nothing_is_imported(tmp_path):
    ledger, done = init(tmp_path, (
        "source,dest,source_password,dest_password\n"
        "imaps://a@old.example.com,imaps://a@new.example.net,env:A,env:B\n"
        "imaps://b@old.example.com,imaps://b@new.example.net,hunter2,env:B\n"
        "ftp://c@old.example.com,imaps://c@new.example.net,env:A,env:B\n"
        "imaps://a@old.example.com,imaps://a@new.example.net,env:A,env:B\n"))
    assert done.code == 2
    assert "line 3: source_password: a clear password" in done.err
    assert "lines 4, 5" in done.err and "nothing was imported" in done.err
    assert "hunter2" not in done.err and "Traceback" not in done.err
    assert not ledger.exists()


def test_bad_header_and_bad_imapsync_line(tmp_path):
    _, done = init(tmp_path, "from,to\nx,y\n")
    assert done.code == 2 and "line 1: unknown column 'from'" in done.err
    _, done = init(tmp_path, "h1;u1;env:A;h2;u2;env:B\nh1;u1;env:A;h2\n", "--format", "imapsync",
                   name="sync.txt")
    assert done.code == 2 and "line 2: 4 fields" in done.err


def test_add_and_remove(tmp_path):
    ledger, done = init(tmp_path, "source,dest,source_password,dest_password\n"
                        "imaps://a@old.example.com,imaps://a@new.example.net,env:A,env:B\n")
    assert done.code == 0
    more = tmp_path / "more.csv"
    more.write_text("source,dest,source_password,dest_password\n"
                    "imaps://b@old.example.com,imaps://b@new.example.net,env:A,env:B\n")
    assert run_cli("batch", "add", str(ledger), "--accounts", str(more)).code == 0
    again = run_cli("batch", "add", str(ledger), "--accounts", str(more))
    assert again.code == 2 and "in the ledger already" in again.err
    assert len(accounts(ledger)) == 2
    gone = run_cli("batch", "remove", str(ledger), "a@old.example.com")
    assert gone.code == 0, gone.err
    assert [r["account"] for r in accounts(ledger)] == ["b@old.example.com -> b@new.example.net"]
    assert run_cli("batch", "remove", str(ledger), "nobody").code == 2
