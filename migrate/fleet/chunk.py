"""One bounded chunk of one account: ``python -m migrate KIND … --json`` in a child process.

Running each chunk as the command a user would type keeps every guarantee of
that command (its checkpoints, its kill -9 safety, its exit codes) without a
second copy of its option handling, and isolates accounts from each other: a
crash, a leak or a hang costs one chunk of one account. The chunk is bounded
by ``--max-time``/``--max-bytes`` and ends at a checkpoint, so the next chunk,
here or on another worker, goes on from there. Passwords reach the child as
references (``--password-env VAR``, ``--password-file``, …) or, for the kinds
only this process can resolve (keyring, a clear password), through its
environment: never argv.

The child dies with its parent (Linux ``PR_SET_PDEATHSIG``): a dispatcher or
worker killed with kill -9 takes its chunks with it, which is a kill -9 of the
command, which the checkpoints make safe. A chunk that outlives its deadline
is killed the same way and counted as a failed attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.config.jobs import Credential, Job
from migrate.config.passwords import child_env
from migrate.fleet.accounts import AccountSpec
from migrate.fleet.ledger import ChunkReport

DEFAULT_CHUNK_SECONDS = 600.0
DEFAULT_CHUNK_BYTES = 500 * 1000**2

#: Starts ``python -m migrate`` so that it dies with the process that started it.
#: PARENT is checked after the prctl: a parent that died before it leaves no orphan.
_BOOT = (
    "import os, sys\n"
    "try:\n"
    "    import ctypes, signal\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(os.environ.pop('MAILMIGRATE_CHUNK_PARENT', os.getppid())):\n"
    "    os._exit(130)\n"
    "import runpy\n"
    "runpy.run_module('migrate', run_name='__main__', alter_sys=True)\n"
)


@dataclass(frozen=True)
class ChunkLimits:
    """How big one chunk may get, and when it is killed if it will not stop."""

    seconds: float | None = DEFAULT_CHUNK_SECONDS
    max_bytes: int | None = DEFAULT_CHUNK_BYTES
    #: Hard limit on the child's run time (None: twice ``seconds`` plus 5 minutes).
    deadline: float | None = None

    @property
    def hard_deadline(self) -> float | None:
        if self.deadline is not None:
            return self.deadline
        return None if self.seconds is None else 2 * self.seconds + 300

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "max_bytes": self.max_bytes, "deadline": self.deadline}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkLimits:
        return cls(seconds=data.get("seconds"), max_bytes=data.get("max_bytes"),
                   deadline=data.get("deadline"))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def chunk_job(account: AccountSpec, *, state_path: Path | None, limits: ChunkLimits,
              insecure: bool = False) -> Job:
    """The saved-job form of one chunk (:meth:`Job.argv` gives its command line)."""
    options: dict[str, Any] = {}
    if limits.seconds is not None:
        options["max-time"] = f"{limits.seconds:g}"
    if limits.max_bytes is not None:
        options["max-bytes"] = str(limits.max_bytes)
    if account.kind in ("copy", "backup"):
        options["max-connections"] = "1"  # one session per side: the per-host caps count them
    if account.kind in ("copy", "restore") and state_path is not None:
        options["state"] = str(state_path)
    if insecure:
        options["insecure"] = True
    # Job.credentials is the password of the job's server (restore: the destination's).
    main = account.dest_password if account.kind == "restore" else account.source_password
    dest = account.dest_password if account.kind == "copy" else None
    return Job("fleet-chunk", account.kind, account.source, account.dest,
               main or Credential("env", "MAILMIGRATE_NO_PASSWORD"), dest, options=options)


def run_chunk(account: AccountSpec, *, state_path: Path | None, limits: ChunkLimits,
              insecure: bool = False, on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
              ) -> ChunkReport:
    """Run one chunk to its end (or its deadline) and say what it did."""
    started = time.monotonic()
    try:
        job = chunk_job(account, state_path=state_path, limits=limits, insecure=insecure)
        env = child_env(job)
    except Exception as exc:  # a keyring that cannot be read, an unset variable…
        return ChunkReport(ok=False, error=_one_line(str(exc)), worker=worker_name())
    env["MAILMIGRATE_CHUNK_PARENT"] = str(os.getpid())
    env.pop("MAILMIGRATE_DEBUG", None)  # a traceback is not a report
    if state_path is not None:
        state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-c", _BOOT, *job.argv(), "--json", "--quiet"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        if on_start is not None:
            on_start(proc)
        killed = False
        try:
            proc.wait(timeout=limits.hard_deadline)
        except subprocess.TimeoutExpired:
            killed = True
            proc.kill()
            proc.wait()
        except BaseException:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return interpret(proc.returncode, stdout, stderr, time.monotonic() - started, killed,
                     limits.hard_deadline)


def interpret(code: int, stdout: str, stderr: str, duration: float, deadline_hit: bool = False,
              deadline: float | None = None) -> ChunkReport:
    """A child's exit code and output -> a report.

    The child prints the JSON envelope (docs/json.md). Exit 0 or 1 with one: the
    chunk ran (1: some messages could not be moved; they are counted and the first
    is named). Anything else is a failed attempt, and its one-line error is the reason.
    """
    summary = _summary(stdout)
    worker = worker_name()
    if deadline_hit:
        return ChunkReport(ok=False, duration_s=duration, worker=worker,
                           error=f"chunk still running after its {deadline:g} s deadline; "
                                 "it was stopped and goes on from its last checkpoint")
    if summary is not None and code in (0, 1):
        # The envelope's errors are every failure once: a folder's, each message_errors
        # entry, drain's skipped messages (``failed``), a duplicate left.
        failures = [str(x) for x in summary.get("errors", [])]
        return ChunkReport(ok=True, more=bool(summary.get("more")),
                           messages=int(summary.get("new_messages", 0)),
                           bytes=int(summary.get("new_bytes", 0)), errors=len(failures),
                           error=_one_line(failures[0]) if failures else None,
                           duration_s=duration, worker=worker)
    stopped = summary.get("error") if summary is not None else None
    if isinstance(stopped, dict) and stopped.get("message"):  # the envelope of an error
        return ChunkReport(ok=False, duration_s=duration, worker=worker,
                           error=_one_line(f"{stopped['message']} (exit {code})"))
    return ChunkReport(ok=False, duration_s=duration, worker=worker,
                       error=_failure_reason(code, stderr))


def _summary(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                return data if isinstance(data, dict) else None
    return None


def _failure_reason(code: int, stderr: str) -> str:
    errors = [ln.removeprefix("mailmigrate: error: ") for ln in stderr.splitlines()
              if ln.startswith("mailmigrate: error: ")]
    if errors:
        return _one_line(f"{errors[-1]} (exit {code})")
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"the chunk was killed by {signal.Signals(-code).name}"
        return f"the chunk was killed by signal {-code}"
    last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    return _one_line(f"exit {code}" + (f": {last}" if last else ""))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_CHUNK_SECONDS", "ChunkLimits", "chunk_job", "interpret",
           "run_chunk", "worker_name"]
