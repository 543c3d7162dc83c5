"""Shared by the OAuth2 tests: presets naming the loopback authorization server, the
CLI's sign-in driven as a user would (approving on the device page, or a real HTTP
client playing the browser), and what Dovecot's log says about logins."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests
from cli_helpers import CliResult
from dovecot import DovecotServer, User
from oauth_server import AuthorizationServer
from seeding import bulk_append, imap_login, seed_messages

CLIENT_ID = "mailmigrate-test"
SCOPES = ("imap", "offline_access")
DEVICE_DOMAIN = "idp.test"  # preset "testidp": the device grant
CODE_DOMAIN = "web.idp.test"  # preset "testweb": authorization code + PKCE

_PRESET = """\
name = "{name}"
domains = ["{domain}"]
login = "address"

[imap]
host = "127.0.0.1"
port = {imap_port}
tls = "starttls"

[pop3]
host = "127.0.0.1"
port = {pop3_port}
tls = "starttls"

[oauth2]
mechanisms = ["XOAUTH2", "OAUTHBEARER"]
authorization_url = "{base}/authorize"
token_url = "{base}/token"
device_authorization_url = "{base}/device_authorization"
revocation_url = "{base}/revoke"
scopes = ["imap", "offline_access"]
client_id = "{client_id}"
flow = "{flow}"
"""


def write_presets(directory: Path, authserver: AuthorizationServer, dovecot: DovecotServer) -> Path:
    """A profiles dir (``MAILMIGRATE_PROFILES_DIR``) with two presets of the test
    identity provider: ``testidp`` (device grant, and the one whose server
    127.0.0.1 is) and ``testweb`` (authorization code with PKCE)."""
    directory.mkdir(parents=True, exist_ok=True)
    for pid, name, domain, flow in (("testidp", "Test IdP", DEVICE_DOMAIN, "device"),
                                    ("testweb", "Test IdP (web)", CODE_DOMAIN, "code")):
        (directory / f"{pid}.toml").write_text(_PRESET.format(
            name=name, domain=domain, imap_port=dovecot.imap_port, pop3_port=dovecot.pop3_port,
            base=authserver.base, client_id=CLIENT_ID, flow=flow))
    return directory


def new_account(authserver: AuthorizationServer, dovecot: DovecotServer, local: str,
                domain: str = DEVICE_DOMAIN, messages: int = 0, size: int | None = None) -> User:
    """An address known to both servers (Dovecot's user name is the address; it also
    has a password, for seeding), with ``messages`` seeded into INBOX."""
    address = f"{local}_{secrets.token_hex(3)}@{domain}"
    user = dovecot.add_user(name=address)
    authserver.add_user(address)
    if messages:
        client = imap_login(dovecot, user)
        bulk_append(client, "INBOX", list(seed_messages(messages, size, tag=local)))
        client.logout()
    return user


def imap_url(dovecot: DovecotServer, address: str, query: str = "") -> str:
    user = address.replace("@", "%40")
    return f"imap://{user}@{dovecot.host}:{dovecot.imap_port}?tls=none{query}"


def approve_on_device_page(authserver: AuthorizationServer, address: str) -> Callable[[str], None]:
    """What the user does on their phone: open the verification page, type the code."""
    def act(user_code: str) -> None:
        page = requests.get(f"{authserver.base}/device", timeout=10)
        assert page.status_code == 200
        done = requests.post(f"{authserver.base}/device",
                             data={"user_code": user_code, "username": address}, timeout=10)
        assert done.status_code == 200
    return act


def browser(address: str, decision: str = "allow") -> Callable[[str], None]:
    """A real HTTP client as the browser: open the authorization URL, answer the consent
    form, follow the redirect to mailmigrate's loopback listener."""
    def act(url: str) -> None:
        with requests.Session() as session:
            form = session.get(url, timeout=10)
            assert form.status_code == 200, form.text
            done = session.post(url, data={"username": address, "decision": decision},
                                timeout=10)
            assert done.url.startswith("http://127.0.0.1:"), done.url
    return act


def cli_login(env: dict[str, str], address: str, *extra: str,
              on_code: Callable[[str], None] | None = None,
              on_url: Callable[[str], None] | None = None, timeout: float = 60) -> CliResult:
    """``mailmigrate auth login ADDRESS`` in a subprocess; when it prints the device
    code (or the authorization URL) on stderr, ``on_code`` (``on_url``) acts on it."""
    proc = subprocess.Popen([sys.executable, "-m", "migrate", "auth", "login", address,
                             "--no-browser", *extra], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        code = re.search(r"enter the code (\S+)", line)
        if code and on_code is not None:
            on_code(code.group(1))
            break
        url = re.match(r"mailmigrate: (http\S+/authorize\?\S+)", line)
        if url and on_url is not None:
            on_url(url.group(1))
            break
    out, err = proc.communicate(timeout=timeout)
    return CliResult(proc.returncode, out, "".join(seen) + err)


def logins(dovecot: DovecotServer, user: str) -> list[str]:
    """The SASL mechanism of every successful login of ``user``, in order (seeding
    logged in with PLAIN first, where the test seeded)."""
    return [line.split("method=")[1].split(",")[0] for line in dovecot.log_text().splitlines()
            if f"Login: user=<{user}>" in line]


def oauth_logins(dovecot: DovecotServer, user: str) -> list[str]:
    return [m for m in logins(dovecot, user) if m != "PLAIN"]
