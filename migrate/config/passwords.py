"""Where a secret comes from, spelled as text: ``env:VAR``, ``file:PATH``, ``command:CMD``…

Saved jobs and fleet ledgers both keep a *reference* to each password, never the
password itself, and both turn it into a :class:`PasswordSource` the same way.
One table, :data:`KINDS`, holds every kind: its prefix as a user writes it in a
CSV or ledger, its method name in a job file, and how it becomes a
PasswordSource. A new kind (an OAuth2 service, a vault) is one more row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from migrate.config.credentials import KEYRING_SERVICE
from migrate.config.endpoints import PasswordSource
from migrate.config.jobs import DEST_SECRET_ENV, SECRET_ENV, Credential, Job
from migrate.errors import UsageError


@dataclass(frozen=True)
class CredentialKind:
    """One way to get a secret."""

    #: As written in a CSV or ledger column, before the colon: ``oauth2-command``.
    prefix: str
    #: :attr:`Credential.method`, as a job file spells it: ``oauth2``.
    method: str
    #: (value, prompt label, mailbox) -> the PasswordSource that resolves it; the
    #: mailbox (the account's user) matters to an admin service acting for many.
    build: Callable[[str, str, str | None], PasswordSource]
    #: Resolved by the parent and handed to a child through its environment
    #: (the child has no keyring session, or the secret exists only here).
    resolve_in_parent: bool = False


def _oauth(method: str) -> Callable[[str, str, str | None], PasswordSource]:
    """A stored sign-in or an admin service (migrate.config.oauth), imported only when used."""

    def build(value: str, label: str, mailbox: str | None) -> PasswordSource:
        from migrate.config.oauth.tokens import oauth_password_source

        source = oauth_password_source(method, value, label, mailbox=mailbox)
        assert source is not None  # both methods are OAuth2 ones
        return source

    return build


KINDS: tuple[CredentialKind, ...] = (
    CredentialKind("env", "env", lambda v, label, _: PasswordSource(env=v, prompt_label=label)),
    CredentialKind("file", "file",
                   lambda v, label, _: PasswordSource(file=Path(v), prompt_label=label)),
    CredentialKind("command", "command",
                   lambda v, label, _: PasswordSource(command=v, prompt_label=label)),
    CredentialKind("keyring", "keyring",
                   lambda v, label, _: PasswordSource(keyring=(KEYRING_SERVICE, v), prompt_label=label),
                   resolve_in_parent=True),
    CredentialKind("oauth2-command", "oauth2",
                   lambda v, label, _: PasswordSource(oauth2_command=v, prompt_label=label)),
    # `mailmigrate auth login ADDRESS` / `auth service add NAME`: the child finds the
    # grant or service from its environment (migrate.config.oauth.tokens.apply_job_env)
    CredentialKind("oauth2-login", "oauth2-login", _oauth("oauth2-login")),
    CredentialKind("oauth2-service", "oauth2-service", _oauth("oauth2-service")),
    CredentialKind("plain", "plaintext", lambda v, label, _: PasswordSource.literal(v),
                   resolve_in_parent=True),
)
_BY_PREFIX = {k.prefix: k for k in KINDS}
_BY_METHOD = {k.method: k for k in KINDS}
#: The kinds a CSV may name (``plain:`` only behind an explicit flag).
REFERENCE_PREFIXES = tuple(k.prefix for k in KINDS if k.method != "plaintext")


def kind_of(cred: Credential) -> CredentialKind:
    try:
        return _BY_METHOD[cred.method]
    except KeyError:
        raise UsageError(f"unknown credential method {cred.method!r}; one of "
                         f"{', '.join(_BY_METHOD)}") from None


def password_for(cred: Credential, label: str, mailbox: str | None = None) -> PasswordSource:
    """The PasswordSource a saved credential stands for (``mailbox``: the account's
    user, which an ``oauth2-service`` credential acts for)."""
    return kind_of(cred).build(cred.value, label, mailbox)


def parse_credential(text: str, *, allow_clear: bool = False) -> Credential:
    """``env:VAR`` (or another prefix of :data:`KINDS`) -> Credential.

    Anything else is a clear password: refused unless ``allow_clear``, since a
    file of clear passwords is the first thing an intruder looks for. A clear
    password that happens to start with a known prefix is written ``plain:…``.
    """
    prefix, sep, value = text.partition(":")
    kind = _BY_PREFIX.get(prefix.strip().lower()) if sep else None
    if kind is None:
        if not allow_clear:
            raise UsageError(f"a clear password, not a reference; write where it comes from "
                             f"({', '.join(p + ':' for p in REFERENCE_PREFIXES)}) or allow clear "
                             "passwords with --allow-clear-passwords")
        return Credential("plaintext", text)
    if kind.method == "plaintext" and not allow_clear:
        raise UsageError("a clear password (plain:); allow clear passwords with "
                         "--allow-clear-passwords, or say where it comes from instead")
    if not value:
        raise UsageError(f"{kind.prefix}: needs a value, e.g. {kind.prefix}:SOMETHING")
    return Credential(kind.method, value)


def format_credential(cred: Credential) -> str:
    """The text :func:`parse_credential` reads back (a clear password shows as such)."""
    return f"{kind_of(cred).prefix}:{cred.value}"


def shown(cred: Credential | None) -> str:
    """A credential as output may show it: where it comes from, never a clear password."""
    if cred is None:
        return ""
    if cred.method == "plaintext":
        return "plain:(hidden)"
    return format_credential(cred)


def child_env(job: Job, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (our environment) plus the job's secrets that only this process can
    resolve (keyring, clear), for a child that reads them with ``--password-env``:
    never argv, which ``ps`` shows to every user."""
    from migrate.config.oauth.tokens import apply_job_env

    env = dict(os.environ if base is None else base)
    for cred, var in ((job.credentials, SECRET_ENV), (job.dest_credentials, DEST_SECRET_ENV)):
        if cred is not None and kind_of(cred).resolve_in_parent:
            env[var] = password_for(cred, "password").get()
    apply_job_env(env, job.credentials, "--")
    apply_job_env(env, job.dest_credentials, "--dest-")
    return env


__all__ = ["KINDS", "CredentialKind", "child_env", "format_credential", "kind_of",
           "parse_credential", "password_for", "shown"]
