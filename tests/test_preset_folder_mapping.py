"""The real presets driving folder mapping between providers (no server needed).

Each case is a migration people make: Gmail (English, attributes announced)
into a German GMX account, with and without the German folders already
there; Exchange Online in German, which announces no attributes, in both
directions; an archive that kept no attributes. Subfolders of a special
folder follow it.
"""

from __future__ import annotations

import pytest

from migrate.config.profiles import Profile, folder_hints, get_profile
from migrate.folder_map import FolderMapper
from migrate.model import Folder


def f(name: str, use: str | None = None, selectable: bool = True) -> Folder:
    return Folder(name=name, server_name=name, special_use=use, selectable=selectable)


GMAIL_EN = [f("INBOX"), f("[Gmail]", selectable=False), f("[Gmail]/Sent Mail", "\\Sent"),
            f("[Gmail]/Sent Mail/2019"), f("[Gmail]/Drafts", "\\Drafts"),
            f("[Gmail]/Trash", "\\Trash"), f("[Gmail]/Spam", "\\Junk"),
            f("[Gmail]/All Mail", "\\All"), f("Work"), f("Work/Projects")]


def mapper_for(dest: list[Folder], source_preset: Profile | None, dest_preset: Profile | None,
               delimiter: str = "/", namespace: str = "") -> FolderMapper:
    hints = folder_hints(source_preset, dest_preset, [d.name for d in dest])
    return FolderMapper(dest, delimiter, namespace_prefix=namespace,
                        extra_names=hints.extra_names, create_names=hints.create_names)


def paths(mapper: FolderMapper, folders: list[Folder]) -> dict[str, str]:
    return {src: t.path for src, t in mapper.map_all(folders).items()}


def test_gmail_english_into_gmx_german_with_its_folders_present():
    dest = [f("INBOX"), f("Gesendet"), f("Entwürfe"), f("Gelöscht"), f("Spamverdacht")]
    got = paths(mapper_for(dest, get_profile("gmail"), get_profile("gmx")), GMAIL_EN)
    assert got == {
        "INBOX": "INBOX", "[Gmail]": "[Gmail]",
        "[Gmail]/Sent Mail": "Gesendet", "[Gmail]/Sent Mail/2019": "Gesendet/2019",
        "[Gmail]/Drafts": "Entwürfe", "[Gmail]/Trash": "Gelöscht", "[Gmail]/Spam": "Spamverdacht",
        "[Gmail]/All Mail": "[Gmail]/All Mail",  # \All is not a folder to merge into another
        "Work": "Work", "Work/Projects": "Work/Projects",
    }


def test_gmail_english_into_an_empty_gmx_account_creates_the_german_folders():
    got = paths(mapper_for([f("INBOX")], get_profile("gmail"), get_profile("gmx")), GMAIL_EN)
    assert got["[Gmail]/Sent Mail"] == "Gesendet"
    assert got["[Gmail]/Sent Mail/2019"] == "Gesendet/2019"
    assert got["[Gmail]/Drafts"] == "Entwürfe" and got["[Gmail]/Trash"] == "Gelöscht"
    assert got["[Gmail]/Spam"] == "Spamverdacht" and got["Work"] == "Work"
    # Without the destination's preset the source names are kept, as before.
    plain = paths(mapper_for([f("INBOX")], get_profile("gmail"), None), GMAIL_EN)
    assert plain["[Gmail]/Sent Mail"] == "[Gmail]/Sent Mail"


def test_an_archive_without_attributes_is_recognised_by_the_source_presets_names():
    archive = [f("INBOX"), f("[Gmail]/Gesendet"), f("[Gmail]/Gesendet/alt"), f("[Gmail]/Spam"),
               f("[Gmail]/Alle Nachrichten")]
    dest = [f("INBOX"), f("Sent", "\\Sent"), f("Junk", "\\Junk")]
    got = paths(mapper_for(dest, get_profile("gmail"), get_profile("dovecot")), archive)
    assert got == {"INBOX": "INBOX", "[Gmail]/Gesendet": "Sent", "[Gmail]/Gesendet/alt": "Sent/alt",
                   "[Gmail]/Spam": "Junk", "[Gmail]/Alle Nachrichten": "[Gmail]/Alle Nachrichten"}


def test_outlook_german_without_attributes_as_source():
    source = [f("INBOX"), f("Gesendete Elemente"), f("Gesendete Elemente/2020"), f("Entwürfe"),
              f("Gelöschte Elemente"), f("Junk-E-Mail"), f("Archiv"), f("Archiv/2019"), f("Kunden")]
    dest = [f("INBOX"), f("Sent", "\\Sent"), f("Drafts", "\\Drafts"), f("Trash", "\\Trash"),
            f("Junk", "\\Junk"), f("Archive", "\\Archive")]
    got = paths(mapper_for(dest, get_profile("outlook"), get_profile("dovecot")), source)
    assert got == {"INBOX": "INBOX", "Gesendete Elemente": "Sent", "Gesendete Elemente/2020": "Sent/2020",
                   "Entwürfe": "Drafts", "Gelöschte Elemente": "Trash", "Junk-E-Mail": "Junk",
                   "Archiv": "Archive", "Archiv/2019": "Archive/2019", "Kunden": "Kunden"}


def test_outlook_german_as_destination_picks_german_for_what_is_missing():
    dest = [f("INBOX"), f("Gesendete Elemente"), f("Gelöschte Elemente"), f("Kunden")]
    source = [f("INBOX"), f("Sent", "\\Sent"), f("Sent/Old"), f("Drafts", "\\Drafts"),
              f("Junk", "\\Junk"), f("Archive", "\\Archive"), f("Trash", "\\Trash")]
    got = paths(mapper_for(dest, get_profile("dovecot"), get_profile("outlook")), source)
    assert got == {"INBOX": "INBOX", "Sent": "Gesendete Elemente", "Sent/Old": "Gesendete Elemente/Old",
                   "Drafts": "Entwürfe", "Junk": "Junk-E-Mail", "Archive": "Archiv",
                   "Trash": "Gelöschte Elemente"}
    # The same account in English: the missing folders get the English names.
    dest = [f("INBOX"), f("Sent Items"), f("Deleted Items")]
    got = paths(mapper_for(dest, get_profile("dovecot"), get_profile("outlook")), source)
    assert got["Drafts"] == "Drafts" and got["Junk"] == "Junk Email" and got["Archive"] == "Archive"


def test_t_online_keeps_everything_under_the_inbox():
    dest = [f("INBOX"), f("INBOX/Gesendet"), f("INBOX/Papierkorb")]
    mapper = mapper_for(dest, get_profile("gmail"), get_profile("t-online"), ".", "INBOX.")
    targets = mapper.map_all(GMAIL_EN)
    assert targets["[Gmail]/Sent Mail"].server_name == "INBOX.Gesendet"
    assert targets["[Gmail]/Sent Mail/2019"].server_name == "INBOX.Gesendet.2019"
    assert targets["[Gmail]/Trash"].server_name == "INBOX.Papierkorb"
    assert targets["[Gmail]/Drafts"].server_name == "INBOX.Entwürfe"  # created, under INBOX
    assert targets["Work"].server_name == "INBOX.Work"


def test_folder_hints_merge_both_presets_and_tolerate_unknown_ones():
    hints = folder_hints(get_profile("gmail"), get_profile("gmx"), ["INBOX"])
    assert "[Gmail]/Sent Mail" in hints.extra_names["\\Sent"] and "Gesendet" in hints.extra_names["\\Sent"]
    assert hints.create_names["\\Junk"] == "Spamverdacht"
    empty = folder_hints(None, None, ["INBOX"])
    assert empty.extra_names == {} and empty.create_names == {}


@pytest.fixture(scope="module")
def dovecot_plain():
    """A Dovecot that announces no special-use folders, as T-Online's servers do."""
    from dovecot import DovecotServer

    server = DovecotServer("/", special_use={})
    server.start()
    yield server
    server.stop()


def test_copy_uses_the_source_presets_folder_names_against_a_real_server(
        dovecot, dovecot_plain, tmp_path):
    """T-Online keeps its special folders under the inbox without attributes
    ("INBOX/Gesendet"); with the preset named on the source URL, copy puts that
    folder's mail into the destination's \\Sent folder. Without it, the name is kept."""
    from cli_helpers import PASSWORD_ENV, cli_env, run_cli
    from seeding import bulk_append, create_folder, fetch_all, imap_login, seed_message

    a = dovecot_plain.add_user()
    client = imap_login(dovecot_plain, a)
    create_folder(client, "INBOX/Gesendet", parents=True)
    sent = [seed_message(i, 2_000, tag="tonline") for i in range(3)]
    bulk_append(client, "INBOX/Gesendet", sent)
    client.logout()
    results = {}
    for preset in ("t-online", None):
        b = dovecot.add_user()
        query = f"&provider={preset}" if preset else ""
        done = run_cli("copy", f"imap://{a.name}@127.0.0.1:{dovecot_plain.imap_port}?tls=none{query}",
                       f"imap://{b.name}@127.0.0.1:{dovecot.imap_port}?tls=none",
                       "--password-env", "MM_SRC_PW", "--dest-password-env", PASSWORD_ENV,
                       env=cli_env(b.password, MM_SRC_PW=a.password,
                                   XDG_STATE_HOME=str(tmp_path / f"xdg-{preset}")))
        assert done.code == 0, done.err
        dest = imap_login(dovecot, b)
        try:
            # the fixture's \Sent folder is called "Gesendet"
            results[preset] = (len(fetch_all(dest, "Gesendet")),
                               "INBOX/Gesendet" in {f[2] for f in dest.list_folders()})
        finally:
            dest.logout()
    assert results["t-online"] == (3, False)
    assert results[None] == (0, True)


def test_restore_knows_the_archived_accounts_provider(dovecot, tmp_path):
    """An archive of a T-Online account (its host recorded with the account) restores
    "INBOX/Gesendet", which T-Online does not mark, into the destination's \\\\Sent."""
    from cli_helpers import PASSWORD_ENV, cli_env, run_cli
    from seeding import fetch_all, imap_login, seed_message

    from migrate.model import FolderStatus, Message
    from migrate.stores.sqlite_archive import SqliteArchive

    archive = SqliteArchive(tmp_path / "t.sqlite", account="me@t-online.de@secureimap.t-online.de")
    try:
        for name in ("INBOX", "INBOX/Gesendet"):
            folder = Folder(name=name, server_name=name.replace("/", "."), delimiter=".")
            archive.checkpoint(folder, FolderStatus(uidvalidity=7, uidnext=3, messages=2))
            archive.add_messages(folder, [Message(key=str(u), uid=u,
                                                  raw=seed_message(u, 1_000, tag=name[-4:]))
                                          for u in (1, 2)])
            archive.finish_folder(folder, FolderStatus(uidvalidity=7, uidnext=3, messages=2))
    finally:
        archive.close()
    b = dovecot.add_user()
    done = run_cli("restore", str(tmp_path / "t.sqlite"),
                   f"imap://{b.name}@127.0.0.1:{dovecot.imap_port}?tls=none",
                   "--password-env", PASSWORD_ENV,
                   env=cli_env(b.password, XDG_STATE_HOME=str(tmp_path / "xdg")))
    assert done.code == 0, done.err
    client = imap_login(dovecot, b)
    try:
        assert len(fetch_all(client, "Gesendet")) == 2  # the fixture's \Sent folder
        assert len(fetch_all(client, "INBOX")) == 2
        assert "INBOX/Gesendet" not in {f[2] for f in client.list_folders()}
    finally:
        client.logout()
