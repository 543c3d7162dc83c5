"""Personal namespaces across servers: Cyrus's "INBOX." prefix with '.', Dovecot's none,
and Courier's "INBOX." (a Dovecot configured so, ``courier_like``).

Archives name folders relative to the namespace (``Archiv/2019``, never
``INBOX/Archiv/2019``); restore and copy put them under the destination's own
prefix, in either direction; INBOX stays INBOX. Archives made before this
(prefixed names, no marker) keep working: backups go on in their folders, and
restores land where the folders belong.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, archive_contents, backup_args, cli_env, imap_url, run_cli
from seeding import append, create_folder, imap_login
from test_backup import DATES, server_state
from test_copy import SOURCE_PW, copy_args
from test_restore import restore_args, state_env

TREE = {
    "INBOX": b"inbox",
    "Archiv": b"archiv",
    "Archiv/2019": b"archiv 2019",
    "Projekte/Kunde A/Angebote": b"angebote",
    "Gesendet": b"sent",
}


def message(tag: bytes) -> bytes:
    return b"Message-ID: <" + tag.replace(b" ", b"-") + b"@ns>\r\nSubject: " + tag + b"\r\n\r\nin " \
        + tag + b"\r\n"


def seed_tree(server, user) -> None:
    client = imap_login(server, user)
    try:
        for name in TREE:
            if name != "INBOX" and name not in server.special_use:
                create_folder(client, name, parents=True)
        for name, tag in TREE.items():
            append(client, name, message(tag), ("\\Seen",), DATES[1])
    finally:
        client.logout()


def raw_names(server, user) -> set[str]:
    """The folder names exactly as the server lists them."""
    client = imap_login(server, user)
    try:
        return {name for _f, _d, name in client.list_folders()}
    finally:
        client.logout()


def wire(server, path: str) -> str:
    """What a '/'-path is called on ``server`` (its delimiter and prefix)."""
    if path == "INBOX":
        return path
    return server.namespace_prefix + path.replace("/", server.separator)


def holds_the_tree(server, user) -> None:
    state = server_state(server, user)
    for name, tag in TREE.items():
        assert [raw for raw, _, _ in state[name].values()] == [message(tag)], name
    names = raw_names(server, user)
    assert {wire(server, name) for name in TREE} <= names, names
    # nothing landed one level too deep (INBOX/Archiv on Dovecot, INBOX.INBOX.x on Cyrus)
    assert not any(n.upper().startswith("INBOX" + server.separator + "INBOX") for n in names)
    if not server.namespace_prefix:
        assert not any(n.upper().startswith("INBOX" + server.separator) for n in names), names


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_a_cyrus_backup_records_names_relative_to_the_namespace(cyrus, tmp_path, kind):
    user = cyrus.add_user()
    seed_tree(cyrus, user)
    archive = tmp_path / kind
    done = run_cli(*backup_args(cyrus, user, archive), password=user.password)
    assert done.code == 0, done.err
    names = set(archive_contents(archive))
    assert set(TREE) <= names and not any(n.startswith("INBOX/") for n in names), names
    listing = {row["folder"] for row in json.loads(run_cli("ls", str(archive), "--json").out)["folders"]}
    assert set(TREE) <= listing
    if kind == "tree":
        assert (archive / "Archiv" / "2019.mbox").is_file()
        assert not (archive / "INBOX").exists()


PAIRS = [("cyrus", "dovecot"), ("dovecot", "cyrus"), ("courier_like", "dovecot"),
         ("dovecot", "courier_like"), ("courier_like", "cyrus")]


@pytest.mark.parametrize(("source", "dest"), PAIRS)
def test_restore_lands_in_the_destination_namespace(request, tmp_path, source, dest):
    src, dst = request.getfixturevalue(source), request.getfixturevalue(dest)
    a, b = src.add_user(), dst.add_user()
    seed_tree(src, a)
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(src, a, archive), password=a.password).code == 0
    env = state_env(tmp_path, b.password)
    done = run_cli(*restore_args(archive, dst, b, "--json"), env=env)
    assert done.code == 0, done.err
    assert done.json()["folder_map"]["Archiv/2019"] == "Archiv/2019"
    assert "Archiv/2019" in done.json()["folders_created"]
    holds_the_tree(dst, b)
    check = run_cli("verify", str(archive), imap_url(dst, b), "--password-env", PASSWORD_ENV,
                    env=env)
    assert check.code == 0, check.out + check.err


@pytest.mark.parametrize(("source", "dest"), PAIRS)
def test_copy_maps_one_namespace_to_the_other(request, tmp_path, source, dest):
    src, dst = request.getfixturevalue(source), request.getfixturevalue(dest)
    a, b = src.add_user(), dst.add_user()
    seed_tree(src, a)
    env = cli_env(b.password, **{SOURCE_PW: a.password, "XDG_STATE_HOME": str(tmp_path / "x")})
    done = run_cli(*copy_args(src, a, dst, b, "--json"), env=env)
    assert done.code == 0, done.err
    holds_the_tree(dst, b)
    again = run_cli(*copy_args(src, a, dst, b, "--json"), env=env)
    assert again.code == 0 and again.json()["new_messages"] == 0
    both = run_cli("verify", imap_url(src, a), imap_url(dst, b), "--password-env", SOURCE_PW,
                   "--dest-password-env", PASSWORD_ENV, env=env)
    assert both.code == 0, both.out + both.err


def index_db(archive: Path) -> Path:
    return archive if archive.suffix == ".sqlite" else archive / ".mailmigrate" / "index.sqlite"


def row_names(archive: Path) -> set[str]:
    """Folder names as the archive's folders table keeps them."""
    conn = sqlite3.connect(index_db(archive))
    try:
        return {name for (name,) in conn.execute("SELECT name FROM folders")}
    finally:
        conn.close()


def make_legacy(archive: Path) -> None:
    """Turn an archive into one made before names were relative: prefixed names, no marker."""
    from migrate.folders import NAMES_KEY

    conn = sqlite3.connect(index_db(archive))
    with conn:
        conn.execute("UPDATE folders SET name = 'INBOX/' || name WHERE name != 'INBOX'")
        conn.execute("DELETE FROM meta WHERE key = ?", (NAMES_KEY,))
    conn.close()


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_an_archive_from_before_keeps_working(cyrus, dovecot, tmp_path, kind):
    a, b = cyrus.add_user(), dovecot.add_user()
    seed_tree(cyrus, a)
    archive = tmp_path / kind
    assert run_cli(*backup_args(cyrus, a, archive), password=a.password).code == 0
    make_legacy(archive)
    # The next nightly backup goes on in the old folders: nothing fetched twice.
    client = imap_login(cyrus, a)
    append(client, "Archiv/2019", message(b"later"), (), DATES[2])
    client.logout()
    again = run_cli(*backup_args(cyrus, a, archive, "--json"), password=a.password)
    assert again.code == 0, again.err
    assert again.json()["new_messages"] == 1
    names = row_names(archive)
    assert "INBOX/Archiv/2019" in names and "Archiv/2019" not in names, names
    assert sum(len(box) for box in archive_contents(archive).values()) == len(TREE) + 1
    listing = {row["folder"] for row in json.loads(run_cli("ls", str(archive), "--json").out)["folders"]}
    assert set(TREE) <= listing, listing
    # A restore puts every folder where it belongs, not under INBOX.
    env = state_env(tmp_path, b.password)
    done = run_cli(*restore_args(archive, dovecot, b, "--json"), env=env)
    assert done.code == 0, done.err
    state = server_state(dovecot, b)
    assert Counter(raw for raw, _, _ in state["Archiv/2019"].values()) == Counter(
        [message(b"archiv 2019"), message(b"later")])
    assert not any(n.startswith("INBOX/") for n in raw_names(dovecot, b))
    check = run_cli("verify", str(archive), imap_url(cyrus, a), "--password-env", PASSWORD_ENV,
                    password=a.password)
    assert check.code == 0, check.out + check.err
