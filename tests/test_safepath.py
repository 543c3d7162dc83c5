"""Folder name -> archive path: never outside the root, never two folders in one file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.safepath import (
    MAX_COMPONENT_BYTES,
    META_DIR,
    assign_path,
    candidate_path,
    collision_key,
    resolve_inside,
    sanitise_component,
)

ROOT = Path("/archive/root")

HOSTILE = [
    "",
    ".",
    "..",
    "../..",
    "../../etc/passwd",
    "/etc/passwd",
    "//",
    "a//b",
    "a/./b",
    "a/../../b",
    "..\\..\\windows",
    "C:\\Windows",
    "x\x00y",
    "tab\there",
    "line\nbreak",
    "\u2028sep",
    ".mailmigrate",
    ".mailmigrate/index.sqlite",
    ".hidden",
    "trailing.",
    "trailing ",
    "CON",
    "nul",
    "Com1.txt",
    "LPT9",
    "a" * 1000,
    "ü" * 300,
    "日本語" * 100,
    "inbox.mbox",
    "inbox.mbox/child",
    "\ud800lone surrogate",
    "~",
]


def _inside(root: Path, rel: str) -> bool:
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, *rel.split("/")))
    return os.path.commonpath([base, full]) == base and full != base


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside(name: str, tmp_path: Path) -> None:
    rel = candidate_path(name)
    assert _inside(tmp_path, rel)
    assert resolve_inside(tmp_path, rel).is_relative_to(tmp_path.resolve())
    parts = rel.split("/")
    assert all(p and not p.startswith(".") for p in parts)
    assert all(len(p.encode("utf-8")) <= MAX_COMPONENT_BYTES + 5 for p in parts)
    assert "\\" not in rel and "\x00" not in rel
    assert parts[0] != META_DIR


def test_readable_names_are_kept() -> None:
    assert candidate_path("INBOX") == "INBOX.mbox"
    assert candidate_path("Entwürfe") == "Entwürfe.mbox"
    assert candidate_path("日本語") == "日本語.mbox"
    assert candidate_path("Forschung & Entwicklung") == "Forschung & Entwicklung.mbox"
    assert candidate_path("A/B") == "A/B.mbox"
    assert candidate_path("[Gmail]/Sent Mail") == "[Gmail]/Sent Mail.mbox"


def test_special_components() -> None:
    assert sanitise_component("..") == "__"
    assert sanitise_component(".") == "_"
    assert sanitise_component("") == "_"
    assert sanitise_component(".mailmigrate") == "_mailmigrate"
    assert sanitise_component("CON") == "_CON"
    assert sanitise_component("a.") == "a_"
    assert sanitise_component("x.MBOX") == "x.MBOX_"
    long = sanitise_component("a" * 500)
    assert len(long.encode()) <= MAX_COMPONENT_BYTES
    assert long != sanitise_component("a" * 501)


def test_collisions_get_deterministic_suffixes() -> None:
    taken: set[str] = set()
    paths = []
    for name in ["Spam", "spam", "SPAM", "a:b", "a_b", "a?b"]:
        path = assign_path(name, taken)
        taken.add(collision_key(path))
        paths.append(path)
    assert paths[0] == "Spam.mbox"
    assert paths[1].startswith("spam~") and paths[1].endswith(".mbox")
    assert len({collision_key(p) for p in paths}) == len(paths)
    # Same history -> same answer: the mapping is reproducible.
    again: set[str] = set()
    for name, expected in zip(["Spam", "spam", "SPAM", "a:b", "a_b", "a?b"], paths, strict=True):
        got = assign_path(name, again)
        again.add(collision_key(got))
        assert got == expected


def test_directory_never_shadows_a_folder_file() -> None:
    taken: set[str] = set()
    files = []
    for name in ["x", "x.mbox/child", "x.mbox"]:
        path = assign_path(name, taken)
        taken.add(collision_key(path))
        files.append(path)
    dirs = {p.rsplit("/", 1)[0].casefold() for p in files if "/" in p}
    assert not dirs & {f.casefold() for f in files}


def test_resolve_inside_refuses_tampered_paths(tmp_path: Path) -> None:
    for bad in ["../x.mbox", "/etc/passwd", "a/../../x.mbox", ".mailmigrate/index.sqlite", ""]:
        with pytest.raises(ValueError):
            resolve_inside(tmp_path, bad)
    outside = tmp_path.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(ValueError):
        resolve_inside(tmp_path, "link/x.mbox")


_names = st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=4).map("/".join)
# Few characters, so that collisions after sanitising and case folding are common.
_alphabet_names = st.text(alphabet=st.sampled_from([*"aA./\\ :~_\x00", "ü", "Ü", "\ud800"]), max_size=12)


@given(st.lists(st.one_of(_names, _alphabet_names, st.sampled_from(HOSTILE)), max_size=30))
@settings(max_examples=300, deadline=None)
def test_any_names_inside_and_distinct(names: list[str]) -> None:
    taken: set[str] = set()
    seen: dict[str, str] = {}
    for name in names:
        if name in seen:
            continue
        path = assign_path(name, taken)
        assert collision_key(path) not in taken
        taken.add(collision_key(path))
        seen[name] = path
        assert _inside(ROOT, path), (name, path)
        assert not path.startswith(META_DIR)
        assert all(p and p not in (".", "..") for p in path.split("/"))
    # Distinct names -> distinct files, even on a case-insensitive filesystem.
    assert len({collision_key(p) for p in seen.values()}) == len(seen)
