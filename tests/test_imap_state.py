"""The restore/copy state file: schema 1 files are upgraded in place (nothing lost) and
still read as they are for a dry run; and the rewrite-tolerant form that lets a
rewriting server's copy be recognised, with what it does not take for the same."""

from __future__ import annotations

import sqlite3

from migrate.formats.rewrites import header_slack, loose_hash, loosen
from migrate.stores.imap_state import SCHEMA_VERSION, JobState
from migrate.stores.imap_writer import _Want, loose_identity

V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE folders (src_folder TEXT PRIMARY KEY, dest_folder TEXT, uidvalidity INTEGER,
    uidnext INTEGER, highestmodseq INTEGER, partial INTEGER NOT NULL DEFAULT 0);
CREATE TABLE placements (src_folder TEXT NOT NULL, src_key TEXT NOT NULL, src_uid INTEGER,
    state TEXT NOT NULL CHECK (state IN ('doubt', 'done', 'failed')), dest_folder TEXT NOT NULL,
    dest_uidvalidity INTEGER, dest_uid INTEGER, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    raw_size INTEGER NOT NULL, ident TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '[]',
    error TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (src_folder, src_key));
INSERT INTO meta VALUES ('schema_version', '1'), ('source', 's'), ('destination', 'd');
INSERT INTO placements VALUES ('INBOX', '7', 7, 'doubt', 'INBOX', 9, NULL, 'ab', 10, 10,
    'id:<m7@x>', '[]', NULL, '2026-01-01T00:00:00');
INSERT INTO placements VALUES ('INBOX', '8', 8, 'done', 'INBOX', 9, 3, 'cd', 10, 10,
    'id:<m8@x>', '["\\\\Seen"]', NULL, '2026-01-01T00:00:00');
"""


def v1_file(path):
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    conn.close()
    return path


def test_a_schema_1_file_is_upgraded_in_place_and_keeps_every_row(tmp_path):
    path = v1_file(tmp_path / "job.sqlite")
    state = JobState(path, "s", "d")
    try:
        (doubt,) = state.doubts("INBOX")
        assert (doubt.src_key, doubt.ident, doubt.dest_uidnext, doubt.loose_sha) == \
            ("7", "id:<m7@x>", None, None)
        done = state.lookup("INBOX", ["8"])["8"]
        assert done.state == "done" and done.dest_uid == 3 and done.flags == ("\\Seen",)
        assert state.claimed_uids("INBOX", 9) == {3}
        # a schema-1 doubt is still found by its Message-ID on a rewriting server
        assert _Want.of(doubt).loose_ident == "id:<m7@x>"
        assert state.reappends() == []
    finally:
        state.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() \
            == (str(SCHEMA_VERSION),)
        cols = {r[1] for r in conn.execute("PRAGMA table_info(placements)")}
        assert {"dest_uidnext", "sent_at", "eta", "loose_ident", "loose_sha"} <= cols
    finally:
        conn.close()


def test_a_dry_run_reads_a_schema_1_file_without_changing_it(tmp_path):
    path = v1_file(tmp_path / "job.sqlite")
    before = path.read_bytes()
    state = JobState(path, "s", "d", readonly=True)
    try:
        assert [p.src_key for p in state.doubts("INBOX")] == ["7"]
        assert state.done_keys("INBOX", ["7", "8"]) == {"8"}
    finally:
        state.close()
    assert path.read_bytes() == before


def test_the_tolerant_form_matches_a_servers_rewrites_and_nothing_else():
    src = (b"Message-ID: <a@x>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: X <x@y>\r\n\r\n"
           b"body \xc3\xbc stays 8-bit\r\n")
    munged = src.replace(b"Gr\xc3\xbc\xc3\x9fe", b"GrXXXXe")  # Cyrus munge8bit: per byte
    question = src.replace(b"Gr\xc3\xbc\xc3\x9fe", b"Gr??e")  # one '?' per character
    assert loose_hash(src) == loose_hash(munged) == loose_hash(question)
    assert len(src) - len(question) <= header_slack(src) == 4
    # the body must be equal byte for byte, and other header text too
    assert loose_hash(src) != loose_hash(src.replace(b"body \xc3\xbc", b"body X"))
    assert loose_hash(src) != loose_hash(src.replace(b"<a@x>", b"<b@x>"))
    assert loose_hash(src) != loose_hash(src.replace(b"From: X <x@y>", b"From: Y <x@y>"))
    assert loose_identity(src) == loose_identity(munged)
    assert loosen("Caf\u00c3\u00a9?") == "Caf?"
