"""Transient is transient: a connection cut anywhere in the login sequence (greeting,
STARTTLS, LOGIN, NAMESPACE), on the first connection of a run or on a reconnect, is
retried like any other drop; exit 3 only for the server's own NO to the credentials.

The cuts are made by the real TCP proxy between the CLI and Dovecot, at a chosen
pattern of the byte stream (``TcpProxy.cut_on``), so the instant is exact."""

from __future__ import annotations

import imaplib

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, imap_url, run_cli
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from proxy import TcpProxy
from seeding import bulk_append, fetch_all, imap_login, seed_message
from test_fault_reconnect import after_server_bytes, proxied_url, run_with_faults

from migrate.stores.imap import login_refusal

FAST = ["--retries", "4", "--retry-delay", "0.05", "--timeout", "5"]


def seeded(dovecot, user, n: int = 20, size: int = 20_000) -> list[bytes]:
    msgs = [seed_message(i, size, tag="login") for i in range(n)]
    client = imap_login(dovecot, user)
    try:
        bulk_append(client, "INBOX", msgs)
    finally:
        client.logout()
    return msgs


def backup_via(proxy: TcpProxy, user, archive, *extra: str):
    return run_cli("backup", proxied_url(proxy, user), str(archive), "--password-env",
                   PASSWORD_ENV, "--json", *FAST, *extra, env=cli_env(user.password))


def _wrapped(inner: Exception) -> LoginError:
    """A LoginError the way imapclient raises it: from inside an ``except`` of ``inner``."""
    try:
        try:
            raise inner
        except IMAPClientError as e:
            raise LoginError(str(e)) from None
    except LoginError as exc:
        exc.__context__ = inner
        return exc


def test_login_error_tells_a_refusal_from_a_drop():
    assert login_refusal(_wrapped(IMAPClientError("login failed: [AUTHENTICATIONFAILED] no")))
    assert login_refusal(_wrapped(imaplib.IMAP4.error("LOGIN command error: BAD [b'syntax']")))
    assert not login_refusal(_wrapped(IMAPClientAbortError("socket error: EOF")))
    # a BYE that says why is a refusal even though imaplib reports it as an abort
    assert login_refusal(_wrapped(IMAPClientAbortError("[AUTHENTICATIONFAILED] go away")))


@pytest.mark.parametrize(("pattern", "direction", "forward"), [
    (b"* OK", "s2c", False),        # the greeting never arrives
    (b" LOGIN ", "c2s", False),     # LOGIN never reaches the server
    (b" LOGIN ", "c2s", True),      # LOGIN reaches it; its OK never comes back
    (b" LIST ", "c2s", False),      # right after login: the folder listing
])
def test_a_cut_in_the_first_connection_is_retried(dovecot, account, tmp_path, pattern,
                                                  direction, forward):
    msgs = seeded(dovecot, account)
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        proxy.cut_on(pattern, direction=direction, forward=forward)
        done = backup_via(proxy, account, tmp_path / "a.sqlite")
        accepted = proxy.connections_accepted
    assert done.code == 0, done.err
    assert "Traceback" not in done.err and "authentication failed" not in done.err
    assert accepted >= 2, "the cut connection was replaced"
    assert "trying again in" in done.err or "reconnecting in" in done.err, done.err
    assert sorted(raw for raw, _, _ in archive_contents(tmp_path / "a.sqlite")["INBOX"].values()) \
        == sorted(msgs)


def test_a_cut_during_starttls_is_retried(dovecot, account, tmp_path):
    seeded(dovecot, account, 3)
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        proxy.cut_on(b"STARTTLS", rst=True)
        done = run_cli("backup", f"imap://{account.name}@localhost:{proxy.port}",
                       str(tmp_path / "a.sqlite"), "--password-env", PASSWORD_ENV, "--cafile",
                       str(dovecot.ca_file), *FAST, env=cli_env(account.password))
    assert done.code == 0, done.err
    assert len(archive_contents(tmp_path / "a.sqlite")["INBOX"]) == 3


def test_a_cut_login_on_a_reconnect_mid_run_is_retried(dovecot, account, tmp_path):
    """The issue's case: a drop mid-FETCH, then the reconnect's LOGIN is cut too."""
    msgs = seeded(dovecot, account, 40, 40_000)
    archive = tmp_path / "a.sqlite"
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        def reset_then_cut_login(p: TcpProxy) -> None:
            p.cut_on(b" LOGIN ", times=2)
            p.reset()
        code, _, err, fired = run_with_faults(
            ["backup", proxied_url(proxy, account), str(archive), "--password-env", PASSWORD_ENV,
             *FAST], cli_env(account.password),
            [(proxy, [after_server_bytes(400_000, reset_then_cut_login)])])
    assert code == 0, err
    assert fired == [1]
    assert "authentication failed" not in err and "Traceback" not in err
    assert err.count("lost during login") >= 2, err
    assert len(archive_contents(archive)["INBOX"]) == len(msgs)


def test_a_real_no_is_exit_3_at_once(dovecot, account, tmp_path):
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        done = run_cli("backup", proxied_url(proxy, account), str(tmp_path / "a.sqlite"),
                       "--password-env", PASSWORD_ENV, *FAST, env=cli_env("wrong"))
        accepted = proxy.connections_accepted
    assert done.code == 3, done.err
    assert "authentication failed" in done.err and "Traceback" not in done.err
    assert accepted == 1, "a refused password is not tried again"


def test_restore_and_copy_retry_a_cut_login_on_either_side(dovecot, tmp_path):
    a, b, c = dovecot.add_user(), dovecot.add_user(), dovecot.add_user()
    msgs = seeded(dovecot, a, 10)
    archive = tmp_path / "a.sqlite"
    assert run_cli("backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
                   password=a.password).code == 0
    env = cli_env(b.password, XDG_STATE_HOME=str(tmp_path / "xdg"), MM_SRC=a.password,
                  MM_DST=c.password)
    with TcpProxy(dovecot.host, dovecot.imap_port) as dst:
        dst.cut_on(b" LOGIN ", forward=True)
        restored = run_cli("restore", str(archive), proxied_url(dst, b), "--password-env",
                           PASSWORD_ENV, *FAST, env=env)
    assert restored.code == 0, restored.err
    with TcpProxy(dovecot.host, dovecot.imap_port) as src, \
            TcpProxy(dovecot.host, dovecot.imap_port) as dst:
        src.cut_on(b" LOGIN ")
        dst.cut_on(b" NAMESPACE")
        copied = run_cli("copy", proxied_url(src, a), proxied_url(dst, c), "--password-env",
                         "MM_SRC", "--dest-password-env", "MM_DST", *FAST, env=env)
    assert copied.code == 0, copied.err
    for user in (b, c):
        client = imap_login(dovecot, user)
        try:
            assert sorted(raw for raw, _, _ in fetch_all(client, "INBOX").values()) == sorted(msgs)
        finally:
            client.logout()


# -- POP3 ---------------------------------------------------------------------------------
def drain_via(proxy: TcpProxy, user, archive, password: str, *extra: str):
    return run_cli("drain", f"pop3://{user.name}@127.0.0.1:{proxy.port}?tls=none", str(archive),
                   "--password-env", PASSWORD_ENV, "--json", *FAST, *extra,
                   env=cli_env(password))


@pytest.mark.parametrize(("pattern", "direction", "auth"), [
    (b"+OK", "s2c", "auto"),      # the greeting
    (b"PASS ", "c2s", "user"),    # USER/PASS
    (b"AUTH ", "c2s", "plain"),   # SASL PLAIN
    (b"UIDL", "c2s", "auto"),     # after login, first command of the transfer
])
def test_pop3_cut_in_the_first_session_is_retried(dovecot, account, tmp_path, pattern,
                                                  direction, auth):
    msgs = seeded(dovecot, account, 5)
    with TcpProxy(dovecot.host, dovecot.pop3_port) as proxy:
        proxy.cut_on(pattern, direction=direction)
        done = drain_via(proxy, account, tmp_path / "a.sqlite", account.password, "--auth", auth)
        accepted = proxy.connections_accepted
    assert done.code == 0, done.err
    assert accepted >= 2 and "authentication failed" not in done.err, done.err
    assert done.json()["new_messages"] == len(msgs)


def test_pop3_wrong_password_is_exit_3_at_once(dovecot, account, tmp_path):
    with TcpProxy(dovecot.host, dovecot.pop3_port) as proxy:
        done = drain_via(proxy, account, tmp_path / "a.sqlite", "wrong")
        accepted = proxy.connections_accepted
    assert done.code == 3, done.err
    assert "authentication failed" in done.err and accepted == 1


def test_a_cut_during_authenticate_is_retried_without_burning_the_token(dovecot_oauth,
                                                                      introspection, tmp_path):
    """OAUTHBEARER: the AUTHENTICATE reaches the server, its answer never comes back. A
    drop is no refusal: the same token logs in on the next connection (the token
    command is not asked for a "fresh" one, as it would be after a NO)."""
    from test_oauth2 import runs, token_command

    user = dovecot_oauth.add_user()
    seeded(dovecot_oauth, user, 3)
    introspection.grant(f"tok-{user.name}", user.name)
    cmd = token_command(tmp_path, [f"tok-{user.name}"] * 5)
    with TcpProxy(dovecot_oauth.host, dovecot_oauth.imap_port) as proxy:
        proxy.cut_on(b"AUTHENTICATE", forward=True)
        done = run_cli("backup", f"imap://{user.name}@127.0.0.1:{proxy.port}?tls=none&auth=oauthbearer",
                       str(tmp_path / "a.sqlite"), "--oauth2-token-command", cmd, *FAST,
                       env=cli_env())
        accepted = proxy.connections_accepted
    assert done.code == 0, done.err
    assert accepted >= 2 and "authentication failed" not in done.err
    assert runs(tmp_path) == 1  # the token is kept: a drop asks for no refresh
    assert len(archive_contents(tmp_path / "a.sqlite")["INBOX"]) == 3
