"""Provider presets: every file validates; host resolution; README table in sync."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from cli_helpers import run_cli

from migrate.endpoints import parse_endpoint
from migrate.errors import UsageError
from migrate.profiles import all_profiles, markdown_table, profiles_dir, validate

REQUIRED = {"gmail", "outlook", "yahoo", "icloud", "fastmail", "zoho", "gmx", "webde",
            "t-online", "ionos", "strato", "posteo", "mailbox-org", "dovecot"}
README = Path(__file__).resolve().parent.parent / "README.md"


def raw_preset(pid: str) -> dict:
    with (profiles_dir() / f"{pid}.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_every_preset_validates_and_the_required_ones_exist() -> None:
    files = sorted(p.stem for p in profiles_dir().glob("*.toml"))
    profiles = all_profiles()
    assert [p.id for p in profiles] == files
    assert set(files) >= REQUIRED
    for prof in profiles:
        assert prof.imap is not None or prof.pop3 is not None
        if prof.id != "dovecot" and prof.imap is not None:
            assert prof.imap.host and prof.imap.delimiter in ("/", ".")
        for names in prof.folders.values():
            assert names.get("sent"), f"{prof.id}: every language names its Sent folder"
    oauth = {p.id for p in profiles if p.oauth2}
    assert {"gmail", "outlook"} <= oauth


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    (lambda d: d["imap"].update(tls="maybe"), "tls must be one of"),
    (lambda d: d["imap"].update(port=70000), "out of range"),
    (lambda d: d["imap"].update(port="993"), "'port' must be a int"),
    (lambda d: d["imap"].pop("port"), "missing required key 'port'"),
    (lambda d: d["pop3"].update(delimiter="/"), "no delimiter"),
    (lambda d: d.update(login="email"), "login must be one of"),
    (lambda d: d["limits"].update(max_connections=0), "positive integer"),
    (lambda d: d["limits"].update(speed=3), "unknown key 'speed'"),
    (lambda d: d["folders"].update(deutsch={"sent": "Gesendet"}), "two-letter language"),
    (lambda d: d["folders"]["de"].update(outbox="Postausgang"), "bad entry 'outbox'"),
    (lambda d: d["oauth2"].update(token_url="http://insecure"), "https:// URL"),
    (lambda d: d["oauth2"].update(mechanisms=["PLAIN"]), "mechanisms from"),
    (lambda d: (d.pop("imap"), d.pop("pop3")), "needs an [imap] or a [pop3]"),
])
def test_schema_rejects_mistakes(mutate, message) -> None:
    data = copy.deepcopy(raw_preset("gmail"))
    validate("gmail", data)  # the untouched preset passes
    mutate(data)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate("gmail", data)


@pytest.mark.parametrize(("url", "kwargs", "expected"), [
    ("imaps://me@gmx.de", {}, ("imap.gmx.net", 993, "me@gmx.de", "gmx")),
    ("imaps://Me@GMAIL.com", {}, ("imap.gmail.com", 993, "Me@gmail.com", "gmail")),
    ("imap://me@web.de", {}, ("imap.web.de", 143, "me@web.de", "webde")),  # STARTTLS: default port
    ("imaps://jane@icloud.com", {}, ("imap.mail.me.com", 993, "jane", "icloud")),  # local part login
    ("imaps://me@example.org", {"provider": "ionos"}, ("imap.ionos.de", 993, "me@example.org", "ionos")),
    ("imaps://me@example.org?provider=strato", {}, ("imap.strato.de", 993, "me@example.org", "strato")),
    ("imaps://me@gmx.de:1993", {}, ("imap.gmx.net", 1993, "me@gmx.de", "gmx")),  # a given port wins
    ("imaps://me@mail.example.org", {"provider": "dovecot"}, ("mail.example.org", 993, "me", "dovecot")),
    ("imaps://me@imap.example.org", {}, ("imap.example.org", 993, "me", None)),  # untouched
])
def test_host_resolution_from_address(url, kwargs, expected) -> None:
    ep = parse_endpoint(url, **kwargs)
    assert (ep.host, ep.port, ep.user, ep.provider) == expected


def test_pop3_resolution_and_refusals() -> None:
    ep = parse_endpoint("pop3s://me@t-online.de", protocols=("pop3",))
    assert (ep.host, ep.port, ep.user) == ("securepop.t-online.de", 995, "me@t-online.de")
    with pytest.raises(UsageError, match="offers no POP3"):
        parse_endpoint("pop3s://me@icloud.com", protocols=("pop3",))
    with pytest.raises(UsageError, match="unknown provider 'nope'"):
        parse_endpoint("imaps://me@example.org", provider="nope")


def test_providers_command_lists_every_preset() -> None:
    result = run_cli("providers")
    assert result.code == 0, result.err
    for prof in all_profiles():
        assert prof.id in result.out and prof.name in result.out
    result = run_cli("providers", "--json")
    ids = [p["id"] for p in result.json()]
    assert ids == [p.id for p in all_profiles()]


def test_readme_providers_table_matches_profiles() -> None:
    """Fails when a preset changes and the README table is not regenerated."""
    text = README.read_text(encoding="utf-8")
    begin, end = "<!-- providers:begin -->\n", "<!-- providers:end -->"
    assert begin in text and end in text, "README lacks the providers table markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), (
        "README providers table is stale: regenerate with python -m migrate.profiles --markdown")


def test_provider_flag_on_backup_and_drain(dovecot, account, tmp_path) -> None:
    """--provider reaches the endpoint: an unknown id is a usage error naming the
    known ones; the generic preset keeps the URL's host and the backup runs."""
    from cli_helpers import PASSWORD_ENV, backup_args

    bad = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite"), "--provider", "nope",
                  password=account.password)
    assert bad.code == 2 and "unknown provider 'nope'" in bad.err and "gmx" in bad.err
    ok = run_cli(*backup_args(dovecot, account, tmp_path / "a.sqlite"), "--provider", "dovecot",
                 password=account.password)
    assert ok.code == 0, ok.err
    drain = run_cli("drain", f"pop3://{account.name}@{dovecot.host}:{dovecot.pop3_port}?tls=none",
                    str(tmp_path / "d.sqlite"), "--password-env", PASSWORD_ENV, "--provider", "icloud",
                    password=account.password)
    assert drain.code == 2 and "offers no POP3" in drain.err
