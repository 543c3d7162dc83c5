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

    def on_calendar(self) -> str:
        return f"*-*-* {self.hour:02d}:{self.minute:02d}:00"

    def cron_fields(self) -> str:
        return f"{self.minute} {self.hour} * * *"

    def describe(self) -> str:
        return f"Daily at {self.hour:02d}:{self.minute:02d}"


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Weekly:
    day: int  # 0 = Monday, as DAYS
    hour: int
    minute: int

    def on_calendar(self) -> str:
        return f"{DAYS[self.day].capitalize()} *-*-* {self.hour:02d}:{self.minute:02d}:00"

    def cron_fields(self) -> str:
        return f"{self.minute} {self.hour} * * {(self.day + 1) % 7}"  # cron: 0 = Sunday

    def describe(self) -> str:
        return f"Weekly on {DAYS[self.day].capitalize()} at {self.hour:02d}:{self.minute:02d}"


@dataclass(frozen=True)
class Every:
    """Every ``hours`` hours, on the hour, counted from midnight (as cron's ``*/N`` and
    systemd's ``0/N`` both count: 24 should be divisible by N for even gaps)."""

    hours: int

    def on_calendar(self) -> str:
        return f"*-*-* 00/{self.hours}:00:00"

    def cron_fields(self) -> str:
        return f"0 */{self.hours} * * *"

    def describe(self) -> str:
        return f"Every {self.hours} hours"


When = Daily | Weekly | Every


def _clock(value: str, option: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UsageError(f"bad {option} {value!r}: expected HH:MM, e.g. 02:30")
    return int(match[1]), int(match[2])


def parse_daily(value: str) -> Daily:
    return Daily(*_clock(value, "--daily"))


def parse_weekly(value: str) -> Weekly:
    """``sun 02:30``, ``Sunday``, ``mon`` (a day alone: 02:30)."""
    day, _, clock = value.strip().partition(" ")
    key = day.strip().lower()[:3]
    if key not in DAYS:
        raise UsageError(f"bad --weekly {value!r}: expected a day and a time, e.g. 'sun 02:30'")
    hour, minute = _clock(clock, "--weekly") if clock.strip() else (2, 30)
    return Weekly(DAYS.index(key), hour, minute)


def parse_every(hours: int) -> Every:
    if not 1 <= hours <= 24:
        raise UsageError(f"bad --every {hours}: give a number of hours from 1 to 24")
    return Every(hours)


def choose(daily: str | None, weekly: str | None, every: int | None) -> When:
    """Exactly one of --daily, --weekly, --every."""
    given = [n for n, v in (("--daily", daily), ("--weekly", weekly), ("--every", every))
             if v is not None]
    if len(given) != 1:
        raise UsageError("say when, with one of --daily HH:MM, --weekly 'DAY HH:MM' or "
                         f"--every HOURS{' (not ' + ' and '.join(given) + ')' if given else ''}")
    if daily is not None:
        return parse_daily(daily)
    if weekly is not None:
        return parse_weekly(weekly)
    assert every is not None
    return parse_every(every)


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


def systemd_units(name: str, when: When) -> dict[str, str]:
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
        f"[Unit]\nDescription={when.describe()}: mailmigrate job {name}\n\n"
        f"[Timer]\nOnCalendar={when.on_calendar()}\n"
        "Persistent=true\nRandomizedDelaySec=60\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}


def cron_line(name: str, when: When) -> str:
    env = " ".join(shlex.quote(f"{k}={os.environ[k]}") for k in CARRIED_ENV if os.environ.get(k))
    command = " ".join(shlex.quote(a) for a in run_argv(name)).replace("%", "\\%")
    prefix = f"{env} " if env else ""
    return f"{when.cron_fields()} {prefix}{command} # mailmigrate job {name}"


def systemd_user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def _tool(env_name: str, default: str) -> list[str]:
    return shlex.split(os.environ.get(env_name, default))


def install_systemd(name: str, when: When) -> list[Path]:
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


def install_cron(name: str, when: When) -> str:
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
