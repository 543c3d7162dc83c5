"""A file-backed keyring backend for tests: ``PYTHON_KEYRING_BACKEND=keyring_file_backend.FileKeyring``.

The real backends (Secret Service, macOS Keychain) need a desktop session;
this one keeps ``{service: {user: secret}}`` in the JSON file named by
``MM_TEST_KEYRING_FILE``, so tests can see exactly what was stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def path(self) -> Path:
        return Path(os.environ["MM_TEST_KEYRING_FILE"])

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self.path.write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if username not in data.get(service, {}):
            raise PasswordDeleteError(username)
        del data[service][username]
        self.path.write_text(json.dumps(data))
