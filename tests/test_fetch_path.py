"""The read path at the socket's pace: no debug formatting, one round trip per batch.

Nothing here measures time. Speed is kept by counting what costs it: calls to
imaplib's debug logger, commands sent per batch, and "turns" on the wire (a
client that waits for an answer before sending its next command shows one
turn per command; a pipelining one, one per batch).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_helpers import PASSWORD_ENV, backup_args, cli_env, run_cli
from proxy import TcpProxy
from seeding import bulk_append, create_folder, imap_login, seed_message, server_name

from migrate.config.endpoints import PasswordSource, parse_endpoint
from migrate.errors import MessageError
from migrate.model import FolderCheckpoint
from migrate.stores.imap import ImapSource, connect_imap


class CountingMesg:
    """Stands in for imaplib's debug sink (``IMAP4._mesg``) and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1


@pytest.fixture
def seeded(dovecot, account) -> Iterator[object]:
    client = imap_login(dovecot, account)
    bulk_append(client, "INBOX", [seed_message(i, 3000 + 500 * i) for i in range(40)])
    client.logout()
    yield account


@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_imaplib_debug_formatting_is_off_on_every_connection(dovecot, seeded, tls):
    """imapclient sets imaplib's debug level to 5, which formats a repr() of every
    line and literal: the fetch path's biggest cost. Every connection we make goes
    through connect_imap (read side, write side, jobs' login test), so checking it
    there, through a real FETCH, covers them all."""
    query = "?tls=none" if tls == "none" else ""
    endpoint = parse_endpoint(f"imap://{seeded.name}@127.0.0.1:{dovecot.imap_port}{query}",
                              cafile=str(dovecot.ca_file))
    client = connect_imap(endpoint, PasswordSource.literal(seeded.password))
    try:
        assert client._imap.debug == 0
        counter = CountingMesg()
        client._imap._mesg = counter
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        assert len(data) == 40
        assert counter.calls == 0
    finally:
        client.logout()


def test_the_source_store_fetches_without_debug_formatting(dovecot, seeded):
    endpoint = parse_endpoint(f"imap://{seeded.name}@127.0.0.1:{dovecot.imap_port}?tls=none")
    source = ImapSource(endpoint, PasswordSource.literal(seeded.password))
    try:
        counter = CountingMesg()
        source.client._imap._mesg = counter
        inbox = next(f for f in source.list_folders() if f.name == "INBOX")
        refs = list(source.list_new(inbox, FolderCheckpoint()))
        got = list(source.fetch(inbox, refs))
        assert [m.raw for m in got] == [seed_message(i, 3000 + 500 * i) for i in range(40)]
        assert counter.calls == 0
        source.reconnect()  # a new connection is quiet too
        assert source.client._imap.debug == 0
    finally:
        source.close()
class TurnCountingProxy(TcpProxy):
    """A TcpProxy that counts turns: client bytes that follow server bytes on the
    same connection. A client that waits for each reply before its next command
    makes one turn per command; one that pipelines makes one per batch it sends."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.turns = 0
        self._last_from_server: dict[int, bool] = {}

    def _count_to_server(self, conn, data: bytes) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if self._last_from_server.get(id(conn), True):
                self.turns += 1
            self._last_from_server[id(conn)] = False
        super()._count_to_server(conn, data)

    def _count_from_server(self, conn, data: bytes) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self._last_from_server[id(conn)] = True
        super()._count_from_server(conn, data)

    def reset_turns(self) -> None:
        with self._lock:
            self.turns = 0


def test_the_turn_counter_counts_waits_not_commands(dovecot):
    """The counter the round-trip tests rest on: three commands each sent after the
    answer to the one before are three turns; three sent in one write, one."""
    import socket

    def exchange(proxy: TurnCountingProxy, pipelined: bool) -> int:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            proxy.reset_turns()
            tags = [b"a%d" % i for i in range(3)]
            if pipelined:
                sock.sendall(b"".join(t + b" NOOP\r\n" for t in tags))
            for tag in tags:
                if not pipelined:
                    sock.sendall(tag + b" NOOP\r\n")
                while not reader.readline().startswith(tag + b" "):
                    pass
            return proxy.turns

    with TurnCountingProxy(dovecot.host, dovecot.imap_port, record=False) as proxy:
        assert exchange(proxy, pipelined=False) == 3
        assert exchange(proxy, pipelined=True) == 1


# -- one round trip per batch ---------------------------------------------------------
# Every run below is one engine batch (under 400 messages and 8 MB), so its turns
# must not depend on how many messages the batch holds: with a round trip per
# message, 200 messages would cost 160 turns more than 40.

SOURCE_PW = "MM_SOURCE_PASSWORD"


def seeded_user(dovecot, count: int, tag: str):
    user = dovecot.add_user()
    client = imap_login(dovecot, user)
    client._imap.debug = 0
    bulk_append(client, "INBOX", [seed_message(i, 1500 + 37 * i, tag=tag) for i in range(count)])
    client.logout()
    return user


def turns(proxy: TurnCountingProxy, args: list[str], env: dict[str, str]) -> int:
    proxy.reset_turns()
    result = run_cli(*args, env=env)
    assert result.code == 0, result.err
    return proxy.turns


@pytest.fixture
def turn_proxies(dovecot) -> Iterator[tuple[TurnCountingProxy, TurnCountingProxy]]:
    with TurnCountingProxy(dovecot.host, dovecot.imap_port, record=False) as imap, \
            TurnCountingProxy(dovecot.host, dovecot.pop3_port, record=False) as pop3:
        yield imap, pop3


def via(proxy: TcpProxy, scheme: str, user) -> str:
    return f"{scheme}://{user.name}@127.0.0.1:{proxy.port}?tls=none"


@pytest.mark.parametrize(("command", "scheme"), [("backup", "imap"), ("drain", "pop3")])
def test_backup_fetch_and_drain_retr_cost_a_round_trip_per_batch(dovecot, turn_proxies, tmp_path,
                                                                 command, scheme):
    """UID FETCH takes a batch in one command; RETR is pipelined (RFC 2449 PIPELINING)."""
    proxy = turn_proxies[0 if scheme == "imap" else 1]
    counts = {}
    for n in (40, 200):
        user = seeded_user(dovecot, n, f"{command}{n}")
        args = [command, via(proxy, scheme, user), str(tmp_path / f"{command}{n}.sqlite"),
                "--password-env", PASSWORD_ENV, "--quiet"]
        counts[n] = turns(proxy, args, cli_env(user.password))
    assert counts[200] == counts[40], counts


def test_restore_and_copy_append_cost_a_round_trip_per_batch(dovecot, turn_proxies, tmp_path):
    proxy, _ = turn_proxies
    restores, copies = {}, {}
    for n in (40, 200):
        user = seeded_user(dovecot, n, f"r{n}")
        archive = tmp_path / f"{n}.sqlite"
        env = cli_env(user.password, XDG_STATE_HOME=str(tmp_path / "state"))
        assert run_cli(*backup_args(dovecot, user, archive, "--quiet"), env=env).code == 0
        target = dovecot.add_user()
        env = cli_env(target.password, XDG_STATE_HOME=str(tmp_path / "state"))
        restores[n] = turns(proxy, ["restore", str(archive), via(proxy, "imap", target),
                                    "--password-env", PASSWORD_ENV, "--quiet"], env)
        target = dovecot.add_user()
        env = cli_env(target.password, XDG_STATE_HOME=str(tmp_path / "state"),
                      **{SOURCE_PW: user.password})
        copies[n] = turns(proxy, ["copy", via(proxy, "imap", user), via(proxy, "imap", target),
                                  "--password-env", SOURCE_PW, "--dest-password-env",
                                  PASSWORD_ENV, "--quiet"], env)
    # The writer's first APPEND is small (FIRST_APPEND_BYTES, until the link's rate is
    # known), so 200 messages may take a batch more than 40; one round trip per message
    # would cost 160 more.
    assert restores[200] - restores[40] < 8, restores
    assert copies[200] - copies[40] < 8, copies


def test_listing_a_small_folder_is_one_fetch_and_a_large_one_searches(dovecot, seeded,
                                                                      monkeypatch):
    """UID FETCH n:* (RFC822.SIZE) lists a small folder in one round trip; above
    LIST_CHUNK messages, or with a date filter, SEARCH pages the listing. Both give
    the same refs, and "n:*" past the last UID (which RFC 3501 answers with the last
    message) gives none."""
    import migrate.stores.imap as imap_module

    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        endpoint = parse_endpoint(f"imap://{seeded.name}@127.0.0.1:{proxy.port}?tls=none")
        source = ImapSource(endpoint, PasswordSource.literal(seeded.password))
        try:
            inbox = next(f for f in source.list_folders() if f.name == "INBOX")
            proxy.reset_counters()
            small = list(source.list_new(inbox, FolderCheckpoint(last_uid=3)))
            assert b"SEARCH" not in proxy.transcript_to_server
            assert [r.uid for r in small] == list(range(4, 41))
            assert list(source.list_new(inbox, FolderCheckpoint(last_uid=40))) == []
            monkeypatch.setattr(imap_module, "LIST_CHUNK", 10)
            source.reconnect()  # EXISTS is read again on the next SELECT
            proxy.reset_counters()
            large = list(source.list_new(inbox, FolderCheckpoint(last_uid=3)))
            assert b"UID SEARCH" in proxy.transcript_to_server
            assert proxy.transcript_to_server.count(b"RFC822.SIZE") == 4  # 37 UIDs in chunks of 10
            assert large == small
        finally:
            source.close()


# -- STATUS: one round trip for every folder ---------------------------------------------
def account_with_folders(server, names: list[str]):
    user = server.add_user()
    client = imap_login(server, user)
    client._imap.debug = 0
    for i, name in enumerate(names):
        create_folder(client, name)
        bulk_append(client, name, [seed_message(0, tag=f"f{i}")])
    client.logout()
    return user


def test_a_no_op_run_costs_the_same_round_trips_for_30_folders_as_for_3(dovecot, turn_proxies,
                                                                         tmp_path):
    """The first step of a run asks every folder's STATUS pipelined, so a no-op run (all
    that a nightly backup of an unchanged account does) does not pay a round trip per
    folder: over a 30 ms link, 15 folders would cost 0.45 s."""
    proxy, _ = turn_proxies
    counts = {}
    for n in (3, 30):
        user = account_with_folders(dovecot, [f"F{i}" for i in range(n)])
        archive = tmp_path / f"{n}.sqlite"
        args = ["backup", via(proxy, "imap", user), str(archive), "--password-env", PASSWORD_ENV,
                "--quiet"]
        assert run_cli(*args, env=cli_env(user.password)).code == 0
        counts[n] = turns(proxy, args, cli_env(user.password))
    assert counts[30] == counts[3], counts


def test_pipelined_status_gives_what_one_status_gives_and_a_vanished_folder_its_own_error(
        server):
    names = ["Archiv/2019", "Spaß", "with space", "Gone", "Last"]
    if type(server).__name__ == "DovecotServer":  # Cyrus refuses these: "Invalid mailbox name"
        names += ['a "quoted" name', "back\\slash"]
    user = account_with_folders(server, names)
    endpoint = parse_endpoint(f"imap://{user.name}@127.0.0.1:{server.imap_port}?tls=none")
    source = ImapSource(endpoint, PasswordSource.literal(user.password))
    try:
        folders = [f for f in source.list_folders() if f.selectable]
        one_by_one = [source.status(f) for f in folders]
        other = imap_login(server, user)
        other.delete_folder(server_name(other, "Gone"))
        other.logout()
        answers = source.statuses(folders)
    finally:
        source.close()
    for folder, alone, answer in zip(folders, one_by_one, answers, strict=True):
        if folder.name == "Gone":
            assert isinstance(answer, MessageError) and "Gone" in str(answer), answer
        else:
            assert answer == alone, folder.name
    assert {f.name for f in folders} >= {"Archiv/2019", "Spaß", "with space", "Last"}


class NoPipelining(TcpProxy):
    """Something on the way that drops the connection when two STATUS commands arrive
    together (RFC 3501 §5.5 lets a client pipeline; not every middlebox agrees)."""

    def _count_to_server(self, conn, data: bytes) -> None:  # type: ignore[no-untyped-def]
        super()._count_to_server(conn, data)
        if data.count(b" STATUS ") > 1:
            self.cuts += 1
            conn.abort(rst=True)

    cuts = 0


def test_a_connection_lost_during_pipelined_status_goes_on_one_status_at_a_time(dovecot,
                                                                              tmp_path):
    user = account_with_folders(dovecot, ["A", "B", "C"])
    with NoPipelining(dovecot.host, dovecot.imap_port) as proxy:
        archive = tmp_path / "a.sqlite"
        result = run_cli("backup", via(proxy, "imap", user), str(archive), "--password-env",
                         PASSWORD_ENV, "--quiet", "--retries", "3", "--retry-delay", "0.05",
                         env=cli_env(user.password))
    assert result.code == 0, result.err
    assert proxy.cuts == 1  # the pipelined attempt, then one STATUS per folder
    import sqlite3
    db = sqlite3.connect(archive)
    try:
        names = {n for (n,) in db.execute(
            "SELECT f.name FROM folder_messages fm JOIN folders f ON f.id = fm.folder_id")}
    finally:
        db.close()
    assert names >= {"A", "B", "C"}
