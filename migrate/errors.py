"""Errors as types that carry their exit code.

The CLI renders every :class:`MailmigrateError` as one line and exits with
its code; anything else is a bug and gets a traceback. ``transient`` tells a
retry wrapper whether trying again can help.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_CONNECT = 4
EXIT_ARCHIVE = 5
EXIT_INTERRUPTED = 130


class MailmigrateError(Exception):
    """Base of all expected failures; ``str(err)`` is the one-line message."""

    exit_code = EXIT_PARTIAL
    transient = False


class UsageError(MailmigrateError):
    """Bad URL, bad option, bad input file: the user must change the command."""

    exit_code = EXIT_USAGE


class AuthError(MailmigrateError):
    """The server refused the credentials."""

    exit_code = EXIT_AUTH


class ConnectError(MailmigrateError):
    """The server cannot be reached, TLS failed, or the connection dropped."""

    exit_code = EXIT_CONNECT
    transient = True


class SetupError(ConnectError):
    """Connecting cannot succeed by trying again (an untrusted certificate, a server that
    offers no STARTTLS, a host name that does not resolve): exit 4 at once, no retries."""

    transient = False


class ThrottledError(ConnectError):
    """The server asked us to slow down ([THROTTLED], [UNAVAILABLE], [LIMIT], BYE with a
    reason): back off and try again; if it never relents, stop like a lost connection."""


class QuotaError(MailmigrateError):
    """The destination is over quota ([OVERQUOTA]): retrying cannot help, so the run
    stops with what was copied kept (exit 1); free space and run again."""

    exit_code = EXIT_PARTIAL


class ArchiveError(MailmigrateError):
    """The archive is corrupt, locked by another run, or not writable."""

    exit_code = EXIT_ARCHIVE


class ArchiveLockedError(ArchiveError):
    """Another run holds the archive's lock."""


class MessageError(MailmigrateError):
    """One message or folder failed; the run goes on and ends with exit 1."""

    exit_code = EXIT_PARTIAL


class FolderError(MessageError):
    """A whole folder failed (e.g. its UIDVALIDITY changed mid-run): retrying
    its messages one by one cannot help; the run goes on with the next folder."""


EXIT_JOB_RUNNING = 6


class JobRunningError(MailmigrateError):
    """``run NAME`` found the job's lock held: another run of it is still going.

    Its own exit code, so cron/systemd wrappers can tell "skipped, the last
    run is still busy" from a failure."""

    exit_code = EXIT_JOB_RUNNING
