"""Folder mapping from source to destination: special use, --map, --prefix, delimiters."""

from __future__ import annotations

import pytest

from migrate.errors import UsageError
from migrate.folder_map import WELL_KNOWN, FolderMapper, MapRule, parse_rules, special_use_by_name
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


def test_well_known_names_name_one_use_each():
    """A name standing for two uses would map a folder by whichever came last."""
    seen: dict[str, str] = {}
    for use, names in WELL_KNOWN.items():
        for name in names:
            assert seen.setdefault(name.casefold(), use) == use, name
    for name, use in (("Gelöscht", "\\Trash"), ("Spamverdacht", "\\Junk"), ("Draft", "\\Drafts"),
                      ("[Google Mail]/Gesendet", "\\Sent"), ("[gmail]/papierkorb", "\\Trash")):
        assert special_use_by_name(name) == use


def test_extra_names_recognise_folders_on_both_sides():
    """A provider's own name (not well known everywhere) marks a folder without attributes."""
    source = [f("INBOX"), f("Unerwünscht"), f("Unerwünscht/alt"), f("Work")]
    dest = [f("INBOX"), f("Junk", "\\Junk"), f("Gesendet")]
    assert paths(FolderMapper(dest, "/"), source)["Unerwünscht"] == "Unerwünscht"  # unknown name
    mapper = FolderMapper(dest, "/", extra_names={"\\Junk": ["Unerwünscht"]})
    got = paths(mapper, source)
    assert got["Unerwünscht"] == "Junk" and got["Unerwünscht/alt"] == "Junk/alt"
    assert got["Work"] == "Work"
    # ...and on the destination: a junk folder named only in the preset receives the source's.
    dest = [f("INBOX"), f("Unerwünscht")]
    mapper = FolderMapper(dest, "/", extra_names={"\\Junk": ["unerwünscht"], "\\All": ["Alles"]})
    assert mapper.dest_use == {"\\Junk": "Unerwünscht"}  # \All is never mapped
    assert paths(mapper, [f("Spam", "\\Junk")]) == {"Spam": "Unerwünscht"}


def test_an_attribute_beats_a_name_on_the_destination():
    dest = [f("Unerwünscht"), f("Spam", "\\Junk")]
    mapper = FolderMapper(dest, "/", extra_names={"\\Junk": ["Unerwünscht"]})
    assert paths(mapper, [f("Junk", "\\Junk")]) == {"Junk": "Spam"}


def test_create_names_place_a_use_the_destination_lacks():
    source = [f("INBOX"), f("Sent", "\\Sent"), f("Sent/2019"), f("Sent/2019/Q1"), f("Trash", "\\Trash")]
    dest = [f("INBOX"), f("Papierkorb", "\\Trash")]
    plain = paths(FolderMapper(dest, "/"), source)
    assert plain["Sent"] == "Sent" and plain["Sent/2019"] == "Sent/2019"  # unchanged without names
    mapper = FolderMapper(dest, "/", create_names={"\\Sent": "Gesendet", "\\Trash": "Gelöscht"})
    targets = mapper.map_all(source)
    assert targets["Sent"].path == "Gesendet" and targets["Sent"].special_use == "\\Sent"
    assert targets["Sent/2019"].path == "Gesendet/2019" and targets["Sent/2019"].special_use is None
    assert targets["Sent/2019/Q1"].path == "Gesendet/2019/Q1"
    assert targets["Trash"].path == "Papierkorb"  # an existing folder of the use wins
    assert targets["INBOX"].path == "INBOX"


def test_flags_beat_create_names():
    source = [f("Sent", "\\Sent"), f("Sent/2019")]
    names = {"\\Sent": "Gesendet"}
    rules = parse_rules(["Sent/2019=Old/2019"])
    got = paths(FolderMapper([], "/", rules, create_names=names), source)
    assert got == {"Sent": "Gesendet", "Sent/2019": "Old/2019"}  # --map first
    got = paths(FolderMapper([], "/", prefix="Restored", create_names=names), source)
    assert got == {"Sent": "Restored/Sent", "Sent/2019": "Restored/Sent/2019"}  # --prefix: off
    got = paths(FolderMapper([], "/", special_use=False, create_names=names), source)
    assert got == {"Sent": "Sent", "Sent/2019": "Sent/2019"}  # --no-special-use: off


def test_create_names_on_a_dot_server_under_a_namespace():
    """T-Online keeps every folder under INBOX: the preset names 'INBOX/Gesendet'."""
    dest = [f("INBOX"), f("INBOX/Papierkorb")]
    mapper = FolderMapper(dest, ".", namespace_prefix="INBOX.",
                          extra_names={"\\Trash": ["INBOX/Papierkorb"]},
                          create_names={"\\Sent": "INBOX/Gesendet"})
    assert mapper.dest_use == {"\\Trash": "Papierkorb"}
    targets = mapper.map_all([f("Sent", "\\Sent"), f("Sent/v1.2"), f("Trash", "\\Trash")])
    assert targets["Sent"].server_name == "INBOX.Gesendet"
    assert targets["Sent/v1.2"].server_name == "INBOX.Gesendet.v1_2"
    assert targets["Trash"].server_name == "INBOX.Papierkorb"


def test_positional_arguments_still_mean_what_they_meant():
    mapper = FolderMapper([f("Sent", "\\Sent")], ".", [], "", True, "INBOX.")
    assert mapper.namespace_prefix == "INBOX." and mapper.create_names == {}
    with pytest.raises(TypeError):
        FolderMapper([], "/", [], "", True, "", {"\\Sent": ["x"]})  # type: ignore[misc]
