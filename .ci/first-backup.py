"""CI: the README's first backup, with the command `./scripts/install` put in place.

Starts a private Dovecot on loopback (the test suite's fixture), gives it an account
with three messages in two folders, runs the installed `mailmigrate backup` into the
embedded SQLite default, and checks the archive against the server (`verify`, by
content hash) and on its own. Usage: python .ci/first-backup.py PATH/TO/mailmigrate SCRATCH_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dovecot import DovecotServer  # noqa: E402
from seeding import bulk_append, create_folder, imap_login, seed_message  # noqa: E402


def main(command: str, scratch: Path) -> int:
    with DovecotServer() as server:
        user = server.add_user()
        client = imap_login(server, user)
        sent = [seed_message(i, 2_000, tag="ci") for i in range(3)]
        bulk_append(client, "INBOX", sent[:2])
        create_folder(client, "Archiv/2019", parents=True)
        bulk_append(client, "Archiv/2019", sent[2:])
        client.logout()
        archive = scratch / "mail.sqlite"
        url = f"imap://{user.name}@127.0.0.1:{server.imap_port}?tls=none"
        done = subprocess.run([command, "backup", url, str(archive), "--password-env", "CI_PW"],
                              env={**os.environ, "CI_PW": user.password}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300, check=False)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            print(f"ci: the installed backup exited {done.returncode}")
            return 1
        # the archive against the server, by content hash, and its own integrity
        checks = [[command, "verify", str(archive), url, "--password-env", "CI_PW", "--json"],
                  [command, "verify", str(archive), "--json"]]
        for check in checks:
            result = subprocess.run(check, env={**os.environ, "CI_PW": user.password},
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=300, check=False)
            if result.returncode != 0:
                print(f"ci: `{' '.join(check[1:3])}` exited {result.returncode}: "
                      f"{result.stdout.strip()} {result.stderr.strip()}")
                return 1
        listed = subprocess.run([command, "ls", str(archive), "--json"], capture_output=True,
                                text=True, timeout=60, check=False)
        counts = {f["folder"]: f["messages"] for f in json.loads(listed.stdout)["folders"]}
        if counts.get("INBOX") != 2 or counts.get("Archiv/2019") != 1:
            print(f"ci: the archive lists {counts}, not INBOX 2 and Archiv/2019 1")
            return 1
    print("ci: the installed tool backed up 3 messages in 2 folders into SQLite; verify is clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
