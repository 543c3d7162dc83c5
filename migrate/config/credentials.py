"""The system keyring, through the optional ``keyring`` package.

Optional because a headless server often has no Secret Service; a job can
then use an env var, a file or a command instead. Tests (and anyone) can
select a backend with ``PYTHON_KEYRING_BACKEND`` (the keyring package's own
switch), e.g. a file-backed one.
"""

from __future__ import annotations

from typing import Any

from migrate.errors import AuthError, UsageError

KEYRING_SERVICE = "mailmigrate"


def _keyring() -> Any:
    try:
        import keyring
    except ImportError:
        raise UsageError("the system keyring needs the optional extra: "
                         "pip install 'mailmigrate[keyring]'") from None
    return keyring


def keyring_get(service: str, username: str) -> str:
    kr = _keyring()
    try:
        value = kr.get_password(service, username)
    except Exception as exc:  # keyring backends raise their own types
        raise AuthError(f"cannot read the keyring entry {service}/{username}: {exc}") from None
    if value is None:
        raise AuthError(f"no password in the keyring for {service}/{username}; "
                        f"store one with `mailmigrate jobs add` or `keyring set {service} {username}`")
    return str(value)


def keyring_set(service: str, username: str, secret: str) -> None:
    kr = _keyring()
    try:
        kr.set_password(service, username, secret)
    except Exception as exc:
        raise UsageError(f"cannot store the password in the keyring ({exc}); "
                         "use --password-env/--password-file/--password-command instead") from None


def keyring_delete(service: str, username: str) -> None:
    kr = _keyring()
    try:
        kr.delete_password(service, username)
    except Exception:  # already gone, or the backend cannot delete: nothing to undo
        return
