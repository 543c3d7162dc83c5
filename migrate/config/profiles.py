"""Provider presets: the TOML files in ``profiles/``, parsed and validated.

Presets are data, not code, so adding a provider is a pull request with one
TOML file. The schema below is checked strictly (unknown keys are errors):
a typo in a preset would otherwise silently lose a setting. A preset shapes
defaults only; anything given on the command line or in a job wins.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrate.config.rates import parse_rate
from migrate.errors import UsageError

SPECIAL_KEYS = ("sent", "drafts", "trash", "junk", "archive", "all")
#: The RFC 6154 attribute each ``[folders.xx]`` key stands for.
USE_OF_KEY: dict[str, str] = {"sent": "\\Sent", "drafts": "\\Drafts", "trash": "\\Trash",
                              "junk": "\\Junk", "archive": "\\Archive", "all": "\\All"}
TLS_VALUES = ("implicit", "starttls")
LOGIN_VALUES = ("address", "localpart")
LIMIT_KEYS = ("max_connections", "append_limit_bytes", "daily_download_mb", "daily_upload_mb")
OAUTH2_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")

# key -> (type, required); nested tables are checked by their own functions.
_TOP: dict[str, tuple[type, bool]] = {
    "name": (str, True), "domains": (list, True), "login": (str, True), "notes": (str, False),
    "imap": (dict, False), "pop3": (dict, False), "limits": (dict, False),
    "defaults": (dict, False), "folders": (dict, False), "oauth2": (dict, False),
}
_SERVER: dict[str, tuple[type, bool]] = {
    "host": (str, False), "port": (int, True), "tls": (str, True), "delimiter": (str, False),
}
_DEFAULTS: dict[str, tuple[type, bool]] = {
    "connections": (int, False), "rate": (str, False), "exclude": (list, False),
}
_OAUTH2: dict[str, tuple[type, bool]] = {
    "mechanisms": (list, True), "authorization_url": (str, True), "token_url": (str, True),
    "scopes": (list, True), "device_authorization_url": (str, False), "revocation_url": (str, False),
    "client_id": (str, False), "client_secret": (str, False), "flow": (str, False),
}
_OAUTH2_URLS = ("authorization_url", "token_url", "device_authorization_url", "revocation_url")
#: How `mailmigrate auth login` signs a user in: RFC 8628 device grant, or the
#: authorization code grant with PKCE and a loopback redirect (RFC 7636, RFC 8252).
OAUTH2_FLOWS = ("device", "code")


@dataclass(frozen=True)
class ServerPreset:
    host: str | None
    port: int
    tls: str
    delimiter: str | None = None


@dataclass(frozen=True)
class Profile:
    """One provider preset; ``id`` is the file name without ``.toml``."""

    id: str
    name: str
    domains: tuple[str, ...]
    login: str
    notes: str = ""
    imap: ServerPreset | None = None
    pop3: ServerPreset | None = None
    limits: dict[str, int] = field(default_factory=dict)
    connections: int | None = None
    #: A ``--rate`` value (``migrate.ratelimit.parse_rate``), set only where the
    #: provider documents a bandwidth quota that a sustained rate keeps under.
    rate: str | None = None
    exclude: tuple[str, ...] = ()
    #: {language: {key: folder path}}, keys from SPECIAL_KEYS, in file order.
    folders: dict[str, dict[str, str]] = field(default_factory=dict)
    oauth2: dict[str, Any] | None = None

    def server(self, protocol: str) -> ServerPreset | None:
        return self.pop3 if protocol == "pop3" else self.imap

    def special_names(self) -> dict[str, tuple[str, ...]]:
        """{RFC 6154 use: every name this provider gives that folder, in any language}.

        A server that announces no special-use attributes (and an archive made
        from one) is recognised by these names; the first language table's
        name comes first.
        """
        out: dict[str, list[str]] = {}
        for names in self.folders.values():
            for key, name in names.items():
                seen = out.setdefault(USE_OF_KEY[key], [])
                if name.casefold() not in (n.casefold() for n in seen):
                    seen.append(name)
        return {use: tuple(names) for use, names in out.items()}

    def names_for_language(self, existing: Iterable[str]) -> dict[str, str]:
        """{use: name} in the language whose names best match ``existing`` folder names.

        The account's language is not announced anywhere, but the folders the
        provider already created tell it: a GMX account with "Gesendet" is a
        German one, so a missing Drafts folder should be "Entwürfe" too. On a
        tie or no match the first language table in the preset wins.
        """
        present = {name.casefold() for name in existing}
        best: dict[str, str] = {}
        best_score = -1
        for names in self.folders.values():
            score = sum(1 for name in names.values() if name.casefold() in present)
            if score > best_score:
                best, best_score = names, score
        return {USE_OF_KEY[key]: name for key, name in best.items()}

    def login_name(self, local: str, domain: str) -> str:
        """The user name this provider expects for ``local@domain``."""
        if "@" in local or self.login == "localpart":
            return local
        return f"{local}@{domain}"


def profiles_dir() -> Path:
    """``MAILMIGRATE_PROFILES_DIR``; else ``profiles/`` next to the package (a checkout or
    an editable install); else ``<prefix>/share/mailmigrate/profiles`` (a wheel's data-files)."""
    override = os.environ.get("MAILMIGRATE_PROFILES_DIR")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parents[2] / "profiles"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "mailmigrate" / "profiles"


def _check_table(where: str, table: dict[str, Any], schema: dict[str, tuple[type, bool]]) -> None:
    for key in table:
        if key not in schema:
            raise UsageError(f"{where}: unknown key {key!r}; allowed: {', '.join(schema)}")
    for key, (kind, required) in schema.items():
        if key not in table:
            if required:
                raise UsageError(f"{where}: missing required key {key!r}")
            continue
        value = table[key]
        # bool is an int in Python; a preset saying port = true is a typo.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"{where}: {key!r} must be a {kind.__name__}, not {value!r}")


def _str_list(where: str, value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: every entry must be a non-empty string")
    return tuple(value)


def _server(where: str, table: dict[str, Any], protocol: str) -> ServerPreset:
    _check_table(where, table, _SERVER)
    if table["tls"] not in TLS_VALUES:
        raise UsageError(f"{where}: tls must be one of {', '.join(TLS_VALUES)}")
    if not 0 < table["port"] < 65536:
        raise UsageError(f"{where}: port {table['port']} out of range")
    if protocol == "pop3" and "delimiter" in table:
        raise UsageError(f"{where}: POP3 has no folders, so no delimiter")
    if "delimiter" in table and len(table["delimiter"]) != 1:
        raise UsageError(f"{where}: delimiter must be one character")
    return ServerPreset(host=table.get("host"), port=table["port"], tls=table["tls"],
                        delimiter=table.get("delimiter"))


def validate(pid: str, data: dict[str, Any]) -> Profile:
    """Check ``data`` (a parsed preset) against the schema; return the Profile."""
    where = f"profile {pid!r}"
    _check_table(where, data, _TOP)
    if data["login"] not in LOGIN_VALUES:
        raise UsageError(f"{where}: login must be one of {', '.join(LOGIN_VALUES)}")
    domains = tuple(d.lower() for d in _str_list(f"{where} domains", data["domains"]))
    if "imap" not in data and "pop3" not in data:
        raise UsageError(f"{where}: needs an [imap] or a [pop3] table")
    imap = _server(f"{where} [imap]", data["imap"], "imap") if "imap" in data else None
    pop3 = _server(f"{where} [pop3]", data["pop3"], "pop3") if "pop3" in data else None
    limits = data.get("limits", {})
    for key, value in limits.items():
        if key not in LIMIT_KEYS:
            raise UsageError(f"{where} [limits]: unknown key {key!r}; allowed: {', '.join(LIMIT_KEYS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UsageError(f"{where} [limits]: {key} must be a positive integer")
    defaults = data.get("defaults", {})
    _check_table(f"{where} [defaults]", defaults, _DEFAULTS)
    exclude = _str_list(f"{where} [defaults] exclude", defaults.get("exclude", []))
    if "connections" in defaults and defaults["connections"] < 1:
        raise UsageError(f"{where} [defaults]: connections must be at least 1")
    rate = defaults.get("rate")
    if rate is not None:
        try:
            parse_rate(rate)
        except UsageError as exc:
            raise UsageError(f"{where} [defaults]: rate {rate!r} is not a rate ({exc})") from None
    folders = _folders(where, data.get("folders", {}))
    oauth2 = data.get("oauth2")
    if oauth2 is not None:
        _check_table(f"{where} [oauth2]", oauth2, _OAUTH2)
        mechs = _str_list(f"{where} [oauth2] mechanisms", oauth2["mechanisms"])
        if not mechs or any(m not in OAUTH2_MECHANISMS for m in mechs):
            raise UsageError(f"{where} [oauth2]: mechanisms from {', '.join(OAUTH2_MECHANISMS)}")
        for key in _OAUTH2_URLS:
            if key in oauth2 and not _oauth2_url_ok(oauth2[key]):
                raise UsageError(f"{where} [oauth2]: {key} must be an https:// URL "
                                 "(http:// only to a loopback address)")
        _str_list(f"{where} [oauth2] scopes", oauth2["scopes"])
        flow = oauth2.get("flow", "device" if "device_authorization_url" in oauth2 else "code")
        if flow not in OAUTH2_FLOWS:
            raise UsageError(f"{where} [oauth2]: flow must be one of {', '.join(OAUTH2_FLOWS)}")
        if flow == "device" and "device_authorization_url" not in oauth2:
            raise UsageError(f"{where} [oauth2]: flow = \"device\" needs a device_authorization_url")
    return Profile(id=pid, name=data["name"], domains=domains, login=data["login"],
                   notes=data.get("notes", ""), imap=imap, pop3=pop3, limits=dict(limits),
                   connections=defaults.get("connections"), rate=rate, exclude=exclude,
                   folders=folders, oauth2=oauth2)


def _oauth2_url_ok(url: str) -> bool:
    """https:// anywhere; plain http:// only to this machine (a self-hosted or test
    identity provider on loopback), where nothing crosses a network."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    try:  # (not endpoints.is_loopback: endpoints imports this module)
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    return parts.scheme == "http" and loopback


def _folders(where: str, tables: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The ``[folders.xx]`` tables, checked: names are '/'-paths as our archives show
    them, and one name never stands for two uses (the mapper could not tell which)."""
    folders: dict[str, dict[str, str]] = {}
    use_of_name: dict[str, str] = {}
    for lang, names in tables.items():
        if not (isinstance(names, dict) and len(lang) == 2 and lang.isalpha() and lang.islower()):
            raise UsageError(f"{where} [folders.{lang}]: expected a table per two-letter language")
        for key, value in names.items():
            if key not in SPECIAL_KEYS or not isinstance(value, str) or not value:
                raise UsageError(f"{where} [folders.{lang}]: bad entry {key!r}; "
                                 f"allowed: {', '.join(SPECIAL_KEYS)} with a folder name")
            if "" in value.split("/"):
                raise UsageError(f"{where} [folders.{lang}]: {key} = {value!r} has an empty level; "
                                 "write a '/'-separated path such as 'INBOX/Sent'")
            other = use_of_name.setdefault(value.casefold(), key)
            if other != key:
                raise UsageError(f"{where} [folders.{lang}]: {value!r} is both {other} and {key}")
        folders[lang] = dict(names)
    return folders


def load_file(path: Path) -> Profile:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"profile {path}: not valid TOML ({exc})") from None
    return validate(path.stem, data)


@cache
def _load_all(directory: Path) -> tuple[Profile, ...]:
    if not directory.is_dir():
        raise UsageError(f"provider presets not found at {directory}; "
                         "set MAILMIGRATE_PROFILES_DIR to the profiles/ folder")
    profiles = tuple(load_file(p) for p in sorted(directory.glob("*.toml")))
    seen: dict[str, str] = {}
    for prof in profiles:
        for domain in prof.domains:
            if domain in seen:
                raise UsageError(f"domain {domain} claimed by both {seen[domain]!r} and {prof.id!r}")
            seen[domain] = prof.id
    return profiles


def all_profiles() -> tuple[Profile, ...]:
    return _load_all(profiles_dir())


def get_profile(pid: str) -> Profile:
    for prof in all_profiles():
        if prof.id == pid.lower():
            return prof
    known = ", ".join(p.id for p in all_profiles())
    raise UsageError(f"unknown provider {pid!r}; known: {known} (see `mailmigrate providers`)")


def profile_for_domain(domain: str) -> Profile | None:
    """The preset whose address domains include ``domain`` (e.g. gmx.de -> gmx)."""
    domain = domain.lower().rstrip(".")
    for prof in all_profiles():
        if domain in prof.domains:
            return prof
    return None


def profile_for_host(host: str) -> Profile | None:
    """The preset whose IMAP or POP3 server is ``host`` (imap.gmx.net -> gmx).

    A URL naming the server rather than the address domain still describes
    that provider, so its limits and folder names apply all the same.
    """
    host = host.lower().rstrip(".")
    if not host:
        return None
    for prof in all_profiles():
        for server in (prof.imap, prof.pop3):
            if server is not None and server.host is not None and server.host.lower() == host:
                return prof
    return None


@dataclass(frozen=True)
class FolderHints:
    """What the presets at both ends of a transfer tell ``FolderMapper``."""

    #: {use: names} to recognise folders by, on either side (``extra_names=``).
    extra_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: {use: name} for a special folder the destination lacks (``create_names=``).
    create_names: dict[str, str] = field(default_factory=dict)


def folder_hints(source: Profile | None, dest: Profile | None,
                 dest_folder_names: Iterable[str]) -> FolderHints:
    """The mapper's hints for a copy or restore from ``source``'s provider to ``dest``'s.

    The source preset's names let its folders be recognised where its server
    (or an archive made from it) has no attributes; the destination preset's
    names do the same on the other side and, in the language its existing
    folders are in, say what to call a special folder that must be created.
    Either preset may be unknown (None); then it contributes nothing.
    """
    extra: dict[str, list[str]] = {}
    for prof in (source, dest):
        if prof is None:
            continue
        for use, names in prof.special_names().items():
            known = extra.setdefault(use, [])
            known.extend(n for n in names if n.casefold() not in {k.casefold() for k in known})
    create = dest.names_for_language(dest_folder_names) if dest is not None else {}
    return FolderHints({use: tuple(names) for use, names in extra.items()}, create)


def markdown_table(profiles: tuple[Profile, ...] | None = None) -> str:
    """The providers table of docs/providers.md, generated so the docs and presets cannot drift."""
    rows = ["| id | provider | IMAP | POP3 | OAuth2 | address domains |",
            "|---|---|---|---|---|---|"]
    for p in profiles if profiles is not None else all_profiles():
        def cell(s: ServerPreset | None) -> str:
            if s is None:
                return "–"
            return f"`{s.host or '(your host)'}:{s.port}` {s.tls}"
        oauth = ", ".join(p.oauth2["mechanisms"]) if p.oauth2 else "–"
        domains = ", ".join(p.domains) if p.domains else "(own domains: `--provider`)"
        rows.append(f"| `{p.id}` | {p.name} | {cell(p.imap)} | {cell(p.pop3)} | {oauth} | {domains} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m migrate.config.profiles --markdown
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_table())
    else:
        sys.stderr.write("usage: python -m migrate.config.profiles --markdown\n")
        sys.exit(2)
