"""A folder that exists on the destination only as a \\Noselect placeholder (the level
Dovecot makes for "A" when "A/B" is created) is created for real when mail must go into it:
on restore, on copy, and when a source folder that was a placeholder later gains mail.

Dovecot leaves such placeholders; Cyrus makes every intermediate level a real mailbox, so
there the same steps must simply work (``server.noselect_parents`` says which).
"""

from __future__ import annotations

from cli_helpers import backup_args, cli_env, run_cli
from seeding import append, create_folder, imap_login, list_folders
from test_backup import DATES, server_state
from test_copy import SOURCE_PW, copy_args
from test_restore import restore_args, state_env


def message(tag: str) -> bytes:
    return f"Message-ID: <{tag}@ph>\r\nSubject: {tag}\r\n\r\n{tag}\r\n".encode()


def only_a_placeholder(server, user, name: str, child: str) -> None:
    """Give ``user`` the folder ``child`` below ``name``, which is left as the server leaves it."""
    client = imap_login(server, user)
    try:
        create_folder(client, child)
        attrs = list_folders(client)[name]
        assert (b"\\Noselect" in attrs) == server.noselect_parents, attrs
    finally:
        client.logout()


def test_restore_creates_a_placeholder_for_real(server, tmp_path):
    a, b = server.add_user(), server.add_user()
    client = imap_login(server, a)
    create_folder(client, "Projekte/2024", parents=True)
    append(client, "Projekte", message("parent"), ("\\Seen",), DATES[1])
    append(client, "Projekte/2024", message("child"), (), DATES[1])
    client.logout()
    archive = tmp_path / "a.sqlite"
    assert run_cli(*backup_args(server, a, archive), password=a.password).code == 0
    only_a_placeholder(server, b, "Projekte", "Projekte/2024")
    done = run_cli(*restore_args(archive, server, b, "--json"), env=state_env(tmp_path, b.password))
    assert done.code == 0, done.err
    assert done.json()["message_errors"] == [] and done.json()["new_messages"] == 2
    state = server_state(server, b)
    assert [raw for raw, _, _ in state["Projekte"].values()] == [message("parent")]
    assert [raw for raw, _, _ in state["Projekte/2024"].values()] == [message("child")]


def test_copy_fills_a_placeholder_and_a_source_placeholder_that_later_gains_mail(server,
                                                                                 tmp_path):
    a, b = server.add_user(), server.add_user()
    client = imap_login(server, a)
    create_folder(client, "Reisen/2023")  # "Reisen": a placeholder at the source (Dovecot)
    append(client, "Reisen/2023", message("trip"), (), DATES[1])
    only_a_placeholder(server, b, "Akten", "Akten/Alt")  # and "Akten" one at the destination
    create_folder(client, "Akten", parents=True)
    append(client, "Akten", message("akte"), (), DATES[1])
    env = cli_env(b.password, **{SOURCE_PW: a.password, "XDG_STATE_HOME": str(tmp_path / "x")})
    first = run_cli(*copy_args(server, a, server, b, "--json"), env=env)
    assert first.code == 0, first.err
    assert first.json()["message_errors"] == []
    dest = server_state(server, b)
    assert [raw for raw, _, _ in dest["Akten"].values()] == [message("akte")]
    assert [raw for raw, _, _ in dest["Reisen/2023"].values()] == [message("trip")]
    # The source's placeholder becomes a real folder with mail: the next copy follows.
    if server.noselect_parents:
        client.create_folder("Reisen" if not server.namespace_prefix
                             else server.namespace_prefix + "Reisen")
    append(client, "Reisen", message("later"), ("\\Flagged",), DATES[2])
    client.logout()
    second = run_cli(*copy_args(server, a, server, b, "--json"), env=env)
    assert second.code == 0, second.err
    assert second.json()["message_errors"] == [] and second.json()["new_messages"] == 1
    dest = server_state(server, b)
    assert [raw for raw, _, _ in dest["Reisen"].values()] == [message("later")]
