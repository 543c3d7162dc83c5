"""The read path at the socket's pace: no debug formatting, one round trip per batch.

Nothing here measures time. Speed is kept by counting what costs it: calls to
imaplib's debug logger, commands sent per batch, and "turns" on the wire (a
client that waits for an answer before sending its next command shows one
turn per command; a pipelining one, one per batch).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from seeding import bulk_append, imap_login, seed_message

from migrate.config.endpoints import PasswordSource, parse_endpoint
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
