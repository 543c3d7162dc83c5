"""Shared fixtures: private Dovecot and Cyrus per test session, fresh accounts per test.

* ``dovecot``: session-scoped DovecotServer, '/' separator (Maildir LAYOUT=fs).
* ``dovecot_dot``: session-scoped, '.' separator (Maildir++); started only
  when a test asks for it.
* ``cyrus``: session-scoped CyrusServer ('.' separator, personal namespace
  "INBOX."); started only when a test asks for it.
* ``server``: one of them, through the common interface of tests/servers.py.
  A test that takes ``server`` as an argument runs once per server
  (``test_x[dovecot]``, ``test_x[cyrus]``); ``@pytest.mark.servers("cyrus")``
  narrows that. A test that gets it only through ``account``/``imap`` (or
  that also asks for ``dovecot``) runs on Dovecot alone, as before.
* ``account`` / ``account_dot``: a fresh, empty user on ``server`` / ``dovecot_dot``.
* ``imap`` / ``imap_dot``: a logged-in IMAPClient for that account
  (``normalise_times = False``), logged out afterwards.
* ``imap_proxy``: a TcpProxy in front of ``dovecot``'s plain IMAP port.
* ``corpus``: ``seeding.corpus_messages()`` (loaded once).

Does not need pytest-xdist (we run serially); under xdist every worker would
simply start its own server on its own free ports.  If Dovecot is not
installed, tests that need it FAIL (not skip) with an install hint; the same for Cyrus
(``scripts/install-cyrus``).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cyrus import CyrusServer, CyrusUnavailable
from dovecot import DovecotServer, DovecotUnavailable, User
from oauth_server import AuthorizationServer, IntrospectionServer
from proxy import TcpProxy
from seeding import corpus_messages, imap_login
from servers import SERVERS, MailServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers(*kinds): run a test that takes `server` only on these servers")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``server`` for tests that name it (see the module docstring)."""
    if "server" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "server" in (names.split(",") if isinstance(names, str) else names):
            return  # the test chose its servers itself (indirect=["server"])
    own = inspect.signature(metafunc.function).parameters
    marker = metafunc.definition.get_closest_marker("servers")
    if "server" not in own and marker is None:
        return  # through account/imap only: Dovecot, unparametrised
    kinds = tuple(marker.args) if marker is not None else SERVERS
    if "dovecot" in metafunc.fixturenames:
        kinds = tuple(k for k in kinds if k == "dovecot")
    unknown = set(kinds) - set(SERVERS)
    if unknown:
        raise pytest.UsageError(f"{metafunc.function.__name__}: unknown servers {unknown}")
    metafunc.parametrize("server", kinds, indirect=True)


def _start(separator: str, **options: Any) -> DovecotServer:
    try:
        server = DovecotServer(separator, **options)
    except DovecotUnavailable as e:
        message = str(e)
    else:
        return server.start()
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    server = _start("/")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot_dot() -> Iterator[DovecotServer]:
    server = _start(".")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def courier_like() -> Iterator[DovecotServer]:
    """Dovecot with Courier's personal namespace: folders below ``INBOX.``, '.' between levels."""
    server = _start(".", namespace_prefix="INBOX.")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cyrus() -> Iterator[CyrusServer]:
    try:
        server = CyrusServer()
    except CyrusUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    yield server.start()
    server.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> MailServer:
    """The server this test instance runs against (``dovecot`` unless parametrised)."""
    kind = getattr(request, "param", "dovecot")
    if kind not in SERVERS:
        pytest.fail(f"server must be one of {SERVERS}, not {kind!r}", pytrace=False)
    chosen: MailServer = request.getfixturevalue(kind)
    return chosen


@pytest.fixture
def account(server: MailServer) -> User:
    return server.add_user()


@pytest.fixture
def account_dot(dovecot_dot: DovecotServer) -> User:
    return dovecot_dot.add_user()


def _logged_in(server: Any, user: User) -> Iterator:
    client = imap_login(server, user)
    yield client
    with contextlib.suppress(Exception):
        client.logout()


@pytest.fixture
def imap(server: MailServer, account: User) -> Iterator:
    yield from _logged_in(server, account)


@pytest.fixture
def imap_dot(dovecot_dot: DovecotServer, account_dot: User) -> Iterator:
    yield from _logged_in(dovecot_dot, account_dot)


@pytest.fixture
def imap_proxy(dovecot: DovecotServer) -> Iterator[TcpProxy]:
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        yield proxy


# OAuth2: Dovecot's oauth2 passdb asks a loopback RFC 7662 introspection endpoint
# (tests/oauth_server.py), shared by the OAuth2 test modules.
@pytest.fixture(scope="module")
def introspection() -> Iterator[IntrospectionServer]:
    with IntrospectionServer() as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_oauth(introspection: IntrospectionServer) -> Iterator[DovecotServer]:
    server = DovecotServer(oauth2_introspection_url=introspection.url).start()
    yield server
    server.stop()


# OAuth2 built in: a real authorization server (authlib's server side) whose tokens
# Dovecot validates through that server's own introspection endpoint.
@pytest.fixture(scope="module")
def authserver() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_as(authserver: AuthorizationServer) -> Iterator[DovecotServer]:
    server = DovecotServer(oauth2_introspection_url=authserver.dovecot_url).start()
    yield server
    server.stop()


@pytest.fixture
def oauth_home(tmp_path: Path) -> Path:
    """HOME, config and state dirs (and the file keyring) of one OAuth2 CLI test."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def oauth_env(oauth_home: Path, tmp_path: Path, authserver: AuthorizationServer,
              dovecot_as: DovecotServer) -> dict[str, str]:
    """The CLI's environment: ``oauth_home``, and presets naming ``authserver``."""
    from oauth_helpers import CLIENT_ID, SCOPES, write_presets
    from test_jobs import job_env

    presets = write_presets(tmp_path / "profiles", authserver, dovecot_as)
    authserver.add_public_client(CLIENT_ID, SCOPES)
    return job_env(oauth_home, MAILMIGRATE_PROFILES_DIR=str(presets))


@pytest.fixture(scope="session")
def corpus() -> list[tuple[str, bytes]]:
    return corpus_messages()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """Attach the tail of the server's log to reports of failed tests that used it."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in ("dovecot", "dovecot_dot", "cyrus", "server"):
        server = funcargs.get(name)
        if isinstance(server, DovecotServer | CyrusServer):
            tail = "\n".join(server.log_text().splitlines()[-40:])
            report.sections.append((f"{name} log (last 40 lines)", tail))
