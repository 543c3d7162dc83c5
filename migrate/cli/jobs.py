"""providers, jobs add/list/show/remove, run, schedule: set up once, then forget.

``jobs add`` is a setup wizard on a TTY and a plain command elsewhere; either
way it tests the login before it saves anything, so a job that exists is a
job that worked once. ``run`` is built for cron and systemd: one lock per job
(a second start exits 6 at once), quiet without a TTY, an optional log file,
and a JSON line per run in the job's history.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import platformdirs
import typer

from migrate.cli.common import (
    CafileOpt,
    ExcludeOpt,
    FolderOpt,
    InsecureOpt,
    JsonOpt,
    QuietOpt,
    app,
    run_guarded,
)
from migrate.config.credentials import KEYRING_SERVICE, keyring_delete, keyring_set
from migrate.config.endpoints import Endpoint, PasswordSource, parse_endpoint
from migrate.config.jobs import (
    COMMANDS,
    DEST_SECRET_ENV,
    SECRET_ENV,
    Credential,
    Job,
    OptionValue,
    append_history,
    check_name,
    job_state_dir,
    list_job_names,
    load_job,
    read_history,
    remove_job,
    save_job,
)
from migrate.config.profiles import all_profiles, get_profile, profile_for_domain
from migrate.engine.progress import human_bytes
from migrate.errors import EXIT_OK, ArchiveLockedError, JobRunningError, UsageError
from migrate.stores.lock import ArchiveLock

jobs_app = typer.Typer(help="Saved jobs: add (a setup wizard on a TTY), list, show, remove.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")


# -- providers ----------------------------------------------------------------------------
@app.command()
def providers(as_json: JsonOpt = False) -> None:
    """List the provider presets (profiles/): servers, OAuth2 support, address domains."""

    def body() -> int:
        profs = all_profiles()
        if as_json:
            typer.echo(json.dumps([{
                "id": p.id, "name": p.name, "domains": list(p.domains),
                "imap": None if p.imap is None else vars(p.imap),
                "pop3": None if p.pop3 is None else vars(p.pop3),
                "oauth2": p.oauth2["mechanisms"] if p.oauth2 else [], "limits": p.limits,
                "defaults": {"connections": p.connections, "rate": p.rate,
                             "exclude": list(p.exclude)},
                "notes": p.notes} for p in profs], ensure_ascii=False))
            return EXIT_OK
        width = max(len(p.id) for p in profs)
        for p in profs:
            imap = f"{p.imap.host or '(your host)'}:{p.imap.port}" if p.imap else "-"
            oauth = " oauth2" if p.oauth2 else ""
            typer.echo(f"{p.id:<{width}}  {p.name:<28} {imap:<32}{oauth}")
            if p.domains:
                typer.echo(f"{'':<{width}}  {', '.join(p.domains)}")
            shaped = [f"{p.connections} connections" if p.connections else "",
                      f"rate {p.rate}" if p.rate else "",
                      f"skips {', '.join(p.exclude)}" if p.exclude else ""]
            if any(shaped):
                typer.echo(f"{'':<{width}}  defaults: {'; '.join(x for x in shaped if x)}")
        return EXIT_OK

    run_guarded(body)


# -- credentials --------------------------------------------------------------------------
def password_for(cred: Credential, label: str) -> PasswordSource:
    if cred.method == "env":
        return PasswordSource(env=cred.value, prompt_label=label)
    if cred.method == "file":
        return PasswordSource(file=Path(cred.value), prompt_label=label)
    if cred.method == "command":
        return PasswordSource(command=cred.value, prompt_label=label)
    if cred.method == "keyring":
        return PasswordSource(keyring=(KEYRING_SERVICE, cred.value), prompt_label=label)
    if cred.method == "oauth2":
        return PasswordSource(oauth2_command=cred.value, prompt_label=label)
    return PasswordSource.literal(cred.value)


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


def test_login(endpoint: Endpoint, password: PasswordSource) -> None:
    """Log in and out once; raises AuthError / ConnectError like a real run would."""
    if endpoint.protocol == "pop3":
        from migrate.stores.pop3 import Pop3Session

        Pop3Session(endpoint, password, 30.0, "auto").close()
    else:
        from migrate.stores.imap import connect_imap

        client = connect_imap(endpoint, password, timeout=30.0)
        with contextlib.suppress(Exception):
            client.logout()


def read_secret(prompt: str) -> str:
    """A secret from the TTY (no echo), else the first line of stdin (for scripts)."""
    secret = getpass.getpass(f"{prompt}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError(f"no secret given for {prompt}")
    return secret


def choose_credential(*, env: str | None, file: Path | None, command: str | None,
                      use_keyring: bool, oauth2: str | None, plaintext: bool,
                      account: str, label: str, secrets: dict[str, str]) -> Credential | None:
    """The one credential the flags name; keyring/plaintext secrets are read now and
    kept in ``secrets`` until the login test passed (only then stored)."""
    given = [m for m, v in (("env", env), ("file", file), ("command", command),
                            ("keyring", use_keyring), ("oauth2", oauth2),
                            ("plaintext", plaintext)) if v]
    if len(given) > 1:
        raise UsageError(f"give one way to get the {label}, not {' and '.join(given)}")
    if not given:
        return None
    method = given[0]
    if method == "env":
        return Credential("env", str(env))
    if method == "file":
        return Credential("file", str(Path(str(file)).expanduser().resolve()))
    if method == "command":
        return Credential("command", str(command))
    if method == "oauth2":
        return Credential("oauth2", str(oauth2))
    secret = read_secret(f"{label} for {account}")
    if method == "keyring":
        secrets[account] = secret
        return Credential("keyring", account)
    return Credential("plaintext", secret)


def test_password(cred: Credential, secrets: dict[str, str], label: str) -> PasswordSource:
    if cred.method == "keyring" and cred.value in secrets:
        return PasswordSource.literal(secrets[cred.value])
    return password_for(cred, label)


# -- jobs add -----------------------------------------------------------------------------
def parse_options(pairs: list[str]) -> dict[str, OptionValue]:
    out: dict[str, OptionValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UsageError(f"bad --option {pair!r}: expected KEY=VALUE, e.g. since=2024-01-01")
        parsed: OptionValue = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        prev = out.get(key)
        if isinstance(prev, str):
            out[key] = [prev, value]
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out[key] = parsed
    return out


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
    where = typer.prompt("No preset knows this domain. Provider id (see `mailmigrate providers`) "
                         "or server host name").strip()
    user = quote(answer, safe="")
    if "." not in where:
        get_profile(where)
        return f"{scheme}://{user}@{domain}", where.lower()
    return f"{scheme}://{user}@{where}", None


def wizard(name: str) -> tuple[Job, dict[str, str]]:
    """The interactive `jobs add`: asks what a person knows (an address, a folder),
    shows what the presets resolved, and picks a safe way to keep the password."""
    typer.echo(f"Setting up job {name!r}. Press Enter to take the [default].")
    command = typer.prompt("What should it do: backup (IMAP) or drain (POP3)", default="backup")
    if command not in ("backup", "drain"):
        raise UsageError("the wizard sets up backup and drain jobs; use flags for restore and copy")
    url, provider = address_url(typer.prompt("Your e-mail address (or a server URL)"), command)
    probe = Job(name, command, url, "-", Credential("env", "-"), provider=provider)
    endpoint = endpoint_of(probe, url)
    preset = f" ({get_profile(endpoint.provider).name})" if endpoint.provider else ""
    typer.echo(f"Server: {endpoint.host}:{endpoint.port}{preset}, user {endpoint.user}")
    default_dest = str(Path(platformdirs.user_data_dir("mailmigrate")) / f"{name}.sqlite")
    dest = typer.prompt("Archive (a .sqlite file, or a directory for mbox files)", default=default_dest)
    methods = ["keyring", "env", "file", "command", "oauth2"]
    try:
        import keyring  # noqa: F401
    except ImportError:
        methods.remove("keyring")
    method = typer.prompt(f"Where does the password come from ({', '.join(methods)})",
                          default=methods[0])
    secrets: dict[str, str] = {}
    account = f"{endpoint.user}@{endpoint.host}"
    if method == "keyring" and "keyring" in methods:
        secrets[account] = read_secret(f"Password for {account} (kept in the system keyring)")
        cred = Credential("keyring", account)
    elif method == "env":
        cred = Credential("env", typer.prompt("Environment variable holding it"))
    elif method == "file":
        cred = Credential("file", str(Path(typer.prompt("File holding it")).expanduser().resolve()))
    elif method == "command":
        cred = Credential("command", typer.prompt("Command printing it"))
    elif method == "oauth2":
        cred = Credential("oauth2", typer.prompt("Command printing an OAuth2 access token"))
    else:
        raise UsageError(f"unknown password source {method!r}; one of {', '.join(methods)}")
    job = Job(name, command, url, dest, cred, provider=provider)
    return job, secrets


@jobs_app.command("add")
def jobs_add(
    name: Annotated[str, typer.Argument(help="A name for the job (letters, digits, . _ -).")],
    command: Annotated[str, typer.Option("--command", "-c", help="backup, drain, restore or copy.")
                       ] = "backup",
    source: Annotated[str | None, typer.Option(
        help="Where mail comes from: imaps://me@gmx.de, pop3s://..., or an archive for restore.")] = None,
    dest: Annotated[str | None, typer.Option(
        "--dest", "--archive", help="Where it goes: an archive path, or imaps://... for restore/copy.")
                    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider preset id (see `providers`).")] = None,
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", metavar="KEY=VALUE",
        help="Any other long option of the command, e.g. since=2024-01-01 (repeatable).")] = None,
    password_env: Annotated[str | None, typer.Option(
        metavar="VAR", help="At each run, read the password from this environment variable "
        "(it must be set where the job runs: cron and systemd start with almost none).")] = None,
    password_file: Annotated[Path | None, typer.Option(
        metavar="PATH", help="At each run, read the password from this file (first line).")] = None,
    password_command: Annotated[str | None, typer.Option(
        metavar="CMD", help="At each run, run CMD; its output is the password "
        "(e.g. 'pass show mail/me').")] = None,
    use_keyring: Annotated[bool, typer.Option(
        "--keyring", help="Keep the password in the system keyring (asked for now).")] = False,
    oauth2_token_command: Annotated[str | None, typer.Option(
        metavar="CMD", help="OAuth2: a command printing an access token for the source "
        "(for restore: the destination).")] = None,
    store_plaintext_password: Annotated[bool, typer.Option(
        help="Write the password itself into the job file (mode 0600). Not recommended.")] = False,
    dest_password_env: Annotated[str | None, typer.Option(
        metavar="VAR", help="copy: the destination's password from this environment variable.")
    ] = None,
    dest_password_file: Annotated[Path | None, typer.Option(
        metavar="PATH", help="copy: the destination's password from this file.")] = None,
    dest_password_command: Annotated[str | None, typer.Option(
        metavar="CMD", help="copy: the destination's password from this command's output.")] = None,
    dest_oauth2_token_command: Annotated[str | None, typer.Option(
        metavar="CMD", help="copy: OAuth2 for the destination, a command printing its access "
        "token (never taken from --oauth2-token-command).")] = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    no_test: Annotated[bool, typer.Option("--no-test", help="Save without testing the login.")
                       ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing job.")] = False,
) -> None:
    """Save a job. On a TTY without --source/--dest it asks, like a setup wizard.

    The login is tested before anything is saved; a password is never written
    into the job file unless --store-plaintext-password says so."""

    def body() -> int:
        check_name(name)
        if command not in COMMANDS:
            raise UsageError(f"--command must be one of {', '.join(COMMANDS)}")
        options = parse_options(option or [])
        if insecure:
            options["insecure"] = True
        if cafile:
            options["cafile"] = str(cafile.expanduser().resolve())
        secrets: dict[str, str] = {}
        if source is None or dest is None:
            if not sys.stdin.isatty():
                raise UsageError("jobs add needs --source and --dest (or a terminal to ask on)")
            job, secrets = wizard(name)
            job.options.update(options)
            job.folders, job.exclude = list(folder or []), list(exclude or [])
        else:
            server_url = dest if command == "restore" else source
            probe = Job(name, command, source, dest, Credential("env", "-"), provider=provider,
                        options=options)
            account_ep = endpoint_of(probe, server_url)
            cred = choose_credential(
                env=password_env, file=password_file, command=password_command,
                use_keyring=use_keyring, oauth2=oauth2_token_command,
                plaintext=store_plaintext_password,
                account=f"{account_ep.user}@{account_ep.host}", label="password", secrets=secrets)
            if cred is None:
                raise UsageError("say how to get the password: --password-env, --password-file, "
                                 "--password-command, --keyring or --oauth2-token-command")
            dest_cred = None
            if command == "copy":
                dest_ep = parse_endpoint(dest, insecure=insecure)
                dest_cred = choose_credential(
                    env=dest_password_env, file=dest_password_file, command=dest_password_command,
                    use_keyring=False, oauth2=dest_oauth2_token_command, plaintext=False,
                    account=f"{dest_ep.user}@{dest_ep.host}", label="destination password",
                    secrets=secrets)
                if dest_cred is None:
                    raise UsageError("say how to get the destination's password: "
                                     "--dest-password-env, --dest-password-file, "
                                     "--dest-password-command or --dest-oauth2-token-command")
            job = Job(name, command, source, dest, cred, dest_cred, provider=provider,
                      folders=list(folder or []), exclude=list(exclude or []), options=options)
        job.validate()
        if job.command in ("backup", "drain"):
            job.destination = str(Path(job.destination).expanduser().resolve()) \
                if ":" not in job.destination else job.destination
        server = endpoint_of(job, job.server_url)
        if not job.provider and server.provider:
            job.provider = server.provider
        if job.provider and not job.folders and not job.exclude and job.command == "backup":
            job.exclude = list(get_profile(job.provider).exclude)  # a preset default; flags win
        if not no_test:
            test_login(server, test_password(job.credentials, secrets, "password"))
            if job.command == "copy" and job.dest_credentials is not None:
                test_login(endpoint_of(job, job.destination),
                           test_password(job.dest_credentials, secrets, "destination password"))
            typer.echo(f"Login OK: {server.user} at {server.host}:{server.port}")
        if job.path.exists() and not force:
            raise UsageError(f"job {name!r} exists already ({job.path}); remove it or pass --force")
        for account, secret in secrets.items():
            keyring_set(KEYRING_SERVICE, account, secret)
        path = save_job(job, overwrite=force)
        typer.echo(f"Saved job {name!r} to {path}")
        typer.echo(f"Run it:      mailmigrate run {name}")
        typer.echo(f"Every night: mailmigrate schedule {name} --daily 02:30 --install")
        return EXIT_OK

    run_guarded(body)


@jobs_app.command("list")
def jobs_list(as_json: JsonOpt = False) -> None:
    """List saved jobs with their last run."""

    def body() -> int:
        rows = []
        for name in list_job_names():
            job = load_job(name)
            runs = read_history(name, 1)
            rows.append((job, runs[-1] if runs else None))
        if as_json:
            typer.echo(json.dumps([{"name": j.name, "command": j.command, "source": j.source,
                                    "destination": j.destination, "last_run": r}
                                   for j, r in rows], ensure_ascii=False))
            return EXIT_OK
        if not rows:
            typer.echo("no jobs yet; create one with `mailmigrate jobs add NAME`")
        for job, latest in rows:
            when = (f"last run {latest['started']} exit {latest['exit_code']}" if latest
                    else "never run")
            typer.echo(f"{job.name}  {job.command} {job.source} -> {job.destination}  ({when})")
        return EXIT_OK

    run_guarded(body)


def _shown(cred: Credential | None) -> dict[str, str] | None:
    """A credential as `jobs show --json` prints it: the method and where the
    secret comes from (a variable, path, command), never a stored password."""
    if cred is None:
        return None
    return {"method": cred.method, "value": "(hidden)" if cred.method == "plaintext" else cred.value}


@jobs_app.command("show")
def jobs_show(
    name: Annotated[str, typer.Argument(help="The job.")],
    last: Annotated[int, typer.Option(help="How many past runs to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Show a job's settings (never a secret) and its last runs."""

    def body() -> int:
        job = load_job(name)
        history = read_history(name, last)
        if as_json:
            typer.echo(json.dumps({"name": job.name, "command": job.command, "source": job.source,
                                   "destination": job.destination, "provider": job.provider,
                                   "folders": job.folders, "exclude": job.exclude,
                                   "options": job.options, "credentials": _shown(job.credentials),
                                   "dest_credentials": _shown(job.dest_credentials),
                                   "history": history}, ensure_ascii=False))
            return EXIT_OK
        typer.echo(f"job:         {job.name}  ({job.path})")
        typer.echo(f"command:     {job.command}")
        typer.echo(f"source:      {job.source}")
        typer.echo(f"destination: {job.destination}")
        if job.provider:
            typer.echo(f"provider:    {job.provider}")
        for label, values in (("folders", job.folders), ("exclude", job.exclude)):
            if values:
                typer.echo(f"{label + ':':<13}{', '.join(values)}")
        for label, cred in (("password:", job.credentials), ("dest login:", job.dest_credentials)):
            if cred is not None:
                shown = "(stored in the job file)" if cred.method == "plaintext" else cred.value
                typer.echo(f"{label:<13}{cred.method} {shown}")
        for key, value in sorted(job.options.items()):
            typer.echo(f"option:      --{key} {value}")
        typer.echo(f"last runs ({len(history)}):" if history else "last runs: none")
        for run_ in reversed(history):
            errors = run_.get("errors") or []
            typer.echo(f"  {run_['started']}  exit {run_['exit_code']}  "
                       f"{run_.get('new_messages', 0)} messages  "
                       f"{human_bytes(int(run_.get('new_bytes', 0)))}  "
                       f"{run_['duration_s']:.1f} s  {len(errors)} errors"
                       + (f": {errors[0]}" if errors else ""))
        return EXIT_OK

    run_guarded(body)


@jobs_app.command("remove")
def jobs_remove(
    name: Annotated[str, typer.Argument(help="The job.")],
    keep_keyring: Annotated[bool, typer.Option(help="Leave the keyring entry in place.")] = False,
) -> None:
    """Delete a saved job (its archive and history stay)."""

    def body() -> int:
        job = remove_job(name)
        if job.credentials.method == "keyring" and not keep_keyring:
            still_used = any(load_job(n).credentials == job.credentials for n in list_job_names())
            if not still_used:
                keyring_delete(KEYRING_SERVICE, job.credentials.value)
        typer.echo(f"removed job {name!r}")
        return EXIT_OK

    run_guarded(body)


# -- run ----------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def child_env(job: Job) -> dict[str, str]:
    """Our environment plus resolved keyring/plaintext secrets (never in argv)."""
    env = dict(os.environ)
    for cred, var in ((job.credentials, SECRET_ENV), (job.dest_credentials, DEST_SECRET_ENV)):
        if cred is not None and cred.method in ("keyring", "plaintext"):
            env[var] = password_for(cred, "password").get()
    return env


def _error_lines(text: str) -> list[str]:
    return [ln.removeprefix("mailmigrate: error: ") for ln in text.splitlines()
            if ln.startswith("mailmigrate: error: ")][-5:]


@app.command("run")
def run_job(
    name: Annotated[str, typer.Argument(help="The saved job to run.")],
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", help="Append progress lines and errors to this file.")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a saved job: safe under cron/systemd (one run at a time, quiet without a TTY)."""

    def body() -> int:
        job = load_job(name)
        lock_path = job_state_dir(name) / "lock"
        lock = ArchiveLock(lock_path, wait_seconds=0)
        try:
            lock.acquire()
        except ArchiveLockedError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(lock_path.read_text().strip())})"
            raise JobRunningError(
                f"job {name!r} is already running{holder}; this start did nothing. "
                "If that run hangs, stop it; the lock goes with the process") from None
        try:
            return _run_locked(job, log_file, quiet, as_json)
        finally:
            lock.release()

    run_guarded(body)


def _run_locked(job: Job, log_file: Path | None, quiet: bool, as_json: bool) -> int:
    interactive = sys.stdout.isatty() and sys.stderr.isatty()
    argv = [sys.executable, "-m", "migrate", *job.argv(), "--json"]
    if quiet or (not interactive and log_file is None):
        argv.append("--quiet")
    env = child_env(job)
    log: IO[str] | None = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    started, t0 = _stamp(), time.monotonic()
    try:
        log_start = 0
        if log is not None:
            log.write(f"{started} run {job.name}: {job.command} {job.source} -> {job.destination}\n")
            log.flush()
            log_start = log.tell()
        err_sink: IO[str] | None = log
        capture = None
        if log is None and not interactive:
            capture = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            err_sink = capture
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err_sink, stdin=subprocess.DEVNULL,
                              env=env, text=True, check=False)
        err_text = ""
        if capture is not None:
            capture.seek(0)
            err_text = capture.read()
            capture.close()
            sys.stderr.write(err_text)  # errors still reach cron's mail / the journal
        elif log is not None and log_file is not None:
            with open(log_file, encoding="utf-8", errors="replace") as fh:
                fh.seek(log_start)  # only this run's lines, however long the log grew
                err_text = fh.read()
        summary: dict[str, Any] = {}
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    summary = json.loads(line)
                break
        entry: dict[str, Any] = {
            "job": job.name, "command": job.command, "started": started,
            "duration_s": round(time.monotonic() - t0, 3), "exit_code": done.returncode,
            "new_messages": int(summary.get("new_messages", 0)),
            "new_bytes": int(summary.get("new_bytes", 0)),
            "folders": int(summary.get("folders", 0)),
            "errors": list(summary.get("errors") or []) or _error_lines(err_text),
        }
        append_history(job.name, entry)
        if log is not None:
            log.write(f"{_stamp()} run {job.name}: exit {done.returncode}, "
                      f"{entry['new_messages']} new messages, {human_bytes(entry['new_bytes'])}, "
                      f"{entry['duration_s']:.1f} s\n")
    finally:
        if log is not None:
            log.close()
    if as_json:
        typer.echo(json.dumps(entry, ensure_ascii=False))
    elif interactive and not quiet:
        typer.echo(f"job {job.name}: {entry['new_messages']} new messages, "
                   f"{human_bytes(entry['new_bytes'])} in {entry['duration_s']:.1f} s"
                   + (f", {len(entry['errors'])} errors" if entry["errors"] else ""))
    return done.returncode


# -- schedule -----------------------------------------------------------------------------
@app.command()
def schedule(
    name: Annotated[str, typer.Argument(help="The saved job.")],
    daily: Annotated[str, typer.Option(help="Run every day at HH:MM (local time).")],
    cron: Annotated[bool, typer.Option("--cron", help="A crontab line instead of systemd units.")
                    ] = False,
    install: Annotated[bool, typer.Option(
        "--install", help="Install it (systemctl --user enable --now, or crontab).")] = False,
) -> None:
    """Print (or --install) a systemd user timer + service, or a crontab line, for a job."""
    from migrate.config import schedule as sched

    def body() -> int:
        load_job(name)  # it must exist and be valid
        when = sched.parse_daily(daily)
        if cron:
            if install:
                line = sched.install_cron(name, when)
                typer.echo(f"installed in your crontab:\n{line}")
            else:
                typer.echo(sched.cron_line(name, when))
            return EXIT_OK
        units = sched.systemd_units(name, when)
        if install:
            for path in sched.install_systemd(name, when):
                typer.echo(f"wrote {path}")
            typer.echo(f"enabled {sched.unit_name(name)}.timer; "
                       f"see `systemctl --user list-timers` and `journalctl --user -u "
                       f"{sched.unit_name(name)}`")
            return EXIT_OK
        for filename, text in units.items():
            typer.echo(f"# ~/.config/systemd/user/{filename}\n{text}")
        typer.echo(f"# then: systemctl --user daemon-reload && "
                   f"systemctl --user enable --now {sched.unit_name(name)}.timer")
        return EXIT_OK

    run_guarded(body)
