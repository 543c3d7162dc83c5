"""Scheduled runs: a systemd user timer + service, or a crontab line.

The scheduled command is ``<this python> -m migrate run NAME --log-file …``:
the absolute interpreter path works from cron's bare PATH and keeps a
virtualenv's packages; ``run`` holds the job lock, is quiet without a TTY and
appends to the job history, so the scheduler needs nothing else. The timer
is ``Persistent=true`` so a laptop that was off at 02:00 catches up at boot.
Installing shells out to ``systemctl --user`` / ``crontab``; tests point
``MAILMIGRATE_SYSTEMCTL`` / ``MAILMIGRATE_CRONTAB`` at stand-ins.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from migrate.config.jobs import atomic_write, check_name, job_state_dir
from migrate.errors import UsageError

#: Environment worth carrying into the scheduled run (where the jobs live).
CARRIED_ENV = ("MAILMIGRATE_CONFIG_DIR", "MAILMIGRATE_STATE_DIR", "MAILMIGRATE_PROFILES_DIR")


@dataclass(frozen=True)
class Daily:
    hour: int
    minute: int


def parse_daily(value: str) -> Daily:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UsageError(f"bad --daily {value!r}: expected HH:MM, e.g. 02:30")
    return Daily(int(match[1]), int(match[2]))


def run_argv(name: str) -> list[str]:
    log = job_state_dir(name) / "run.log"
    return [sys.executable, "-m", "migrate", "run", check_name(name), "--log-file", str(log)]


def unit_name(name: str) -> str:
    return f"mailmigrate-{check_name(name)}"


def _systemd_quote(arg: str) -> str:
    """systemd's ExecStart splitting: double quotes with backslash escapes; '%' is a specifier."""
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(name: str, when: Daily) -> dict[str, str]:
    """{file name: content} for the service and the timer."""
    unit = unit_name(name)
    env = "".join(f"Environment={_systemd_quote(f'{k}={os.environ[k]}')}\n"
                  for k in CARRIED_ENV if os.environ.get(k))
    service = (
        f"[Unit]\nDescription=mailmigrate job {name}\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        f"[Service]\nType=oneshot\n{env}"
        f"ExecStart={' '.join(_systemd_quote(a) for a in run_argv(name))}\n"
        # exit 6 = the previous run is still going: not a failure of this one
        "SuccessExitStatus=6\nNice=10\nIOSchedulingClass=idle\n"
    )
    timer = (
        f"[Unit]\nDescription=Daily mailmigrate job {name}\n\n"
        f"[Timer]\nOnCalendar=*-*-* {when.hour:02d}:{when.minute:02d}:00\n"
        "Persistent=true\nRandomizedDelaySec=60\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}


def cron_line(name: str, when: Daily) -> str:
    env = " ".join(shlex.quote(f"{k}={os.environ[k]}") for k in CARRIED_ENV if os.environ.get(k))
    command = " ".join(shlex.quote(a) for a in run_argv(name)).replace("%", "\\%")
    prefix = f"{env} " if env else ""
    return f"{when.minute} {when.hour} * * * {prefix}{command} # mailmigrate job {name}"


def systemd_user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def _tool(env_name: str, default: str) -> list[str]:
    return shlex.split(os.environ.get(env_name, default))


def install_systemd(name: str, when: Daily) -> list[Path]:
    directory = systemd_user_dir()
    written = []
    for filename, text in systemd_units(name, when).items():
        path = directory / filename
        atomic_write(path, text, mode=0o644)
        written.append(path)
    systemctl = _tool("MAILMIGRATE_SYSTEMCTL", "systemctl")
    for args in (["--user", "daemon-reload"], ["--user", "enable", "--now", f"{unit_name(name)}.timer"]):
        _call([*systemctl, *args])
    return written


def install_cron(name: str, when: Daily) -> str:
    """Replace this job's line in the user's crontab (or add it); other lines stay."""
    crontab = _tool("MAILMIGRATE_CRONTAB", "crontab")
    listed = subprocess.run([*crontab, "-l"], capture_output=True, text=True, check=False)
    current = listed.stdout if listed.returncode == 0 else ""  # "no crontab for user" -> empty
    tag = f"# mailmigrate job {name}"
    lines = [ln for ln in current.splitlines() if not ln.endswith(tag)]
    line = cron_line(name, when)
    lines.append(line)
    _call([*crontab, "-"], stdin="\n".join(lines) + "\n")
    return line


def _call(argv: list[str], stdin: str | None = None) -> None:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}; install it, or drop --install "
                         "and set the schedule up by hand") from None
    if done.returncode != 0:
        raise UsageError(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[:200]}")
