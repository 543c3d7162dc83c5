"""Saved jobs: one TOML file per job in the config dir, history in the state dir.

A job is a command line written down: which command (backup, drain, restore,
copy), source, destination, folders, options, and *how* to get the password
(env, file, command, keyring, an OAuth2 token command), never the password
itself unless the user asked for that with an explicit flag. ``run NAME``
turns the job back into the command line and runs it as a child process, so
a job behaves exactly like the command a user would type, and the child's
JSON summary becomes one line of the job's history.

Paths: ``MAILMIGRATE_CONFIG_DIR`` / ``MAILMIGRATE_STATE_DIR`` when set (tests,
containers), else platformdirs' user config and state dirs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from migrate.errors import UsageError

COMMANDS = ("backup", "drain", "restore", "copy")
#: How a job gets a secret. "plaintext" exists only behind --store-plaintext-password.
CREDENTIAL_METHODS = ("env", "file", "command", "keyring", "oauth2", "plaintext",
                      "oauth2-login", "oauth2-service")
#: A stored sign-in (value: the address) or an admin service (value: its name), see
#: migrate.config.oauth.tokens; `run` names them to the child in its environment.
OAUTH2_SIGN_IN_METHODS = ("oauth2-login", "oauth2-service")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Environment variables that carry a resolved secret to the child process
#: (never argv: ``ps`` shows argv to every user, the environment only to us).
SECRET_ENV = "MAILMIGRATE_JOB_PASSWORD"
DEST_SECRET_ENV = "MAILMIGRATE_JOB_DEST_PASSWORD"

OptionValue = str | int | float | bool | list[str]


def config_dir() -> Path:
    override = os.environ.get("MAILMIGRATE_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("mailmigrate"))


def state_dir() -> Path:
    override = os.environ.get("MAILMIGRATE_STATE_DIR")
    return Path(override) if override else Path(platformdirs.user_state_dir("mailmigrate"))


def jobs_dir() -> Path:
    return config_dir() / "jobs"


def job_state_dir(name: str) -> Path:
    return state_dir() / "jobs" / check_name(name)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"bad job name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(up to 64, starting with a letter or digit)")
    return name


@dataclass
class Credential:
    """How to get one secret; ``value`` is a variable, path, command or keyring user."""

    method: str
    value: str

    def validate(self, where: str) -> None:
        if self.method not in CREDENTIAL_METHODS:
            raise UsageError(f"{where}: unknown credential method {self.method!r}; "
                             f"one of {', '.join(CREDENTIAL_METHODS)}")
        if not self.value:
            raise UsageError(f"{where}: credential {self.method!r} needs a value")


@dataclass
class Job:
    name: str
    command: str
    source: str
    destination: str
    credentials: Credential
    dest_credentials: Credential | None = None
    provider: str | None = None
    folders: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    options: dict[str, OptionValue] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return jobs_dir() / f"{self.name}.toml"

    @property
    def server_url(self) -> str:
        """The URL whose password ``credentials`` give (restore writes to the destination)."""
        return self.destination if self.command == "restore" else self.source

    def validate(self) -> None:
        check_name(self.name)
        where = f"job {self.name!r}"
        if self.command not in COMMANDS:
            raise UsageError(f"{where}: command must be one of {', '.join(COMMANDS)}")
        if not self.source or not self.destination:
            raise UsageError(f"{where}: needs a source and a destination")
        # Every command has a token option for each server it logs in to
        # (restore: --oauth2-token-command for DEST; copy: also --dest-…), so
        # "oauth2" is as good a method as any on either side.
        self.credentials.validate(where)
        if self.command == "copy":
            if self.dest_credentials is None:
                raise UsageError(f"{where}: copy needs dest_credentials for the destination server")
            self.dest_credentials.validate(f"{where} destination")
        for key, value in self.options.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
                raise UsageError(f"{where}: bad option name {key!r} (use the long flag without --)")
            if key in ("json", "quiet") or key.startswith(("password", "dest-password")) \
                    or key.endswith("oauth2-token-command"):
                raise UsageError(f"{where}: option {key!r} is managed by the job itself")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise UsageError(f"{where}: option {key!r} must be a list of strings")

    # -- TOML ------------------------------------------------------------------------
    def to_toml(self) -> str:
        """The job as TOML (tomli-w), with a comment line saying how to check an edit."""
        data: dict[str, Any] = {
            "command": self.command, "source": self.source, "destination": self.destination,
            "provider": self.provider, "folders": self.folders, "exclude": self.exclude,
        }
        data = {k: v for k, v in data.items() if v is not None}
        for table, cred in (("credentials", self.credentials),
                            ("dest_credentials", self.dest_credentials)):
            if cred is not None:
                data[table] = {"method": cred.method, "value": cred.value}
        if self.options:
            data["options"] = dict(sorted(self.options.items()))
        header = (f"# mailmigrate job {self.name!r}; edit freely, `mailmigrate jobs show "
                  f"{self.name}` checks it\n\n")
        return header + tomli_w.dumps(data)

    @classmethod
    def from_toml(cls, name: str, data: dict[str, Any]) -> Job:
        where = f"job {name!r}"
        allowed = {"command", "source", "destination", "provider", "folders", "exclude",
                   "credentials", "dest_credentials", "options"}
        unknown = set(data) - allowed
        if unknown:
            raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r}")

        def cred(key: str) -> Credential | None:
            table = data.get(key)
            if table is None:
                return None
            if not isinstance(table, dict) or set(table) != {"method", "value"}:
                raise UsageError(f"{where}: [{key}] needs exactly method and value")
            return Credential(str(table["method"]), str(table["value"]))

        credentials = cred("credentials")
        if credentials is None:
            raise UsageError(f"{where}: missing [credentials]")
        try:
            job = cls(name=name, command=str(data["command"]), source=str(data["source"]),
                      destination=str(data["destination"]), credentials=credentials,
                      dest_credentials=cred("dest_credentials"), provider=data.get("provider"),
                      folders=list(data.get("folders", [])), exclude=list(data.get("exclude", [])),
                      options=dict(data.get("options", {})))
        except KeyError as exc:
            raise UsageError(f"{where}: missing key {exc.args[0]!r}") from None
        job.validate()
        return job

    # -- the command line ------------------------------------------------------------
    def argv(self) -> list[str]:
        """The ``mailmigrate`` arguments this job stands for (without secrets)."""
        args = [self.command, self.source, self.destination]
        if self.provider:
            at = 2 if self.command == "restore" else 1
            if "provider=" not in args[at]:
                args[at] += ("&" if "?" in args[at] else "?") + f"provider={self.provider}"
        for pattern in self.folders:
            args += ["--folder", pattern]
        for pattern in self.exclude:
            args += ["--exclude", pattern]
        for key, value in sorted(self.options.items()):
            if value is True:
                args.append(f"--{key}")
            elif value is False:
                args.append(f"--no-{key}")
            elif isinstance(value, list):
                for item in value:
                    args += [f"--{key}", item]
            else:
                args += [f"--{key}", str(value)]
        args += _credential_args(self.credentials, "--password", "--oauth2-token-command", SECRET_ENV)
        if self.dest_credentials is not None:
            args += _credential_args(self.dest_credentials, "--dest-password",
                                     "--dest-oauth2-token-command", DEST_SECRET_ENV)
        return args


def _credential_args(cred: Credential, prefix: str, oauth_flag: str, secret_env: str) -> list[str]:
    if cred.method in ("env", "file", "command"):
        return [f"{prefix}-{cred.method}", cred.value]
    if cred.method == "oauth2":
        return [oauth_flag, cred.value]
    if cred.method in OAUTH2_SIGN_IN_METHODS:
        return []  # the child finds it from its environment (migrate.config.oauth.tokens)
    return [f"{prefix}-env", secret_env]  # keyring / plaintext: resolved by `run`


# -- storage ------------------------------------------------------------------------------
def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_named_toml(path: Path, what: str, known: Callable[[], list[str]], create: str
                    ) -> dict[str, Any]:
    """A named config file (a job, an OAuth2 service) as TOML; a missing one names the
    known ones and the command that creates one, a broken one says where it is."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        listed = ", ".join(known()) or "none yet"
        raise UsageError(f"no {what} named {path.stem!r} (known: {listed}); {create}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} file {path} is not valid TOML: {exc}") from None


def save_job(job: Job, *, overwrite: bool = False) -> Path:
    job.validate()
    if job.path.exists() and not overwrite:
        raise UsageError(f"job {job.name!r} exists already ({job.path}); "
                         "remove it first or pass --force")
    text = job.to_toml()
    # Round-trip check: never save a file that would not load back the same.
    if Job.from_toml(job.name, tomllib.loads(text)) != job:
        raise AssertionError("job TOML did not round-trip")
    atomic_write(job.path, text)
    return job.path


def load_job(name: str) -> Job:
    path = jobs_dir() / f"{check_name(name)}.toml"
    data = read_named_toml(path, "job", list_job_names, "create it with `mailmigrate jobs add`")
    return Job.from_toml(name, data)


def list_job_names() -> list[str]:
    if not jobs_dir().is_dir():
        return []
    return sorted(p.stem for p in jobs_dir().glob("*.toml") if NAME_RE.match(p.stem))


def remove_job(name: str) -> Job:
    job = load_job(name)
    job.path.unlink()
    return job


# -- history ------------------------------------------------------------------------------
def history_path(name: str) -> Path:
    return job_state_dir(name) / "history.jsonl"


def append_history(name: str, entry: dict[str, Any]) -> None:
    """One JSON line per run, appended with O_APPEND (a line is written whole)."""
    path = history_path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(name: str, last: int = 10) -> list[dict[str, Any]]:
    """The last runs, oldest first; a torn last line (crash mid-write) is skipped."""
    try:
        lines = history_path(name).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out[-last:] if last else out
