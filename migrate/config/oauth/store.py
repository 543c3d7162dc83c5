"""Where a sign-in lives: the refresh token in the system keyring, or a 0600 file.

The index, ``<config dir>/oauth2/accounts.json``, holds no secret: the address,
the provider, its token URL, the client ID and where the refresh token is. It
is what ``auth list`` shows and what a command reads to find a stored sign-in,
cheaply, without importing authlib. The secret (the refresh token, and a client
secret given at sign-in) goes into the system keyring, the optional ``keyring``
extra; where no keyring works (a headless server), into
``<config dir>/oauth2/refresh-tokens.json``, mode 0600 in a 0700 directory,
said loudly when that file is first made. ``MAILMIGRATE_OAUTH2_STORE=file``
chooses the file on purpose.

Every read-modify-write of the two files holds one ``flock``, so two sign-ins
(or a refresh token rotated by a run while another signs in) never lose an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrate.config.jobs import atomic_write, config_dir
from migrate.errors import AuthError, UsageError

KEYRING_SERVICE = "mailmigrate-oauth2"
STORES = ("keyring", "file")


def oauth_dir() -> Path:
    return config_dir() / "oauth2"


def index_path() -> Path:
    return oauth_dir() / "accounts.json"


def secrets_path() -> Path:
    return oauth_dir() / "refresh-tokens.json"


def account_key(address: str) -> str:
    """Addresses are looked up case-blind, as providers treat them."""
    return address.strip().lower()


@dataclass
class Grant:
    """One signed-in account, as the index keeps it (nothing secret)."""

    address: str
    provider: str
    token_url: str
    client_id: str
    scopes: list[str]
    store: str
    signed_in: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    revocation_url: str | None = None
    cafile: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        try:
            grant = cls(**data)
        except TypeError:
            raise UsageError(f"{index_path()} has an entry this version cannot read; "
                             "remove it with `mailmigrate auth logout` and sign in again") from None
        if grant.store not in STORES:
            raise UsageError(f"{index_path()}: unknown store {grant.store!r} for {grant.address}")
        return grant


@dataclass
class GrantSecret:
    """What the keyring entry or the file line holds for one account."""

    refresh_token: str
    client_secret: str | None = None

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def loads(cls, text: str, where: str) -> GrantSecret:
        try:
            data = json.loads(text)
            return cls(refresh_token=str(data["refresh_token"]),
                       client_secret=data.get("client_secret"))
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"the stored sign-in in {where} is damaged; sign in again with "
                            "`mailmigrate auth login ADDRESS`") from None


# -- files -------------------------------------------------------------------------
def read_private(path: Path, what: str) -> str:
    """A secret file's text, refused when others may read it: a key that other users
    could copy is a key to every mailbox it opens."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UsageError(f"{what} {path} is readable by other users (mode {mode:o}); "
                             f"run `chmod 600 {path}` and try again")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    oauth_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(oauth_dir() / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_json(path: Path, what: str, *, private: bool) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = read_private(path, what) if private else path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        raise UsageError(f"{what} {path} is not valid JSON; fix or remove it") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} is not a JSON object; fix or remove it")
    return data


def _index() -> dict[str, Any]:
    accounts = _read_json(index_path(), "the OAuth2 sign-in index", private=False).get("accounts")
    return accounts if isinstance(accounts, dict) else {}


def _write_index(accounts: dict[str, Any]) -> None:
    atomic_write(index_path(), json.dumps({"version": 1, "accounts": accounts}, indent=2,
                                          sort_keys=True) + "\n")


def _file_secrets() -> dict[str, str]:
    return {str(k): str(v) for k, v in
            _read_json(secrets_path(), "the refresh-token file", private=True).items()}


def _write_file_secrets(secrets: dict[str, str]) -> None:
    atomic_write(secrets_path(), json.dumps(secrets, indent=2, sort_keys=True) + "\n")


# -- the keyring -------------------------------------------------------------------
def usable_keyring() -> Any | None:
    """The keyring module when a real backend answers; None sends secrets to the file."""
    if os.environ.get("MAILMIGRATE_OAUTH2_STORE", "").lower() == "file":
        return None
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken backend configuration: as good as none
        return None
    return None if isinstance(backend, fail.Keyring) else keyring


def file_warning(address: str) -> str:
    return (f"WARNING: no system keyring here, so the refresh token for {address} is kept in "
            f"{secrets_path()} (mode 0600). Anyone who can read that file can read this mail "
            f"until `mailmigrate auth logout {address}`. To keep it in a keyring instead: "
            "pip install 'mailmigrate[keyring]' with a running Secret Service or Keychain, "
            "then sign in again.")


# -- grants ------------------------------------------------------------------------
def find_grant(address: str) -> Grant | None:
    """The stored sign-in for ``address``, or None (no file: nobody signed in)."""
    entry = _index().get(account_key(address))
    return Grant.from_dict(entry) if entry is not None else None


def list_grants() -> list[Grant]:
    return [Grant.from_dict(v) for _, v in sorted(_index().items())]


def save_grant(grant: Grant, secret: GrantSecret, warn: Callable[[str], None]) -> Grant:
    """Store a new sign-in (replacing one for the same address); ``warn`` hears,
    once, that a refresh-token file was made because no keyring works here."""
    key = account_key(grant.address)
    kr = usable_keyring()
    if kr is not None:
        try:
            kr.set_password(KEYRING_SERVICE, key, secret.dumps())
            grant.store = "keyring"
        except Exception as exc:  # keyring backends raise their own types
            warn(f"the system keyring refused the refresh token ({type(exc).__name__}); "
                 "keeping it in a file instead")
            kr = None
    with _locked():
        secrets = _file_secrets()
        created = False
        if kr is None:
            created = not secrets_path().exists()
            secrets[key] = secret.dumps()
            grant.store = "file"
            _write_file_secrets(secrets)
        elif key in secrets:  # an older sign-in of this address kept in the file
            del secrets[key]
            _write_file_secrets(secrets)
        accounts = _index()
        accounts[key] = asdict(grant)
        _write_index(accounts)
    if created:
        warn(file_warning(grant.address))
    return grant


def read_secret(grant: Grant) -> GrantSecret:
    key = account_key(grant.address)
    again = f"sign in again: mailmigrate auth login {grant.address}"
    if grant.store == "keyring":
        kr = usable_keyring()
        if kr is None:
            raise AuthError(f"the sign-in for {grant.address} is in the system keyring, which is "
                            f"not reachable here; unlock it, or {again}")
        try:
            text = kr.get_password(KEYRING_SERVICE, key)
        except Exception as exc:
            raise AuthError(f"cannot read the keyring entry for {grant.address} "
                            f"({type(exc).__name__}); unlock the keyring, or {again}") from None
        if text is None:
            raise AuthError(f"the refresh token for {grant.address} is gone from the keyring; {again}")
        return GrantSecret.loads(str(text), "the keyring")
    text = _file_secrets().get(key)
    if text is None:
        raise AuthError(f"the refresh token for {grant.address} is gone from {secrets_path()}; {again}")
    return GrantSecret.loads(text, str(secrets_path()))


def update_refresh_token(grant: Grant, secret: GrantSecret) -> None:
    """Keep a rotated refresh token (Microsoft sends a new one on refresh)."""
    key = account_key(grant.address)
    if grant.store == "keyring":
        kr = usable_keyring()
        if kr is not None:
            with contextlib.suppress(Exception):  # the old one stays valid until it expires
                kr.set_password(KEYRING_SERVICE, key, secret.dumps())
        return
    with _locked():
        secrets = _file_secrets()
        secrets[key] = secret.dumps()
        _write_file_secrets(secrets)


def delete_grant(address: str) -> tuple[Grant, GrantSecret | None]:
    """Forget a sign-in: index entry and secret; returns them (for revocation)."""
    key = account_key(address)
    grant = find_grant(address)
    if grant is None:
        known = ", ".join(g.address for g in list_grants()) or "none"
        raise UsageError(f"no OAuth2 sign-in stored for {address} (signed in: {known})")
    secret: GrantSecret | None = None
    with contextlib.suppress(AuthError, UsageError):
        secret = read_secret(grant)
    kr = usable_keyring()
    if kr is not None:
        with contextlib.suppress(Exception):  # not there, or a backend that cannot delete
            kr.delete_password(KEYRING_SERVICE, key)
    with _locked():
        secrets = _file_secrets()
        if secrets.pop(key, None) is not None:
            _write_file_secrets(secrets)
        accounts = _index()
        accounts.pop(key, None)
        _write_index(accounts)
    return grant, secret
