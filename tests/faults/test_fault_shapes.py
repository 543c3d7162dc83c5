"""Replies in shapes the IMAP library cannot parse (tests/faults/hostile_imap.py SHAPES):
never a traceback. The folder falls back to the plain method (STATUS without
HIGHESTMODSEQ, SEARCH without MODSEQ, LIST without RETURN) and is archived, or fails
alone with one line naming it, and the run goes on. An APPENDUID that cannot be read
leaves the UIDs unknown; the messages are still appended once. (Cyrus's own bent
shape, ``* SEARCH (MODSEQ n)``, is met on the real server in tests/test_backup.py.)"""

from __future__ import annotations

import json

from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, run_cli
from hostile_imap import HFolder, HMessage, HostileImap
from seeding import seed_message


def folder(name: bytes, tag: str, n: int = 3, *shapes: str) -> HFolder:
    return HFolder(name, [HMessage(i + 1, seed_message(i, 600, tag=tag)) for i in range(n)],
                   shapes=frozenset(shapes))


def backup(server: HostileImap, archive) -> tuple[int, dict, str]:
    done = run_cli("backup", f"imap://u@127.0.0.1:{server.port}?tls=none", str(archive),
                   "--password-env", PASSWORD_ENV, "--json", "--retries", "1",
                   "--retry-delay", "0.01", env=cli_env("pw"))
    assert "Traceback" not in done.err, done.err
    return done.code, json.loads(done.out) if done.out else {}, done.err


def test_bent_replies_fall_back_or_fail_alone_and_the_run_goes_on(tmp_path):
    folders = [folder(b"INBOX", "inbox"),
               folder(b"ModseqNil", "nil", 3, "status-modseq"),
               folder(b"NoStatus", "nostatus", 3, "status"),
               folder(b"OpenModseq", "open", 3, "search-modseq"),
               folder(b"NoSize", "nosize", 2, "fetch-size"),
               folder(b"Extended", "ext", 2, "list-extended")]
    archive = tmp_path / "a.sqlite"
    with HostileImap(folders, condstore=True, special_use=True) as server:
        code, summary, err = backup(server, archive)
        assert code == 1, err
        errors = {e.split(":", 1)[0]: e for e in summary["errors"]}
        # STATUS and FETCH RFC822.SIZE have no plain method to fall back to: one line each.
        assert set(errors) == {"NoStatus", "NoSize"}, errors
        assert "cannot be read" in errors["NoStatus"] and "STATUS" in errors["NoStatus"]
        assert "RFC822.SIZE" in errors["NoSize"]
        assert all("\n" not in e for e in errors.values())
        got = {name: len(box) for name, box in archive_contents(archive).items()}
        # HIGHESTMODSEQ NIL: the plain STATUS; LIST-EXTENDED: the plain LIST.
        assert got == {"INBOX": 3, "ModseqNil": 3, "OpenModseq": 3, "Extended": 2}, got
        # The next night: flags are checked by SEARCH ... MODSEQ, whose answer is left
        # open in OpenModseq; the plain SEARCH reads them, nothing is fetched twice.
        code, summary, err = backup(server, archive)
        assert code == 1, err
        assert {e.split(":", 1)[0] for e in summary["errors"]} == {"NoStatus", "NoSize"}
        assert summary["new_messages"] == 0
        assert {n: len(b) for n, b in archive_contents(archive).items()} == got


def test_appenduid_that_cannot_be_read_still_appends_once(tmp_path):
    source = tmp_path / "src.sqlite"
    with HostileImap([folder(b"INBOX", "a", 4)]) as server:
        code, _, err = backup(server, source)
        assert code == 0, err
    with HostileImap([HFolder(b"INBOX")], appenduid=b"7 :4") as dest:
        url = f"imap://u@127.0.0.1:{dest.port}?tls=none"
        args = ["restore", str(source), url, "--password-env", PASSWORD_ENV, "--json",
                "--state", str(tmp_path / "state.sqlite")]
        done = run_cli(*args, env=cli_env("pw"))
        assert "Traceback" not in done.err, done.err
        assert done.code == 0, done.err
        assert json.loads(done.out)["new_messages"] == 4 and dest.appends == 4
        again = run_cli(*args, env=cli_env("pw"))
        assert again.code == 0, again.err
        assert json.loads(again.out)["new_messages"] == 0 and dest.appends == 4
