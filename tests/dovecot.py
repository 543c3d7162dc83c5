"""A private, throw-away Dovecot 2.3 instance on 127.0.0.1 for the test suite.

``DovecotServer`` writes its own ``dovecot.conf``, passwd-file, TLS material,
state, log and Maildir storage into a fresh short temp dir (``/tmp/mmXXXXXX``;
``base_dir`` holds unix sockets and ``sun_path`` is limited to 108 bytes) and
runs ``dovecot -F -c <conf>`` as a child process.  It never touches the system
Dovecot service or ``/etc/dovecot``.

Listeners (all on 127.0.0.1, free ports found by binding port 0):

* ``imap_port`` / ``pop3_port``: plain IMAP / POP3; plaintext AUTH allowed
  (``disable_plaintext_auth = no``), STARTTLS / STLS offered (``ssl = yes``).
* ``imaps_port`` / ``pop3s_port``: implicit TLS.

TLS uses a throw-away CA made with the ``openssl`` CLI (``ca_file``) and a
server certificate for ``localhost`` / ``127.0.0.1`` signed by it.

Authentication mechanisms: PLAIN, LOGIN and APOP.  APOP works in Dovecot 2.3
because the passwords are stored with the ``{PLAIN}`` scheme (APOP needs the
cleartext password on the server side); ``pop3-login`` then puts an APOP
timestamp into its greeting.

Failed logins: ``auth_failure_delay = 0`` (default 2 s) and the IP-based auth
penalty is disabled (``anvil-auth-penalty`` socket with ``mode = 0``; without
that, every failure from 127.0.0.1 delays *all* following logins, growing up
to 15 s).  A failed login still takes about 0.5 s: the auth process flushes
failure replies on a 500 ms timer.

Users: ``add_user()`` creates a fresh account.  Each user gets its own
passwd-file line in ``passwd.d/<name>`` (the passdb/userdb path contains
``%u``).  Reason: Dovecot's passwd-file driver stats its file at most once per
second (``last_sync_time == ioloop_time``), so a user appended to one shared
file may stay "unknown" for up to a second after a login of another user.  A
per-user file is opened on its first lookup, so a new user can log in
immediately without a restart or sleep.  ``passwd`` (one file with all lines)
is kept as well, for humans and for ``doveadm``-style inspection.

Mail files belong to a non-root user (IMAP/POP3 refuse to run as root): as
root the system user ``mailmigrate-test`` (created with ``useradd --system``
if missing); otherwise the current user (best effort).  ``first_valid_uid`` /
``first_valid_gid`` are set to it because system users have uid < 500
(otherwise: "OK Logged in, but initialization failed").
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MAIL_USER = "mailmigrate-test"
HOST = "127.0.0.1"

#: Folders created for every account, with their special-use attribute.
SPECIAL_USE = {
    "Gesendet": "\\Sent",
    "Entwürfe": "\\Drafts",
    "Papierkorb": "\\Trash",
    "Spam": "\\Junk",
    "Archive": "\\Archive",
}

_LIBEXEC_CANDIDATES = ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot")
_INSTALL_HINT = (
    "Dovecot is needed for the test suite: install the Debian/Ubuntu packages "
    "dovecot-core, dovecot-imapd and dovecot-pop3d "
    "(apt-get install dovecot-core dovecot-imapd dovecot-pop3d)."
)


class DovecotError(RuntimeError):
    """Dovecot could not be started / stopped, or doveadm failed."""


class DovecotUnavailable(DovecotError):
    """The dovecot binaries (or openssl) are not installed."""


@dataclass(frozen=True)
class User:
    name: str
    password: str


def check_binaries() -> None:
    """Raise DovecotUnavailable with an install hint if anything needed is missing."""
    missing = [b for b in ("dovecot", "doveadm", "doveconf", "openssl") if not shutil.which(b)]
    for prog in ("imap", "imap-login", "pop3", "pop3-login"):
        if not any(os.access(os.path.join(d, prog), os.X_OK) for d in _LIBEXEC_CANDIDATES):
            missing.append(prog)
    if missing:
        raise DovecotUnavailable(f"missing: {', '.join(missing)}. {_INSTALL_HINT}")


def free_ports(n: int) -> list[int]:
    """Return n distinct free TCP ports on 127.0.0.1 (bind port 0, then close)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mail_owner() -> tuple[int, int]:
    """uid/gid owning the mail files: MAIL_USER when root (created if missing)."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                MAIL_USER,
            ],
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam(MAIL_USER)
    return pw.pw_uid, pw.pw_gid


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise DovecotError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """Create a throw-away CA and a server cert for localhost/127.0.0.1.

    Returns (ca_file, server_cert, server_key).  EC P-256 keys: generating them
    takes milliseconds (RSA would be slower; no DH parameters are needed).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=mailmigrate test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _openssl(
        "req",
        "-new",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=directory,
    )
    (directory / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "0x" + secrets.token_hex(8),
        "-days",
        "825",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
        cwd=directory,
    )
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


_CONF = """\
# generated by tests/dovecot.py -- private test instance, not the system service
base_dir = {d}/run
state_dir = {d}/state
instance_name = mailmigrate-{name}
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot.log
debug_log_path = {d}/log/dovecot.log
{users}
protocols = imap pop3
listen = 127.0.0.1
shutdown_clients = yes

ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
# tests also use unencrypted loopback connections (2.4 name: auth_allow_cleartext)
disable_plaintext_auth = no
# apop needs cleartext passwords in the passdb: we store {{PLAIN}}
auth_mechanisms = plain login apop{oauth_mechs}
auth_failure_delay = 0
auth_verbose = yes

# mail is owned by a non-root (system) user; allow its low uid/gid
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:~/Maildir{layout}
mail_max_userip_connections = {max_userip}
# quota is on for everyone but unlimited unless a user's passwd line sets a
# rule (add_user(quota_bytes=...)): APPEND then fails with NO [OVERQUOTA]
mail_plugins = $mail_plugins quota
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
mail_fsync = {mail_fsync}
pop3_uidl_format = %08Xu%08Xv

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd.d/%u
}}
{oauth_passdb}userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd.d/%u
}}

namespace inbox {{
  inbox = yes
  separator = {sep}
  prefix = {prefix}
{mailboxes}}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
    ssl = yes
  }}
}}
# no IP-based auth penalty (failed logins would delay *all* later logins from
# 127.0.0.1 by 2..15 s): the auth process cannot use this anvil socket
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0666
  }}
}}
"""

# Opt-in (``oauth2_introspection_url``): SASL XOAUTH2 / OAUTHBEARER checked by
# an RFC 7662 introspection endpoint. The passwd-file passdb stays first, so
# password logins work as before; for a token it fails and this one decides.
_OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  args = {path}
}}
"""
_OAUTH2_CONF = """\
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
"""

_MAILBOX = """\
  mailbox "{name}" {{
    special_use = {use}
    auto = subscribe
  }}
"""


class DovecotServer:
    """A private Dovecot instance.  Use as a context manager or call start()/stop().

    Attributes after construction: ``host``, ``imap_port``, ``pop3_port``,
    ``imaps_port``, ``pop3s_port``, ``separator``, ``dir``, ``conf_path``,
    ``passwd_path``, ``log_path``, ``mail_dir``, ``ca_file``, ``uid``, ``gid``.

    ``tz``: value of TZ for the Dovecot processes (e.g. "Asia/Kolkata"); it
    decides the offset of every INTERNALDATE Dovecot returns (default: inherit).
    ``mail_fsync``: "never" by default -- it only matters for OS crashes, and
    it makes APPEND about 40 % faster; pass "optimized" for Dovecot's default.
    ``keep=True`` (or env ``MAILMIGRATE_KEEP_DOVECOT=1``) keeps the temp dir
    after stop() for post-mortem inspection.
    """

    kind = "dovecot"
    #: no personal namespace prefix by default ("namespace inbox { prefix = }")
    namespace_prefix: str
    #: CREATE "A/B/C" leaves "A" and "A/B" as \\Noselect placeholders
    noselect_parents = True
    #: INTERNALDATE comes back in the Dovecot process's zone (its TZ), not UTC
    internaldate_utc = False

    _counter = itertools.count(1)

    def __init__(
        self,
        separator: str = "/",
        *,
        tz: str | None = None,
        mail_fsync: str = "never",
        keep: bool | None = None,
        oauth2_introspection_url: str | None = None,
        max_userip_connections: int = 50,
        special_use: dict[str, str] | None = None,
        namespace_prefix: str = "",
    ) -> None:
        if separator not in ("/", "."):
            raise ValueError("separator must be '/' (Maildir LAYOUT=fs) or '.' (Maildir++)")
        if namespace_prefix and not namespace_prefix.endswith(separator):
            raise ValueError("a namespace prefix ends with the separator (INBOX. for '.')")
        #: Courier's shape is prefix "INBOX." with '.': Dovecot's namespace prefix setting
        #: gives the same NAMESPACE answer and folder names (doc.dovecot.org, Namespaces)
        self.namespace_prefix = namespace_prefix
        check_binaries()
        self.separator = separator
        self.tz = tz
        self.mail_fsync = mail_fsync
        self.oauth2_introspection_url = oauth2_introspection_url
        # A provider's connection cap (Dovecot counts per user and client IP).
        self.max_userip_connections = max_userip_connections
        #: Folders created for every user with their RFC 6154 attribute ({} for a
        #: server that announces none, as some providers' do).
        self.special_use = SPECIAL_USE if special_use is None else special_use
        self.host = HOST
        self.keep = bool(os.environ.get("MAILMIGRATE_KEEP_DOVECOT")) if keep is None else keep
        self.dir = Path(tempfile.mkdtemp(prefix="mm", dir="/tmp"))
        self.conf_path = self.dir / "dovecot.conf"
        self.passwd_path = self.dir / "passwd"
        self.passwd_dir = self.dir / "passwd.d"
        self.log_path = self.dir / "log" / "dovecot.log"
        self.stderr_path = self.dir / "log" / "stderr.log"
        self.mail_dir = self.dir / "mail"
        self.imap_port, self.pop3_port, self.imaps_port, self.pop3s_port = free_ports(4)
        self.uid, self.gid = _mail_owner()
        self._proc: subprocess.Popen[bytes] | None = None
        self._users = itertools.count(1)
        self._setup()

    # -- setup -------------------------------------------------------------

    def _setup(self) -> None:
        d = self.dir
        for sub in ("run", "state", "log", "mail", "passwd.d"):
            (d / sub).mkdir()
        # dovenull (login) / dovecot (internal) must reach the sockets in base_dir
        os.chmod(d, 0o755)
        os.chmod(d / "run", 0o755)
        if os.geteuid() == 0:
            os.chown(self.mail_dir, self.uid, self.gid)
        self.passwd_path.touch(mode=0o644)
        self.ca_file, self.cert_file, self.key_file = make_tls(d / "tls")
        users = ""
        if os.geteuid() != 0:  # best effort: run every process as ourselves
            me = pwd.getpwuid(os.getuid()).pw_name
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
            with contextlib.suppress(KeyError):
                users += f"default_internal_group = {grp.getgrgid(os.getgid()).gr_name}\n"
        mailboxes = "".join(_MAILBOX.format(name=n, use=u) for n, u in self.special_use.items())
        oauth_mechs = oauth_passdb = ""
        if self.oauth2_introspection_url:
            oauth_mechs = " xoauth2 oauthbearer"
            oauth_conf = d / "dovecot-oauth2.conf.ext"
            oauth_conf.write_text(_OAUTH2_CONF.format(url=self.oauth2_introspection_url))
            oauth_passdb = _OAUTH2_PASSDB.format(path=oauth_conf)
        self.conf_path.write_text(
            _CONF.format(
                d=d,
                name=f"{os.getpid()}-{next(self._counter)}",
                users=users,
                uid=self.uid,
                gid=self.gid,
                layout=":LAYOUT=fs" if self.separator == "/" else "",
                sep=self.separator,
                prefix=self.namespace_prefix,
                mailboxes=mailboxes,
                oauth_mechs=oauth_mechs,
                oauth_passdb=oauth_passdb,
                mail_fsync=self.mail_fsync,
                max_userip=self.max_userip_connections,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                pop3_port=self.pop3_port,
                pop3s_port=self.pop3s_port,
            ),
            encoding="utf-8",
        )

    # -- lifecycle ---------------------------------------------------------

    @property
    def master_pid_path(self) -> Path:
        return self.dir / "run" / "master.pid"

    def start(self, timeout: float = 15.0) -> DovecotServer:
        if self._proc is not None:
            return self
        env = dict(os.environ)
        if self.tz is not None:
            env["TZ"] = self.tz  # in Dovecot's default import_environment
        with open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        pending = {self.imap_port: b"* OK", self.pop3_port: b"+OK"}
        while pending:
            if self._proc.poll() is not None:
                self._proc = None
                raise DovecotError(f"dovecot exited during startup.\n{self._diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DovecotError(f"dovecot did not come up in {timeout}s.\n{self._diagnostics()}")
            for port, greeting in list(pending.items()):
                if _greets(port, greeting):
                    del pending[port]
            if pending:
                time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the master pid (base_dir/master.pid) and wait; then clean up."""
        proc, self._proc = self._proc, None
        if proc is not None:
            pid = proc.pid
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.master_pid_path.read_text().strip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if pid != proc.pid:  # should not happen with -F; be safe anyway
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if not self.keep and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"DovecotServer(sep={self.separator!r}, imap={self.imap_port}, "
            f"pop3={self.pop3_port}, imaps={self.imaps_port}, pop3s={self.pop3s_port}, "
            f"dir={str(self.dir)!r})"
        )

    # -- users -------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None,
                 quota_bytes: int | None = None) -> User:
        """Create a fresh, empty account; usable immediately (no restart).

        ``quota_bytes`` gives the account a storage quota (Dovecot's quota
        plugin): an APPEND beyond it is refused with ``NO [OVERQUOTA]``.
        """
        if name is None:
            name = f"u{next(self._users)}_{secrets.token_hex(3)}"
        if password is None:
            password = "pw-" + secrets.token_urlsafe(9)
        if any(c in name for c in ":/\n\\%") or name.startswith("."):
            raise ValueError(f"bad user name {name!r}")
        if ":" in password or "\n" in password:
            raise ValueError("password must not contain ':' or newline")
        target = self.passwd_dir / name
        if target.exists():
            raise ValueError(f"user {name!r} exists already")
        # user:password:uid:gid:gecos:home:shell:extra -- uid/gid empty so that
        # mail_uid/mail_gid apply (passwd-file rejects a literal uid 0).
        line = self._passwd_line(name, password, quota_bytes)
        self._write_passwd(name, line)
        with open(self.passwd_path, "a", encoding="utf-8") as f:
            f.write(line)
        return User(name, password)

    def _passwd_line(self, name: str, password: str, quota_bytes: int | None) -> str:
        extra = f"userdb_quota_rule=*:bytes={quota_bytes}" if quota_bytes is not None else ""
        return f"{name}:{{PLAIN}}{password}::::{self.mail_dir / name}::{extra}\n"

    def _write_passwd(self, name: str, line: str) -> None:
        tmp = self.passwd_dir / f".{name}.tmp"
        tmp.write_text(line, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.passwd_dir / name)

    def set_quota(self, user: User, quota_bytes: int | None) -> None:
        """Change (or with None lift) a user's quota; Dovecot re-reads the passwd
        file at most once a second, so this waits that long."""
        self._write_passwd(user.name, self._passwd_line(user.name, user.password, quota_bytes))
        time.sleep(1.1)

    def maildir(self, user: User | str) -> Path:
        """The user's Maildir root (exists after the first login)."""
        name = user.name if isinstance(user, User) else user
        return self.mail_dir / name / "Maildir"

    # -- tools -------------------------------------------------------------

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <our conf> ARGS``; raises DovecotError on failure if check."""
        r = subprocess.run(["doveadm", "-c", str(self.conf_path), *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise DovecotError(f"doveadm {' '.join(args)} failed (rc={r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def log_text(self) -> str:
        """The instance's log (plus anything dovecot printed on stderr)."""
        parts = []
        for p in (self.stderr_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(p.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    def _diagnostics(self, lines: int = 30) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return (
            f"dir={self.dir} conf={self.conf_path}\n--- log tail ---\n{tail or '(empty)'}\n"
            "(set MAILMIGRATE_KEEP_DOVECOT=1 to keep the directory)"
        )


def _greets(port: int, greeting: bytes) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            return s.recv(256).startswith(greeting)
    except OSError:
        return False
