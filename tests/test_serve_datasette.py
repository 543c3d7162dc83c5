"""`mailmigrate serve --datasette`: Datasette opens the archive labelled, blobs hidden, search on.

A real Datasette process on a real archive (a backup from Dovecot of a German
mailbox with raw 8-bit headers): its search box finds what `search` finds, on
the mail view (with the same IDs) and on the messages table.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import quote, urlsplit

import pytest
from cli_helpers import backup_args, run_cli
from seeding import append, imap_login
from serve_helpers import DAY, ServeProcess, messages


@pytest.fixture(scope="module")
def archive(dovecot, tmp_path_factory):
    user = dovecot.add_user()
    mail = messages("http://127.0.0.1:9")
    client = imap_login(dovecot, user)
    try:
        for key in ("koeln", "report"):
            append(client, "INBOX", mail[key], ("\\Seen",), DAY)
    finally:
        client.logout()
    path = tmp_path_factory.mktemp("datasette") / "mail.sqlite"
    assert run_cli(*backup_args(dovecot, user, path), password=user.password).code == 0
    return path


def ready(process: ServeProcess) -> None:
    """Wait until Datasette answers (it starts after our line is printed)."""
    for _ in range(600):
        if process.proc.poll() is not None:
            raise AssertionError("datasette stopped: " + "".join(process.log))
        try:
            if process.get("/-/versions.json").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("datasette did not answer: " + "".join(process.log))


def test_datasette_search_labels_and_hidden_blobs(archive):
    [hit] = run_cli("search", str(archive), "Empfänger", "--json").json()["results"]
    with ServeProcess(archive, "--datasette") as process:
        ready(process)
        rows = process.get("/mail/mail.json?_shape=array&_search=" + quote("Köln")).json()
        assert [(r["id"], r["subject"], r["to"]) for r in rows] == \
            [(hit["id"], "Grüße aus Köln", "Empfänger <e@example.de>")]
        content = process.get("/mail/messages.json?_shape=array&_col=subject&_search="
                              + quote("Empfänger")).json()
        assert [r["subject"] for r in content] == ["Grüße aus Köln"]
        tables = {t["name"]: t["hidden"] for t in process.get("/mail.json").json()["tables"]}
        assert tables["messages"] and tables["folder_messages"] and tables["meta"]
        assert not tables["folders"]
        meta = process.get("/-/metadata.json").json()
        mail = meta["databases"]["mail"]["tables"]["mail"]
        assert mail["fts_pk"] == "message_id" and "search" in mail["columns"]["id"]
        page = process.get("/mail/mail").body.decode()
        assert 'name="_search"' in page  # the search box is on


def test_stopping_serve_stops_datasette(archive):
    """SIGTERM (kill, systemd) reaches `mailmigrate serve` alone: Datasette must not be
    left behind serving the archive."""
    with ServeProcess(archive, "--datasette") as process:
        ready(process)
        where = urlsplit(process.url)
    assert process.proc.returncode == 0, "".join(process.log)
    for _ in range(100):  # the child is waited for before serve exits; allow a slow close
        try:
            socket.create_connection((where.hostname, where.port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError(f"Datasette still answers on {process.url} after serve stopped")
