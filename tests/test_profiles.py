"""Provider presets: every file validates; host resolution; docs/providers.md table in sync."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from cli_helpers import run_cli

from migrate.config.endpoints import parse_endpoint
from migrate.config.profiles import (
    USE_OF_KEY,
    all_profiles,
    get_profile,
    markdown_table,
    profile_for_host,
    profiles_dir,
    validate,
)
from migrate.config.rates import parse_rate
from migrate.errors import UsageError
from migrate.folders import matches

REQUIRED = {"gmail", "outlook", "yahoo", "icloud", "fastmail", "zoho", "gmx", "webde",
            "t-online", "ionos", "strato", "posteo", "mailbox-org", "dovecot"}
PROVIDERS_DOC = Path(__file__).resolve().parent.parent / "docs" / "providers.md"


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


def test_every_preset_keeps_its_defaults_within_its_limits() -> None:
    """A default above half a documented cap risks refusals mid-run; without a cap, 1-2."""
    for prof in all_profiles():
        cap = prof.limits.get("max_connections")
        assert prof.connections is not None, f"{prof.id}: no default connections"
        limit = cap // 2 if cap is not None else 2
        assert 1 <= prof.connections <= limit, f"{prof.id}: {prof.connections} connections"
        if prof.rate is not None:
            parse_rate(prof.rate)  # validated at load too; here it must also be a real rate


def test_every_preset_file_says_where_its_facts_come_from() -> None:
    """Each preset cites a source or marks a value unverified (the review rule for presets)."""
    for path in sorted(profiles_dir().glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        if path.stem == "dovecot":
            continue  # generic: no provider to cite
        assert "# source: http" in text, f"{path.name}: no '# source: <url>' comment"


def test_gmail_rate_keeps_under_the_daily_download_quota() -> None:
    gmail = get_profile("gmail")
    rate = parse_rate(gmail.rate or "")
    assert rate.bytes_per_second is not None
    # the allowance plus a whole day at the rate stays under the daily quota
    assert rate.free_bytes + rate.bytes_per_second * 86400 <= gmail.limits["daily_download_mb"] * 1000**2


def test_gmail_exclusions_are_globs_that_match_the_bracketed_names() -> None:
    """'[Gmail]' in a glob is a character class; the preset must escape it, and All Mail
    stays included (archived mail without a label exists only there)."""
    patterns = get_profile("gmail").exclude
    for name in ("[Gmail]/Important", "[Google Mail]/Wichtig", "[Gmail]/Starred"):
        assert matches(name, patterns), name
    for name in ("[Gmail]/All Mail", "[Google Mail]/Alle Nachrichten", "INBOX", "G/Important",
                 "[Gmail]/Sent Mail"):
        assert not matches(name, patterns), name


@pytest.mark.parametrize(("host", "expected"), [
    ("imap.gmx.net", "gmx"),
    ("IMAP.GMX.NET.", "gmx"),
    ("pop.gmx.net", "gmx"),
    ("pop3.web.de", "webde"),
    ("outlook.office365.com", "outlook"),
    ("secureimap.t-online.de", "t-online"),
    ("imap.example.org", None),
    ("gmx.net", None),  # an address domain is profile_for_domain's business
    ("", None),
])
def test_profile_for_host(host, expected) -> None:
    found = profile_for_host(host)
    assert (found.id if found else None) == expected


def test_special_names_cover_every_language_and_name_one_use_each() -> None:
    outlook = get_profile("outlook")
    names = outlook.special_names()
    assert names["\\Sent"] == ("Sent Items", "Gesendete Elemente")
    assert names["\\Junk"] == ("Junk Email", "Junk-E-Mail")
    assert names["\\Drafts"] == ("Drafts", "Entwürfe")
    gmail = get_profile("gmail").special_names()
    assert gmail["\\Junk"] == ("[Gmail]/Spam",)  # the same name in both languages, once
    assert gmail["\\All"] == ("[Gmail]/All Mail", "[Gmail]/Alle Nachrichten")
    for prof in all_profiles():
        seen: dict[str, str] = {}
        for use, found in prof.special_names().items():
            assert use in USE_OF_KEY.values()
            for name in found:
                assert seen.setdefault(name.casefold(), use) == use, f"{prof.id}: {name}"


def test_language_is_chosen_from_the_folders_that_exist() -> None:
    outlook = get_profile("outlook")
    german = ["INBOX", "Gesendete Elemente", "Entwürfe", "Junk-E-Mail", "Work"]
    assert outlook.names_for_language(german) == {
        "\\Sent": "Gesendete Elemente", "\\Drafts": "Entwürfe", "\\Trash": "Gelöschte Elemente",
        "\\Junk": "Junk-E-Mail", "\\Archive": "Archiv"}
    english = outlook.names_for_language(["INBOX", "sent items", "Drafts"])  # case-insensitive
    assert english["\\Trash"] == "Deleted Items"
    # "Entwürfe" alone would say German, "Drafts" + "Archive" say English: the better match wins.
    assert outlook.names_for_language(["Entwürfe", "Drafts", "Archive"])["\\Sent"] == "Sent Items"
    # No match, or a tie: the first table in the file.
    assert outlook.names_for_language([])["\\Sent"] == "Sent Items"
    assert outlook.names_for_language(["Drafts", "Entwürfe"])["\\Sent"] == "Sent Items"
    gmx = get_profile("gmx")  # one language only
    assert gmx.names_for_language(["INBOX"]) == {
        "\\Sent": "Gesendet", "\\Drafts": "Entwürfe", "\\Trash": "Gelöscht", "\\Junk": "Spamverdacht"}
    assert get_profile("dovecot").names_for_language(["INBOX"])["\\Archive"] == "Archive"


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
    (lambda d: d["defaults"].update(rate="fast"), "rate 'fast' is not a rate"),
    (lambda d: d["defaults"].update(rate="0MB"), "rate '0MB' is not a rate"),
    (lambda d: d["defaults"].update(rate="2 parsecs"), "is not a rate"),
    (lambda d: d["defaults"].update(rate=2), "'rate' must be a str"),
    (lambda d: d["defaults"].update(connections=0), "at least 1"),
    (lambda d: d["folders"]["de"].update(sent="[Gmail]//Gesendet"), "empty level"),
    (lambda d: d["folders"]["de"].update(drafts="[Gmail]/Gesendet"), "is both sent and drafts"),
    (lambda d: d["folders"]["de"].update(junk="[Gmail]/Sent Mail"), "is both sent and junk"),
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
    assert "defaults: 4 connections; rate 20KB after 700MB" in result.out  # gmail's
    result = run_cli("providers", "--json")
    ids = [p["id"] for p in result.json()["providers"]]
    assert ids == [p.id for p in all_profiles()]
    assert "skips [G*]/Important, [G*]/Wichtig" in run_cli("providers").out, "globs print as names"
    gmail = next(p for p in result.json()["providers"] if p["id"] == "gmail")
    assert gmail["defaults"]["connections"] == 4 and gmail["defaults"]["rate"] == "20KB after 700MB"


def test_docs_providers_table_matches_profiles() -> None:
    """Fails when a preset changes and the docs/providers.md table is not regenerated."""
    text = PROVIDERS_DOC.read_text(encoding="utf-8")
    begin, end = "<!-- providers:begin -->\n", "<!-- providers:end -->"
    assert begin in text and end in text, "docs/providers.md lacks the providers table markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), (
        "docs/providers.md table is stale: regenerate with python -m migrate.config.profiles --markdown")


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


def test_a_preset_on_an_ip_address_keeps_the_address():
    """An IP (an SSH tunnel, a test server) is the server itself, never an address
    domain: the preset's defaults apply but the host is not rewritten."""
    ep = parse_endpoint("imap://me%40gmx.de@127.0.0.1:1143?tls=none&provider=gmx")
    assert (ep.host, ep.port, ep.user, ep.provider) == ("127.0.0.1", 1143, "me@gmx.de", "gmx")
    ep = parse_endpoint("imaps://me@10.1.2.3", provider="gmx")
    assert (ep.host, ep.port, ep.provider) == ("10.1.2.3", 993, "gmx")
    # a domain is still resolved as before
    assert parse_endpoint("imaps://me@mydomain.example?provider=gmx").host == "imap.gmx.net"
