"""Secrets: the password never shows up in logs (also the reconnect warnings), --json
output, state files, archives or the process's argv; what we create is private
(files 0600, directories 0700)."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import PASSWORD_ENV, cli_env
from proxy import TcpProxy
from seeding import bulk_append, imap_login, seed_message

SECRET = "Sup3r-Secret-Pw-7f3a"


def private_tree(root: Path) -> list[str]:
    """Everything under root (root included) that is not 0600 (files) / 0700 (dirs)."""
    bad = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            bad.append(f"{path.relative_to(root.parent)}: {oct(mode)}")
    return bad


def files_under(root: Path) -> list[Path]:
    return [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]


def run_watched(args: list[str], env: dict[str, str], proxy: TcpProxy | None = None,
                ) -> tuple[int, str, str, list[bytes]]:
    """Run the CLI, sampling /proc/<pid>/cmdline while it runs; reset the proxy once."""
    proc = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cmdlines: list[bytes] = []

    def watch() -> None:
        reset_done = proxy is None
        while proc.poll() is None:
            try:
                cmdlines.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
            except OSError:
                break
            if not reset_done and proxy is not None and proxy.bytes_from_server > 200_000:
                proxy.reset()  # a reconnect: its warnings go to the log too
                reset_done = True
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=120)
    watcher.join(timeout=5)
    return proc.returncode, out, err, cmdlines


@pytest.mark.parametrize("kind", ["a.sqlite", "tree"])
def test_password_appears_nowhere_and_files_are_private(dovecot, tmp_path: Path, kind: str):
    user = dovecot.add_user(password=SECRET)
    client = imap_login(dovecot, user)
    bulk_append(client, "INBOX", [seed_message(i, 20_000, tag="sec") for i in range(60)])
    client.logout()
    dest = dovecot.add_user(password=SECRET + "-dest")
    home = tmp_path / "home"
    home.mkdir()
    archive = home / kind
    state_home = home / "state"
    env = cli_env(SECRET, XDG_STATE_HOME=str(state_home), MM_DEST=dest.password)
    logs: list[str] = []
    argvs: list[bytes] = []
    with TcpProxy(dovecot.host, dovecot.imap_port) as proxy:
        url = f"imap://{user.name}@127.0.0.1:{proxy.port}?tls=none"
        code, out, err, cmd = run_watched(
            ["backup", url, str(archive), "--password-env", PASSWORD_ENV, "--json",
             "--retry-delay", "0.05"], env, proxy)
        assert code == 0, err
        assert "reconnecting" in err  # the warning path was exercised
        logs += [out, err]
        argvs += cmd
        dest_url = f"imap://{dest.name}@127.0.0.1:{dovecot.imap_port}?tls=none"
        code, out, err, cmd = run_watched(
            ["restore", str(archive), dest_url, "--password-env", "MM_DEST", "--json"], env)
        assert code == 0, err
        logs += [out, err]
        argvs += cmd
        # A refused login prints the user and server, never what was tried.
        code, out, err, cmd = run_watched(
            ["backup", url, str(home / "other.sqlite"), "--password-env", "MM_DEST", "--json"], env)
        assert code == 3, err
        logs += [out, err]
        argvs += cmd
    assert argvs, "the process was never observed"
    for text in logs:
        assert SECRET not in text
    for cmdline in argvs:
        assert SECRET.encode() not in cmdline
    written = files_under(archive) + files_under(state_home)
    assert any("state" in str(p) for p in written), "restore wrote no state file"
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert private_tree(archive) == []
    assert private_tree(state_home / "mailmigrate") == []
