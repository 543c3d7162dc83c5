"""The interactive ``jobs add``: questions a person can answer, asked until answered.

Each question re-asks on a typo instead of ending the wizard; a choice it cannot
honour (the keyring without its extra) is said and asked again, never dropped;
a password source that cannot work where the job will run (an environment
variable under cron or systemd) is warned about, and a file or the keyring is
offered instead. Secrets the wizard is given are kept in memory until the login
test passes (``jobs add`` stores them then), so a failed set-up leaves nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import platformdirs
import typer

from migrate.config.endpoints import Endpoint, parse_endpoint
from migrate.config.jobs import Credential, Job, OptionValue, config_dir
from migrate.config.profiles import get_profile, profile_for_domain
from migrate.errors import UsageError

T = TypeVar("T")

#: Said wherever the keyring is asked for but its package is missing.
KEYRING_MISSING = ("the system keyring needs the optional keyring extra: install it with "
                   "`./scripts/install keyring` (or `pipx inject mailmigrate keyring`)")
ENV_WARNING = ("cron and systemd timers start with almost no environment, so ${var} will not be "
               "set when the job runs on a schedule (`mailmigrate schedule` refuses such a job); "
               "a password file or the keyring works there")


def keyring_available() -> bool:
    return importlib.util.find_spec("keyring") is not None


@dataclass
class WizardResult:
    job: Job
    #: Secrets to store once the login test passed, by where they go: the keyring
    #: account (method "keyring") or the password file's path (method "file").
    secrets: dict[str, str] = field(default_factory=dict)


def read_secret(prompt: str) -> str:
    """A secret from the TTY (no echo), else the first line of stdin (for scripts)."""
    import getpass

    secret = getpass.getpass(f"{prompt}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError(f"no secret given for {prompt}")
    return secret


def ask(question: str, parse: Callable[[str], T], default: str | None = None) -> T:
    """Ask until ``parse`` accepts the answer; its UsageError is shown and the question repeated."""
    while True:
        answer = typer.prompt(question, default=default) if default is not None \
            else typer.prompt(question)
        try:
            return parse(str(answer))
        except UsageError as exc:
            typer.echo(f"  {exc}; try again")


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(answer: str) -> str:
        picked = answer.strip().lower()
        if picked not in options:
            raise UsageError(f"{answer.strip()!r} is not one of {', '.join(options)}")
        return picked
    return parse


def globs(answer: str) -> list[str]:
    """"Work, Lists/*" -> ["Work", "Lists/*"]; "" or "all" -> []."""
    text = answer.strip()
    if text.lower() in ("", "all", "none", "-"):
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def retention(answer: str) -> dict[str, OptionValue]:
    """never / now / N (days) -> drain's --delete / --delete-older-than options."""
    text = answer.strip().lower()
    if text in ("never", "no", "keep"):
        return {}
    if text in ("now", "at once", "yes"):
        return {"delete": True}
    if text.isdigit() and int(text) > 0:
        return {"delete-older-than": text}
    raise UsageError(f"{answer.strip()!r}: answer never, now, or a number of days like 14")


def protocol_of(job: Job, url: str) -> str:
    return "pop3" if job.command == "drain" and url == job.source else "imap"


def endpoint_of(job: Job, url: str) -> Endpoint:
    """The endpoint a run of ``job`` logs in to at ``url``; the job's provider
    preset belongs to its main server only, as in :meth:`Job.argv` (a copy's
    destination is usually another provider)."""
    insecure = bool(job.options.get("insecure", False))
    cafile = job.options.get("cafile")
    return parse_endpoint(url, insecure=insecure, cafile=str(cafile) if cafile else None,
                          protocols=(protocol_of(job, url),),
                          provider=job.provider if url == job.server_url else None)


def address_url(answer: str, command: str) -> tuple[str, str | None]:
    """Wizard input -> (URL, provider): a URL passes through; an address becomes
    ``imaps://local@domain`` (pop3s for drain), asking for the server when no
    preset claims the domain."""
    answer = answer.strip()
    if "://" in answer:
        return answer, None
    local, at, domain = answer.rpartition("@")
    if not at or not local or not domain:
        raise UsageError(f"{answer!r} is neither an e-mail address nor a URL like imaps://user@host")
    scheme = "pop3s" if command == "drain" else "imaps"
    if profile_for_domain(domain) is not None:
        return f"{scheme}://{quote(local, safe='')}@{domain}", None
    user = quote(answer, safe="")

    def server(where: str) -> tuple[str, str | None]:
        where = where.strip()
        if "." not in where:
            get_profile(where)  # an unknown id: UsageError naming the known ones
            return f"{scheme}://{user}@{domain}", where.lower()
        return f"{scheme}://{user}@{where}", None

    return ask("No preset knows this domain. Provider id (see `mailmigrate providers`) "
               "or server host name", server)


def wizard(name: str) -> WizardResult:
    """The interactive `jobs add`: asks what a person knows (an address, folders,
    how long mail stays on the server), shows what the presets resolved, and picks
    a way to keep the password that works where the job will run."""
    typer.echo(f"Setting up job {name!r}. Press Enter to take the [default].")
    command = ask("What should it do: backup (IMAP) or drain (POP3)", choice(("backup", "drain")),
                  default="backup")

    def account(answer: str) -> tuple[str, str | None, Endpoint]:
        url, provider = address_url(answer, command)
        probe = Job(name, command, url, "-", Credential("env", "-"), provider=provider)
        return url, provider, endpoint_of(probe, url)

    url, provider, endpoint = ask("Your e-mail address (or a server URL)", account)
    profile = get_profile(endpoint.provider) if endpoint.provider else None
    preset = f" ({profile.name})" if profile else ""
    typer.echo(f"Server: {endpoint.host}:{endpoint.port}{preset}, user {endpoint.user}")
    default_dest = str(Path(platformdirs.user_data_dir("mailmigrate")) / f"{name}.sqlite")
    dest = typer.prompt("Archive (a .sqlite file, or a directory for mbox files)", default=default_dest)
    job = Job(name, command, url, str(dest), Credential("env", "-"), provider=provider)
    if command == "backup":
        job.folders = ask("Folders to back up (globs separated by commas, 'Work' includes "
                          "its subfolders)", globs, default="all")
        skipped = ", ".join(profile.exclude) if profile and profile.exclude else "none"
        if not job.folders:
            job.exclude = ask("Folders to skip", globs, default=skipped)
    else:
        job.options.update(ask("Delete mail from the server once it is archived: never, now, "
                               "or after how many days", retention, default="never"))
    result = WizardResult(job)
    from migrate.config.oauth.tokens import job_credential

    signed_in = job_credential(endpoint, None)
    if signed_in is not None:
        typer.echo(f"Signed in with OAuth2 as {signed_in.value} (`mailmigrate auth login`): "
                   "the job uses that")
        job.credentials = signed_in
        return result
    job.credentials = _ask_credential(name, endpoint, result.secrets)
    return result


def _ask_credential(name: str, endpoint: Endpoint, secrets: dict[str, str]) -> Credential:
    methods = ("keyring", "file", "command", "oauth2", "env")
    default = "keyring" if keyring_available() else "file"
    account = f"{endpoint.user}@{endpoint.host}"
    while True:
        method = ask(f"Where does the password come from ({', '.join(methods)})", choice(methods),
                     default=default)
        if method == "keyring" and not keyring_available():
            typer.echo(f"  {KEYRING_MISSING}; choose another")
            default = "file"
            continue
        break
    if method == "keyring":
        secrets[account] = read_secret(f"Password for {account} (kept in the system keyring)")
        return Credential("keyring", account)
    if method == "file":
        default_file = config_dir() / f"{name}.password"
        path = Path(typer.prompt("File holding it (created 0600 if missing)",
                                 default=str(default_file))).expanduser().resolve()
        if not path.exists():
            secrets[str(path)] = read_secret(f"Password for {account} (written to {path})")
        return Credential("file", str(path))
    if method == "command":
        return Credential("command", typer.prompt("Command printing it (e.g. pass show mail/me)"))
    if method == "oauth2":
        return Credential("oauth2", typer.prompt("Command printing an OAuth2 access token"))
    var = typer.prompt("Environment variable holding it")
    typer.echo("  warning: " + ENV_WARNING.replace("${var}", f"${var}"))
    return Credential("env", var)
