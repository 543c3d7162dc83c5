"""Folder mapping from source to destination: special use, --map, --prefix, delimiters."""

from __future__ import annotations

import pytest

from migrate.errors import UsageError
from migrate.folder_map import FolderMapper, MapRule, parse_rules
from migrate.folders import SLASH_STANDIN
from migrate.model import Folder


def f(name: str, use: str | None = None, selectable: bool = True) -> Folder:
    return Folder(name=name, server_name=name, special_use=use, selectable=selectable)


SOURCE = [f("INBOX"), f("Gesendet", "\\Sent"), f("Gesendet/2019"), f("Entwürfe", "\\Drafts"),
          f("Papierkorb", "\\Trash"), f("Work"), f("Work/v1.2")]


def paths(mapper: FolderMapper, folders=SOURCE) -> dict[str, str]:
    return {src: t.path for src, t in mapper.map_all(folders).items()}


def test_special_use_by_attribute_goes_to_destination_folder_of_that_use():
    dest = [f("INBOX"), f("Sent Items", "\\Sent"), f("Drafts", "\\Drafts"), f("Deleted Items", "\\Trash")]
    got = paths(FolderMapper(dest, "/"))
    assert got["Gesendet"] == "Sent Items" and got["Gesendet/2019"] == "Sent Items/2019"
    assert got["Entwürfe"] == "Drafts" and got["Papierkorb"] == "Deleted Items"
    assert got["INBOX"] == "INBOX" and got["Work"] == "Work"


def test_well_known_names_when_nobody_announces_special_use():
    source = [f("INBOX"), f("[Gmail]/Sent Mail"), f("Junk E-mail")]
    dest = [f("INBOX"), f("Sent"), f("Spam")]
    got = paths(FolderMapper(dest, "/"), source)
    assert got == {"INBOX": "INBOX", "[Gmail]/Sent Mail": "Sent", "Junk E-mail": "Spam"}


def test_destination_without_the_use_keeps_the_name_and_no_special_use_keeps_all():
    assert paths(FolderMapper([f("INBOX")], "/"))["Gesendet"] == "Gesendet"
    dest = [f("Sent", "\\Sent")]
    assert paths(FolderMapper(dest, "/", special_use=False))["Gesendet"] == "Gesendet"


def test_map_rules_globs_and_subfolders():
    rules = parse_rules(["Work=Job", "Gesendet/*=Old Sent/*", "*/v1.2=Versions"])
    got = paths(FolderMapper([f("Sent", "\\Sent")], "/", rules))
    assert got["Work"] == "Job" and got["Work/v1.2"] == "Job/v1.2"  # first rule wins
    assert got["Gesendet/2019"] == "Old Sent/2019"
    assert got["Gesendet"] == "Sent"  # no rule: special use still applies
    assert MapRule.parse("A*B*=X/*/*").apply("A1B2") == "X/1/2"
    with pytest.raises(UsageError):
        MapRule.parse("noequals")
    with pytest.raises(UsageError):
        MapRule.parse("A=B*")


def test_prefix_puts_everything_under_it_with_source_names():
    got = paths(FolderMapper([f("Sent", "\\Sent")], "/", prefix="Restored/"))
    assert got["INBOX"] == "Restored/INBOX" and got["Gesendet"] == "Restored/Gesendet"


def test_dot_delimiter_translation_and_impossible_names():
    mapper = FolderMapper([f("INBOX")], ".")
    t = mapper.map_name("Work/v1.2")
    assert t.server_name == "Work.v1_2" and t.path == "Work/v1_2"
    assert t.note is not None and "v1.2" in t.note
    # A '/' inside a level (stored as U+2215 in our archives) is a '/' again on a '.' server.
    t = mapper.map_name(f"a{SLASH_STANDIN}b/c")
    assert t.server_name == "a/b.c" and t.path == f"a{SLASH_STANDIN}b/c" and t.note is None
    assert FolderMapper([], "/").map_name("x/y").server_name == "x/y"


def test_namespace_prefix_is_added_except_for_inbox():
    mapper = FolderMapper([f("INBOX"), f("INBOX/Sent", "\\Sent")], ".", namespace_prefix="INBOX.")
    assert mapper.map_name("INBOX").server_name == "INBOX"
    assert mapper.map_name("Work/x").server_name == "INBOX.Work.x"
    sent = mapper.map_all([f("Gesendet", "\\Sent")])["Gesendet"]
    assert sent.server_name == "INBOX.Sent"
