"""The bounded chunk: ``--max-bytes`` / ``--max-time`` stop a run at a checkpoint and say
``more``; the same command goes on, and a chain of chunks moves each message once."""

from __future__ import annotations

from cli_helpers import PASSWORD_ENV, archive_contents, cli_env, imap_url, run_cli
from fleet_seed import FOLDERS, assert_exactly_once, seed_account

SOURCE_PW = "MM_SOURCE_PASSWORD"


def test_copy_in_chunks_moves_each_message_once(dovecot, tmp_path):
    a, b = dovecot.add_user(), dovecot.add_user()
    total = seed_account(dovecot, a, per_folder=3)
    env = cli_env(b.password, **{SOURCE_PW: a.password})
    args = ["copy", imap_url(dovecot, a), imap_url(dovecot, b), "--password-env", SOURCE_PW,
            "--dest-password-env", PASSWORD_ENV, "--state", str(tmp_path / "state.sqlite"),
            "--max-bytes", "1", "--json", "--quiet"]
    moved, runs = 0, 0
    while True:
        runs += 1
        assert runs <= 10, "chunks never finished"
        done = run_cli(*args, env=env)
        assert done.code == 0, done.err
        summary = done.json()
        moved += summary["new_messages"]
        if not summary["more"]:
            break
        # a chunk that stops early stores at least one batch, and leaves folders deferred
        assert summary["new_messages"] > 0
        assert any(f["deferred"] for f in summary["per_folder"])
    # one batch per folder (each folder is small): one chunk per folder, then done
    assert runs == len(FOLDERS)
    assert moved == total
    assert_exactly_once(dovecot, a, b)


def test_backup_in_chunks_then_no_op(dovecot, tmp_path):
    a = dovecot.add_user()
    total = seed_account(dovecot, a, per_folder=2)
    archive = tmp_path / "a.sqlite"
    args = ["backup", imap_url(dovecot, a), str(archive), "--password-env", PASSWORD_ENV,
            "--max-bytes", "1KB", "--json", "--quiet"]
    summaries = []
    for _ in range(10):
        done = run_cli(*args, password=a.password)
        assert done.code == 0, done.err
        summaries.append(done.json())
        if not summaries[-1]["more"]:
            break
    assert [s["more"] for s in summaries] == [True] * (len(summaries) - 1) + [False]
    assert sum(s["new_messages"] for s in summaries) == total
    held = archive_contents(archive)
    assert sum(len(box) for box in held.values()) == total
    again = run_cli(*args, password=a.password)
    assert again.json()["new_messages"] == 0 and again.json()["more"] is False


def test_bad_max_bytes_is_a_usage_error(dovecot, tmp_path):
    a = dovecot.add_user()
    done = run_cli("backup", imap_url(dovecot, a), str(tmp_path / "x.sqlite"), "--password-env",
                   PASSWORD_ENV, "--max-bytes", "lots", password=a.password)
    assert done.code == 2
    assert "--max-bytes 'lots'" in done.err and "Traceback" not in done.err
