"""Every test server through one interface (tests/servers.py): what each offers and what
it does to what it stores. These pin down the Cyrus part of tests/seeding.py's docstring
(Dovecot's is pinned by tests/test_fixture.py) and ``servers.stored``, the rule both
follow; when a server's behaviour changes, these fail and the docstring must change.
"""

from __future__ import annotations

import poplib
import re
import ssl
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cyrus import CyrusServer, CyrusUnavailable, check_binaries
from imapclient import IMAPClient
from seeding import (
    append,
    bulk_append,
    corpus_messages,
    create_folder,
    delimiter,
    fetch_all,
    imap_connect,
    imap_login,
    list_folders,
    namespace_prefix,
    pop3,
    seed_message,
    seed_messages,
    server_name,
    tls_context,
)
from servers import stored
from test_fixture import EDGE_CASES, PAST


def test_login_special_use_and_namespace(server) -> None:
    client = imap_login(server, server.add_user())
    try:
        folders = list_folders(client)
        assert set(folders) == {"INBOX", *server.special_use}
        for name, use in server.special_use.items():
            assert use.encode() in folders[name], (name, folders[name])
        assert delimiter(client) == server.separator
        assert namespace_prefix(client) == server.namespace_prefix
        subscribed = {name for _f, _d, name in client.list_sub_folders()}
        assert {server_name(client, n) for n in server.special_use} <= subscribed
    finally:
        client.logout()


def test_folders_relative_to_the_namespace(server) -> None:
    """'/'-paths are relative to the personal namespace; parents differ per server."""
    client = imap_login(server, server.add_user())
    try:
        assert server_name(client, "INBOX") == "INBOX"
        assert create_folder(client, "A/B/C") == server.namespace_prefix + server.separator.join(
            "ABC")
        create_folder(client, "日本語")
        raw = {name for _f, _d, name in client.list_folders()}
        assert server.namespace_prefix + "日本語" in raw
        folders = list_folders(client)
        for parent in ("A", "A/B"):
            assert (b"\\Noselect" in folders[parent]) == server.noselect_parents, folders[parent]
        append(client, "A/B/C", seed_message(6), (), PAST)
        assert [m[0] for m in fetch_all(client, "A/B/C").values()] == [seed_message(6)]
    finally:
        client.logout()


def test_new_users_are_fresh_and_log_in_at_once(server) -> None:
    users = [server.add_user() for _ in range(3)]
    client = imap_login(server, users[0])
    append(client, "INBOX", seed_message(1), (), PAST)
    client.logout()
    for user in users[1:]:
        client = imap_login(server, user)
        assert fetch_all(client, "INBOX") == {}
        client.logout()
    bad = imap_connect(server)
    with pytest.raises(IMAPClient.Error):
        bad.login(users[0].name, "wrong")
    bad.shutdown()


def test_corpus_is_stored_as_the_rule_says(server, corpus) -> None:
    """Each corpus file comes back as ``stored`` predicts, or is refused when it says so."""
    client = imap_login(server, server.add_user())
    flags = (b"\\Seen", b"$Forwarded")
    refused, changed, uids = [], [], {}
    for path, raw in corpus:
        expected = stored(server.kind, raw)
        try:
            uids[path] = append(client, "INBOX", raw, flags, PAST)
        except IMAPClient.Error:
            refused.append(path)
            assert expected is None, f"{path} refused: {server.kind} should keep it"
            continue
        assert expected is not None, f"{path} kept: the rule says {server.kind} refuses it"
    got = fetch_all(client, "INBOX")
    for path, raw in corpus:
        if path in uids:
            body, got_flags, idate = got[uids[path]]
            assert body == stored(server.kind, raw), path
            assert set(got_flags) == set(flags) and idate == PAST, path
            if body != re.sub(rb"\r\n|\r|\n", b"\r\n", raw):
                changed.append(path)
    client.logout()
    if server.kind == "dovecot":
        assert (refused, changed) == ([], [])
    else:
        assert (len(refused), len(changed)) == (8, 17), (refused, changed)


def append_as_sent(client: IMAPClient, folder: str, raw: bytes) -> int | None:
    """APPEND the bytes unchanged (MULTIAPPEND with LITERAL+, as mailmigrate sends them,
    not imaplib's APPEND, which rewrites line ends); the UID, or None when refused."""
    typ, data = client.multiappend(server_name(client, folder), [{"msg": raw, "flags": ()}])
    if typ != "OK":
        return None
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


@pytest.mark.parametrize("as_sent", [False, True], ids=["imaplib", "as-sent"])
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_byte_edge_cases(server, name: str, as_sent: bool) -> None:
    raw, dovecot_gives = EDGE_CASES[name]
    client = imap_login(server, server.add_user())
    try:
        expected = stored(server.kind, raw, as_sent=as_sent)
        if server.kind == "dovecot" and not as_sent:
            assert expected == dovecot_gives  # the rule agrees with tests/test_fixture.py
        if as_sent:
            uid = append_as_sent(client, "INBOX", raw)
            assert (uid is None) == (expected is None)
        elif expected is None:
            with pytest.raises(IMAPClient.Error):
                append(client, "INBOX", raw, (), PAST)
            uid = None
        else:
            uid = append(client, "INBOX", raw, (), PAST)
        if uid is not None:
            assert fetch_all(client, "INBOX")[uid][0] == expected
    finally:
        client.logout()


def test_corpus_sent_unchanged_is_stored_as_the_rule_says(server, corpus) -> None:
    client = imap_login(server, server.add_user())
    try:
        uids = {path: append_as_sent(client, "INBOX", raw) for path, raw in corpus}
        got = fetch_all(client, "INBOX")
        for path, raw in corpus:
            expected = stored(server.kind, raw, as_sent=True)
            assert (uids[path] is None) == (expected is None), path
            if uids[path] is not None:
                assert got[uids[path]][0] == expected, path
        refused = sum(uid is None for uid in uids.values())
        assert refused == (0 if server.kind == "dovecot" else 8 + 98 - 2), refused
    finally:
        client.logout()


def test_munged_header_and_refusals_on_cyrus(cyrus: CyrusServer) -> None:
    """The Cyrus facts a user will meet, spelled out."""
    client = imap_login(cyrus, cyrus.add_user())
    try:
        uid = append(client, "INBOX", "Subject: Grüße\r\n\r\nÄÖÜ\r\n".encode(), (), PAST)
        assert fetch_all(client, "INBOX")[uid][0] == "Subject: GrXXXXe\r\n\r\nÄÖÜ\r\n".encode()
        for raw, why in ((b"", "Zero-length"), (b"Subject: n\r\n\r\na\x00b\r\n", "NUL"),
                         (b"just a body line\r\n", "invalid header")):
            with pytest.raises(IMAPClient.Error, match=why):
                append(client, "INBOX", raw)
    finally:
        client.logout()


def test_internaldate_zone_and_limits(server) -> None:
    client = imap_login(server, server.add_user())
    try:
        plus2 = datetime(2020, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        uid = append(client, "INBOX", seed_message(1), (), plus2)
        got = fetch_all(client, "INBOX")[uid][2]
        assert got == plus2  # the instant, always
        if server.internaldate_utc:
            assert got.utcoffset() == timedelta(0) and got.isoformat() == "2020-05-06T05:08:09+00:00"
        else:
            assert got.utcoffset() == plus2.astimezone().utcoffset()  # the server's zone
        if server.kind == "cyrus":
            future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
            uid = append(client, "INBOX", seed_message(2), (), future)
            assert fetch_all(client, "INBOX")[uid][2] == future  # kept, unlike Dovecot
            uid = append(client, "INBOX", seed_message(3), (), datetime(1970, 1, 1, tzinfo=UTC))
            assert fetch_all(client, "INBOX")[uid][2] > datetime(2020, 1, 1, tzinfo=UTC)
            with pytest.raises(IMAPClient.Error, match="Invalid date-time"):
                append(client, "INBOX", seed_message(4), (), datetime(1969, 7, 20, tzinfo=UTC))
    finally:
        client.logout()


def test_flags_and_keywords_are_kept(server) -> None:
    client = imap_login(server, server.add_user())
    try:
        flags = (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"\\Seen",
                 b"$Forwarded", b"Junk", b"$label1", b"$MDNSent")
        uid = append(client, "INBOX", seed_message(1), flags, PAST)
        assert set(fetch_all(client, "INBOX")[uid][1]) == set(flags)
    finally:
        client.logout()


def test_bulk_append_and_pop3(server) -> None:
    user = server.add_user()
    client = imap_login(server, user)
    msgs = list(seed_messages(150, 700))
    uids = bulk_append(client, "INBOX", msgs)
    assert uids == list(range(1, 151))
    uidvalidity = client.select_folder("INBOX")[b"UIDVALIDITY"]
    client.logout()
    conn = pop3(server, user)
    try:
        assert conn.stat() == (150, sum(len(m) for m in msgs))
        listing = conn.uidl()[1]
        if server.kind == "cyrus":
            assert listing[0] == f"1 {uidvalidity}.1".encode()
        else:
            assert listing[0] == f"1 {1:08x}{uidvalidity:08x}".encode()
        assert b"\r\n".join(conn.retr(150)[1]) + b"\r\n" == msgs[149]
    finally:
        conn.quit()
    apop = pop3(server)
    try:
        apop.apop(user.name, user.password)
        assert apop.stat()[0] == 150
    finally:
        apop.quit()


def test_tls_with_the_private_ca(server) -> None:
    user = server.add_user()
    client = imap_login(server, user, tls=True)
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client.logout()
    conn = pop3(server, user, tls="pop3s")
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.quit()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("localhost", server.pop3s_port, context=ssl.create_default_context(),
                        timeout=10)
    assert tls_context(server).verify_mode == ssl.CERT_REQUIRED


def test_missing_cyrus_names_the_install_script(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MAILMIGRATE_CYRUS_ROOT", str(tmp_path))
    monkeypatch.setattr("cyrus.CYRUS_BIN", tmp_path / "nowhere")
    with pytest.raises(CyrusUnavailable, match="scripts/install-cyrus"):
        check_binaries()


def test_seeding_works_from_the_corpus_on_cyrus(cyrus: CyrusServer) -> None:
    """A nested, non-ASCII tree with the corpus kept by Cyrus, as the backup tests seed it."""
    client = imap_login(cyrus, cyrus.add_user())
    try:
        create_folder(client, "Forschung & Entwicklung/2019", parents=True)
        kept = [raw for _, raw in corpus_messages() if stored("cyrus", raw) is not None][:20]
        for raw in kept:
            append(client, "Forschung & Entwicklung/2019", raw, (b"\\Seen",), PAST)
        got = fetch_all(client, "Forschung & Entwicklung/2019")
        assert [m[0] for m in got.values()] == [stored("cyrus", raw) for raw in kept]
    finally:
        client.logout()
