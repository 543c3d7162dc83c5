"""The POP3 store on its own: wire format, authentication, TLS, no-UIDL and broken servers.

Dovecot for everything it can show (auth mechanisms, TLS, dot-stuffing);
tests/fake_pop3.py only for a server without UIDL or SASL, and broken ones.
"""

from __future__ import annotations

import sqlite3

import pytest
from cli_helpers import PASSWORD_ENV, run_cli
from fake_pop3 import FakePop3
from seeding import append, imap_login

from migrate.config.endpoints import PasswordSource, parse_endpoint
from migrate.errors import AuthError, ConnectError
from migrate.model import FolderCheckpoint
from migrate.stores.pop3 import INBOX, Pop3Source, unstuff


def drain_args(url: str, archive, *extra: str) -> list[str]:
    return ["drain", url, str(archive), "--password-env", PASSWORD_ENV, "--json", *extra]


def test_unstuff_removes_exactly_one_leading_dot_per_line():
    assert unstuff(b"..\r\n...\r\n..x\r\nx.\r\n") == b".\r\n..\r\n.x\r\nx.\r\n"
    assert unstuff(b"a\r\n.\r\n") == b"a\r\n\r\n"  # never produced by a correct server
    assert unstuff(b"") == b""


def source(dovecot, user, *, scheme="pop3", auth="auto", cafile=None, port=None) -> Pop3Source:
    if scheme == "pop3s":
        url = f"pop3s://{user.name}@localhost:{port or dovecot.pop3s_port}"
    elif cafile:  # STLS on the plain port
        url = f"pop3://{user.name}@localhost:{port or dovecot.pop3_port}"
    else:
        url = f"pop3://{user.name}@127.0.0.1:{port or dovecot.pop3_port}?tls=none"
    endpoint = parse_endpoint(url, cafile=cafile, protocols=("pop3",))
    return Pop3Source(endpoint, PasswordSource(env=None, _cached=user.password), auth=auth)


def fetch_all(src: Pop3Source) -> dict[str, bytes]:
    refs = list(src.list_new(INBOX, FolderCheckpoint()))
    return {m.key: m.raw for m in src.fetch(INBOX, refs)}


@pytest.mark.parametrize("auth", ["auto", "plain", "user", "apop"])
@pytest.mark.parametrize("tls", ["none", "stls", "pop3s"])
def test_auth_mechanisms_and_tls(dovecot, account, auth, tls):
    client = imap_login(dovecot, account)
    append(client, "INBOX", b"Subject: hi\r\n\r\n.\r\n..\r\nend\r\n")
    client.logout()
    cafile = str(dovecot.ca_file) if tls != "none" else None
    src = source(dovecot, account, scheme="pop3s" if tls == "pop3s" else "pop3", auth=auth,
                 cafile=cafile)
    try:
        assert list(fetch_all(src).values()) == [b"Subject: hi\r\n\r\n.\r\n..\r\nend\r\n"]
        assert src.session.pipelining
    finally:
        src.close()


def test_wrong_password_is_auth_error_for_every_mechanism(dovecot, account):
    for auth in ("plain", "user", "apop"):
        endpoint = parse_endpoint(f"pop3://{account.name}@127.0.0.1:{dovecot.pop3_port}?tls=none",
                                  protocols=("pop3",))
        with pytest.raises(AuthError, match="authentication failed"):
            Pop3Source(endpoint, PasswordSource(_cached="wrong"), auth=auth)


def test_untrusted_certificate_and_missing_stls_are_connect_errors(dovecot, account):
    with pytest.raises(ConnectError, match="not trusted"):
        source(dovecot, account, scheme="pop3s")  # no --cafile: the test CA is unknown
    with FakePop3([b"Subject: x\r\n\r\ny\r\n"]) as fake:  # the fake has no STLS
        endpoint = parse_endpoint(f"pop3://fake@localhost:{fake.port}", protocols=("pop3",))
        with pytest.raises(ConnectError, match="does not offer STLS"):
            Pop3Source(endpoint, PasswordSource(_cached="secret"))


def test_cli_exit_codes_for_auth_and_tls(dovecot, account, tmp_path):
    url = f"pop3://{account.name}@127.0.0.1:{dovecot.pop3_port}?tls=none"
    bad = run_cli(*drain_args(url, tmp_path / "a.sqlite"), password="wrong")
    assert bad.code == 3 and "authentication failed" in bad.err and "Traceback" not in bad.err
    tls = run_cli(*drain_args(f"pop3s://{account.name}@localhost:{dovecot.pop3s_port}",
                              tmp_path / "a.sqlite"), password=account.password)
    assert tls.code == 4 and "--cafile" in tls.err
    good = run_cli(*drain_args(f"pop3s://{account.name}@localhost:{dovecot.pop3s_port}",
                               tmp_path / "a.sqlite", "--cafile", str(dovecot.ca_file)),
                   password=account.password)
    assert good.code == 0, good.err
    usage = run_cli(*drain_args(url, tmp_path / "a.sqlite", "--delete", "--delete-older-than", "3"),
                    password=account.password)
    assert usage.code == 2 and "not both" in usage.err
    imap = run_cli(*drain_args(f"imap://{account.name}@127.0.0.1", tmp_path / "a.sqlite"),
                   password=account.password)
    assert imap.code == 2 and "pop3" in imap.err


def _msg(i: int, body: bytes = b"body\r\n") -> bytes:
    return f"Message-ID: <f{i}@fake>\r\nSubject: fake {i}\r\n\r\n".encode() + body


def test_server_without_uidl_uses_fingerprints(tmp_path):
    msgs = [_msg(i, b".\r\n..dots\r\n" * i) for i in range(5)]
    twin = _msg(99, b"same headers, same size\r\n")
    twin_b = _msg(99, b"same headers, SAME size\r\n")  # differs only in the body
    with FakePop3([*msgs, twin, twin_b]) as fake:
        archive = tmp_path / "a.sqlite"
        first = run_cli(*drain_args(fake.url, archive), password="secret")
        assert first.code == 0, first.err
        summary = first.json()
        assert summary["fingerprinted"] is True
        assert summary["new_messages"] == 6, "identical fingerprints collapse into one"
        assert "UIDL" not in fake.commands and "TOP" in fake.commands
        conn = sqlite3.connect(archive)
        stored = {bytes(r[0]) for r in conn.execute("SELECT raw FROM messages")}
        keys = [r[0] for r in conn.execute("SELECT uidl FROM folder_messages")]
        conn.close()
        assert set(msgs) <= stored
        assert all(k.startswith("fp:") for k in keys) and len(set(keys)) == 6

        again = run_cli(*drain_args(fake.url, archive), password="secret")
        assert again.json()["new_messages"] == 0, "fingerprints are stable across sessions"

        fake.add(_msg(7))
        delete = run_cli(*drain_args(fake.url, archive, "--delete"), password="secret")
        assert delete.code == 0, delete.err
        assert delete.json()["new_messages"] == 1
        assert delete.json()["deleted"] == 6
        # the two look-alikes share a key: the archive holds one of them, so neither is deleted
        assert sorted(fake.messages) == sorted([twin, twin_b])
        assert "more than once" in delete.err


def test_user_pass_fallback_without_sasl(tmp_path):
    with FakePop3([_msg(1)], uidl=True) as fake:
        result = run_cli(*drain_args(fake.url, tmp_path / "a.sqlite"), password="secret")
        assert result.code == 0, result.err
        assert "USER" in fake.commands and "PASS" in fake.commands and "AUTH" not in fake.commands
        assert result.json()["fingerprinted"] is False


def test_refused_retr_is_reported_and_never_deleted(tmp_path):
    with FakePop3([_msg(i) for i in range(4)], uidl=True, refuse_retr={2}) as fake:
        archive = tmp_path / "tree"
        result = run_cli(*drain_args(fake.url, archive, "--delete"), password="secret")
        assert result.code == 1, result.err
        summary = result.json()
        assert summary["new_messages"] == 3
        assert summary["deleted"] == 3
        assert len(summary["failed"]) == 1 and "message 2" in summary["failed"][0]
        assert fake.messages == [_msg(1)], "the message that was not archived stays"


@pytest.mark.parametrize("fault", ["garbage", "drop"])
def test_broken_server_deletes_nothing(tmp_path, fault):
    msgs = [_msg(i, b"x" * 5000 + b"\r\n") for i in range(6)]
    kwargs = {"garbage_on_retr": {4}} if fault == "garbage" else {"drop_on_retr": {4}}
    with FakePop3(msgs, uidl=True, **kwargs) as fake:
        archive = tmp_path / "a.sqlite"
        result = run_cli(*drain_args(fake.url, archive, "--delete", "--retry-delay", "0.01"),
                         password="secret")
        assert "Traceback" not in result.err
        if fault == "garbage":
            assert result.code == 1 and "not a POP3 reply" in result.err
        else:
            # The connection drops on RETR 4 every time: after fresh connections
            # (migrate.engine.retry) that message alone is reported, the rest archived.
            assert result.code == 1 and "nothing was deleted" in result.err
            assert "message 4" in result.err or "skipped" in result.err
        assert "DELE" not in fake.commands
        assert fake.messages == msgs
        # the server heals: the next run fetches the rest and then deletes everything
        fake.garbage_on_retr.clear()
        fake.drop_on_retr.clear()
        healed = run_cli(*drain_args(fake.url, archive, "--delete"), password="secret")
        assert healed.code == 0, healed.err
        assert fake.messages == []
        conn = sqlite3.connect(archive)
        assert sorted(bytes(r[0]) for r in conn.execute("SELECT raw FROM messages")) == sorted(msgs)
        conn.close()
