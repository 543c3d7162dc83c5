"""providers, jobs add/list/show/remove, run, schedule: set up once, then forget.

``jobs add`` is a setup wizard on a TTY and a plain command elsewhere; either
way it tests the login before it saves anything, so a job that exists is a
job that worked once. ``run`` is built for cron and systemd: one lock per job
(a second start exits 6 at once), quiet without a TTY, an optional log file,
and a JSON line per run in the job's history.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from migrate.cli.common import (
    CafileOpt,
    ExcludeOpt,
    FolderOpt,
    InsecureOpt,
    JsonOpt,
    LogFileOpt,
    Outcome,
    QuietOpt,
    app,
    parse_since,
    run_guarded,
)
from migrate.cli.wizard import (
    ENV_WARNING,
    KEYRING_MISSING,
    endpoint_of,
    keyring_available,
    read_secret,
    wizard,
)
from migrate.config.credentials import KEYRING_SERVICE, keyring_delete, keyring_set
from migrate.config.endpoints import Endpoint, PasswordSource, parse_endpoint
from migrate.config.jobs import (
    COMMANDS,
    Credential,
    Job,
    OptionValue,
    append_history,
    atomic_write,
    check_name,
    job_state_dir,
    jobs_dir,
    list_job_names,
    load_job,
    read_history,
    remove_job,
    save_job,
)
from migrate.config.passwords import child_env, password_for
from migrate.config.profiles import all_profiles, get_profile
from migrate.engine.progress import human_bytes
from migrate.errors import EXIT_OK, ArchiveLockedError, JobRunningError, UsageError
from migrate.stores.lock import ArchiveLock

jobs_app = typer.Typer(help="Saved jobs: add (a setup wizard on a TTY), list, show, remove.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")


# -- providers ----------------------------------------------------------------------------
@app.command()
def providers(as_json: JsonOpt = False, log_file: LogFileOpt = None) -> None:
    """List the provider presets (profiles/): servers, OAuth2 support, address domains."""

    def body() -> int | Outcome:
        profs = all_profiles()
        if as_json:
            return Outcome(EXIT_OK, {"providers": [{
                "id": p.id, "name": p.name, "domains": list(p.domains),
                "imap": None if p.imap is None else vars(p.imap),
                "pop3": None if p.pop3 is None else vars(p.pop3),
                "oauth2": p.oauth2["mechanisms"] if p.oauth2 else [], "limits": p.limits,
                "defaults": {"connections": p.connections, "rate": p.rate,
                             "exclude": list(p.exclude)},
                "notes": p.notes} for p in profs]})
        width = max(len(p.id) for p in profs)
        for p in profs:
            imap = f"{p.imap.host or '(your host)'}:{p.imap.port}" if p.imap else "-"
            oauth = " oauth2" if p.oauth2 else ""
            typer.echo(f"{p.id:<{width}}  {p.name:<28} {imap:<32}{oauth}")
            if p.domains:
                typer.echo(f"{'':<{width}}  {', '.join(p.domains)}")
            shaped = [f"{p.connections} connections" if p.connections else "",
                      f"rate {p.rate}" if p.rate else "",
                      f"skips {', '.join(glob_name(g) for g in p.exclude)}" if p.exclude else ""]
            if any(shaped):
                typer.echo(f"{'':<{width}}  defaults: {'; '.join(x for x in shaped if x)}")
        return EXIT_OK

    run_guarded(body, command="providers", as_json=as_json, log_file=log_file)


def glob_name(pattern: str) -> str:
    """A folder glob as a person reads it: the one-character classes that escape a
    bracket or a wildcard ("[[]G*]/Important") shown as that character ("[G*]/Important")."""
    return re.sub(r"\[([\[\]*?])\]", r"\1", pattern)


# -- credentials --------------------------------------------------------------------------


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
    if method == "keyring" and not keyring_available():
        raise UsageError(KEYRING_MISSING)  # said before any question or login
    if method == "env":
        typer.echo("mailmigrate: warning: " + ENV_WARNING.replace("${var}", f"${env}"), err=True)
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


def test_password(cred: Credential, secrets: dict[str, str], label: str,
                  mailbox: str | None = None) -> PasswordSource:
    """The password a login test uses: one just typed (not stored until the test passed),
    else the job's own source."""
    if cred.method in ("keyring", "file") and cred.value in secrets:
        return PasswordSource.literal(secrets[cred.value])
    return password_for(cred, label, mailbox)


def store_secrets(creds: list[Credential | None], secrets: dict[str, str]) -> None:
    """After the login test: the keyring entries and password files the job names."""
    for cred in creds:
        if cred is None or cred.value not in secrets:
            continue
        if cred.method == "keyring":
            keyring_set(KEYRING_SERVICE, cred.value, secrets[cred.value])
        elif cred.method == "file":
            atomic_write(Path(cred.value), secrets[cred.value] + "\n", mode=0o600)


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


def _with_oauth2(cred: Credential | None, endpoint: Endpoint, service: str | None,
                 prefix: str) -> Credential | None:
    """An admin service named by ``{prefix}oauth2-service``, or (with no option at all)
    the stored `auth login` for the server's user; never two answers at once."""
    from migrate.config.oauth.tokens import job_credential

    if service and cred is not None:
        raise UsageError(f"give {prefix}oauth2-service or a password option, not both")
    return cred if cred is not None else job_credential(endpoint, service)


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
    oauth2_service: Annotated[str | None, typer.Option(
        metavar="NAME", help="OAuth2 as an admin: tokens from `auth service add NAME` for the "
        "server's mailbox. Without any password option a stored `auth login` is used.")] = None,
    dest_oauth2_service: Annotated[str | None, typer.Option(
        metavar="NAME", help="copy: the admin service giving the destination's tokens.")] = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    no_test: Annotated[bool, typer.Option("--no-test", help="Save without testing the login.")
                       ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing job.")] = False,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Save a job. On a TTY without --source/--dest it asks, like a setup wizard.

    The login is tested before anything is saved; a password is never written
    into the job file unless --store-plaintext-password says so."""

    def body() -> Outcome:
        check_name(name)
        if command not in COMMANDS:
            raise UsageError(f"--command must be one of {', '.join(COMMANDS)}")
        existing = jobs_dir() / f"{name}.toml"
        if existing.exists() and not force:  # before any question or login
            raise UsageError(f"job {name!r} exists already ({existing}); remove it or pass --force")
        options = parse_options(option or [])
        since = options.get("since")
        if isinstance(since, str):
            parse_since(since)  # a typo fails now, not at 2:30 at night
        if insecure:
            options["insecure"] = True
        if cafile:
            options["cafile"] = str(cafile.expanduser().resolve())
        secrets: dict[str, str] = {}
        asked = source is None or dest is None
        if source is None or dest is None:
            if not sys.stdin.isatty():
                raise UsageError("jobs add needs --source and --dest (or a terminal to ask on)")
            answers = wizard(name)
            job, secrets = answers.job, answers.secrets
            job.options.update(options)
            if folder or exclude:
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
            cred = _with_oauth2(cred, account_ep, oauth2_service, "--")
            if cred is None:
                raise UsageError("say how to get the password: --password-env, --password-file, "
                                 "--password-command, --keyring, --oauth2-token-command or "
                                 "--oauth2-service (or sign in first: mailmigrate auth login)")
            dest_cred = None
            if command == "copy":
                dest_ep = parse_endpoint(dest, insecure=insecure)
                dest_cred = choose_credential(
                    env=dest_password_env, file=dest_password_file, command=dest_password_command,
                    use_keyring=False, oauth2=dest_oauth2_token_command, plaintext=False,
                    account=f"{dest_ep.user}@{dest_ep.host}", label="destination password",
                    secrets=secrets)
                dest_cred = _with_oauth2(dest_cred, dest_ep, dest_oauth2_service, "--dest-")
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
        if (job.provider and not job.folders and not job.exclude and job.command == "backup"
                and not asked):
            job.exclude = list(get_profile(job.provider).exclude)  # a preset default; flags win
        say = _sayer(as_json)
        if not no_test:
            test_login(server, test_password(job.credentials, secrets, "password", server.user))
            if job.command == "copy" and job.dest_credentials is not None:
                dest_server = endpoint_of(job, job.destination)
                test_login(dest_server, test_password(job.dest_credentials, secrets,
                                                      "destination password", dest_server.user))
            say(f"Login OK: {server.user} at {server.host}:{server.port}")
        store_secrets([job.credentials, job.dest_credentials], secrets)
        path = save_job(job, overwrite=force)
        say(f"Saved job {name!r} to {path}")
        say(f"Run it:      mailmigrate run {name}")
        say(f"Every night: mailmigrate schedule {name} --daily 02:30 --install")
        return Outcome(EXIT_OK, {"name": name, "path": str(path), "tested": not no_test,
                                 **_job_fields(job)})

    run_guarded(body, command="jobs add", as_json=as_json, log_file=log_file)


@jobs_app.command("list")
def jobs_list(as_json: JsonOpt = False, log_file: LogFileOpt = None) -> None:
    """List saved jobs with their last run."""

    def body() -> int | Outcome:
        rows = []
        for name in list_job_names():
            job = load_job(name)
            runs = read_history(name, 1)
            rows.append((job, runs[-1] if runs else None))
        if as_json:
            return Outcome(EXIT_OK, {"jobs": [
                {"name": j.name, "command": j.command, "source": j.source,
                 "destination": j.destination, "last_run": r} for j, r in rows]})
        if not rows:
            typer.echo("no jobs yet; create one with `mailmigrate jobs add NAME`")
        for job, latest in rows:
            when = (f"last run {latest['started']} exit {latest['exit_code']}" if latest
                    else "never run")
            typer.echo(f"{job.name}  {job.command} {job.source} -> {job.destination}  ({when})")
        return EXIT_OK

    run_guarded(body, command="jobs list", as_json=as_json, log_file=log_file)


def _shown(cred: Credential | None) -> dict[str, str] | None:
    """A credential as `jobs show --json` prints it: the method and where the
    secret comes from (a variable, path, command), never a stored password."""
    if cred is None:
        return None
    return {"method": cred.method, "value": "(hidden)" if cred.method == "plaintext" else cred.value}


def _sayer(as_json: bool) -> Callable[[str], None]:
    """Where a command's messages for people go: stdout, or stderr when stdout carries JSON."""
    def say(text: str) -> None:
        typer.echo(text, err=as_json)
    return say


def _job_fields(job: Job) -> dict[str, Any]:
    """A job's settings for --json (the envelope's ``command`` is ours, so the job's is
    ``job_command``); never a secret."""
    return {"job": job.name, "job_command": job.command, "source": job.source,
            "destination": job.destination, "provider": job.provider, "folders": job.folders,
            "exclude": job.exclude, "options": job.options,
            "credentials": _shown(job.credentials), "dest_credentials": _shown(job.dest_credentials)}


@jobs_app.command("show")
def jobs_show(
    name: Annotated[str, typer.Argument(help="The job.")],
    last: Annotated[int, typer.Option(help="How many past runs to show.")] = 10,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Show a job's settings (never a secret) and its last runs."""

    def body() -> int | Outcome:
        job = load_job(name)
        history = read_history(name, last)
        if as_json:
            return Outcome(EXIT_OK, {**_job_fields(job), "history": history})
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

    run_guarded(body, command="jobs show", as_json=as_json, log_file=log_file)


@jobs_app.command("remove")
def jobs_remove(
    name: Annotated[str, typer.Argument(help="The job.")],
    keep_keyring: Annotated[bool, typer.Option(help="Leave the keyring entry in place.")] = False,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Delete a saved job (its archive and history stay)."""

    def body() -> Outcome:
        job = remove_job(name)
        keyring_removed = False
        if job.credentials.method == "keyring" and not keep_keyring:
            still_used = any(load_job(n).credentials == job.credentials for n in list_job_names())
            if not still_used:
                keyring_delete(KEYRING_SERVICE, job.credentials.value)
                keyring_removed = True
        if not as_json:
            typer.echo(f"removed job {name!r}")
        return Outcome(EXIT_OK, {"job": name, "keyring_entry_removed": keyring_removed})

    run_guarded(body, command="jobs remove", as_json=as_json, log_file=log_file)


# -- run ----------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error_lines(text: str) -> list[str]:
    """The child's error lines, with or without a log timestamp in front."""
    marker = "mailmigrate: error: "
    return [ln.partition(marker)[2] for ln in text.splitlines() if marker in ln][-5:]


@app.command("run")
def run_job(
    name: Annotated[str, typer.Argument(help="The saved job to run.")],
    log_file: LogFileOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a saved job: safe under cron/systemd (one run at a time, quiet without a TTY)."""

    def body() -> Outcome:
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
            entry = _run_locked(job, log_file, quiet, as_json)
        finally:
            lock.release()
        fields = {k: v for k, v in entry.items() if k not in ("command", "exit_code", "errors",
                                                               "duration_s")}
        return Outcome(int(entry["exit_code"]), {**fields, "job_command": entry["command"],
                                                 "job_duration_s": entry["duration_s"]},
                       list(entry["errors"]))

    run_guarded(body, command="run", as_json=as_json, log_file=log_file)


def _run_locked(job: Job, log_file: Path | None, quiet: bool, as_json: bool) -> dict[str, Any]:
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
    if interactive and not quiet and not as_json:
        typer.echo(f"job {job.name}: {entry['new_messages']} new messages, "
                   f"{human_bytes(entry['new_bytes'])} in {entry['duration_s']:.1f} s"
                   + (f", {len(entry['errors'])} errors" if entry["errors"] else ""))
    return entry


# -- schedule -----------------------------------------------------------------------------
def _env_credentials(job: Job) -> list[str]:
    """The environment variables a job's logins read: a scheduler does not have them."""
    return [c.value for c in (job.credentials, job.dest_credentials)
            if c is not None and c.method == "env"]


@app.command()
def schedule(
    name: Annotated[str, typer.Argument(help="The saved job.")],
    daily: Annotated[str | None, typer.Option(
        "--daily", metavar="HH:MM", help="Run every day at HH:MM (local time).")] = None,
    weekly: Annotated[str | None, typer.Option(
        "--weekly", metavar="'DAY HH:MM'", help="Run once a week, e.g. 'sun 02:30'.")] = None,
    every: Annotated[int | None, typer.Option(
        "--every", metavar="HOURS", help="Run every HOURS hours (on the hour, from midnight).")
    ] = None,
    cron: Annotated[bool, typer.Option("--cron", help="A crontab line instead of systemd units.")
                    ] = False,
    install: Annotated[bool, typer.Option(
        "--install", help="Install it (systemctl --user enable --now, or crontab).")] = False,
    env_is_set: Annotated[bool, typer.Option(
        "--env-is-set", help="The job's --password-env variable is set for the scheduler "
        "(e.g. a systemd drop-in); schedule it anyway.")] = False,
    as_json: JsonOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Print (or --install) a systemd user timer + service, or a crontab line, for a job."""
    from migrate.config import schedule as sched

    def body() -> Outcome:
        job = load_job(name)  # it must exist and be valid
        when = sched.choose(daily, weekly, every)
        missing = _env_credentials(job)
        if missing and not env_is_set:
            raise UsageError(
                f"job {name!r} reads its password from ${missing[0]}, which cron and systemd "
                f"timers do not have; keep it in a file or the keyring (`mailmigrate jobs add "
                f"{name} --force --password-file PATH` or `--keyring`), or pass --env-is-set")
        say = _sayer(as_json)
        fields: dict[str, Any] = {"job": name, "when": when.describe(),
                                  "kind": "cron" if cron else "systemd", "installed": install}
        if cron:
            line = sched.install_cron(name, when) if install else sched.cron_line(name, when)
            say(f"installed in your crontab:\n{line}" if install else line)
            return Outcome(EXIT_OK, {**fields, "cron_line": line})
        units = sched.systemd_units(name, when)
        fields["units"] = units
        if install:
            for path in sched.install_systemd(name, when):
                say(f"wrote {path}")
            say(f"enabled {sched.unit_name(name)}.timer; "
                f"see `systemctl --user list-timers` and `journalctl --user -u "
                f"{sched.unit_name(name)}`")
            return Outcome(EXIT_OK, fields)
        for filename, text in units.items():
            say(f"# ~/.config/systemd/user/{filename}\n{text}")
        say(f"# then: systemctl --user daemon-reload && "
            f"systemctl --user enable --now {sched.unit_name(name)}.timer")
        return Outcome(EXIT_OK, fields)

    run_guarded(body, command="schedule", as_json=as_json, log_file=log_file)
