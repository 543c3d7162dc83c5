"""The accounts of a batch: one row per mailbox pair, read from the files admins already have.

Three formats are read:

* ours, a CSV with the header ``kind,source,dest,source_password,dest_password``
  (``kind`` optional, ``copy`` by default; ``backup``, ``drain`` and ``restore``
  take an archive path or a template such as ``archives/{user}.sqlite``);
* imapsync's ``host1;user1;password1;host2;user2;password2`` lines (its FAQ's
  "file.txt" for sync loops);
* Exchange Online's IMAP migration CSV, ``EmailAddress,UserName,Password``
  (the destination mailbox, the source login, its password), with the hosts
  given on the command line.

A password cell names where the secret comes from (``env:VAR``, ``file:PATH``,
``command:CMD``, ``keyring:NAME``, ``oauth2-command:CMD``: one table,
:mod:`migrate.config.passwords`); a clear password is refused unless the user
allows it. A file is read whole before anything is kept: one bad row rejects
the file, and the error names its line.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from migrate.config.endpoints import Endpoint, parse_endpoint
from migrate.config.jobs import Credential
from migrate.config.passwords import parse_credential
from migrate.errors import MailmigrateError, UsageError

KINDS = ("copy", "backup", "drain", "restore")
FORMATS = ("auto", "native", "imapsync", "exchange")
IMAPSYNC_HEADER = ("host1", "user1", "password1", "host2", "user2", "password2")
NATIVE_COLUMNS = ("kind", "source", "dest", "source_password", "dest_password")
EXCHANGE_COLUMNS = ("emailaddress", "username", "password")
#: Which side of each kind is a server (the other is an archive path).
SERVER_SIDES = {"copy": ("source", "dest"), "backup": ("source",), "drain": ("source",),
                "restore": ("dest",)}
_MAX_SHOWN = 5


@dataclass(frozen=True)
class AccountSpec:
    """One mailbox pair as the ledger keeps it (passwords as references)."""

    kind: str
    source: str
    dest: str
    source_password: Credential | None = None
    dest_password: Credential | None = None

    @property
    def key(self) -> str:
        """A stable name for the pair: its state file and its locks are named by it."""
        return hashlib.sha256(f"{self.kind}\0{self.source}\0{self.dest}".encode()).hexdigest()[:20]

    def endpoint(self, side: str, insecure: bool = False) -> Endpoint:
        url = self.source if side == "source" else self.dest
        protocols = ("pop3",) if self.kind == "drain" and side == "source" else ("imap",)
        return parse_endpoint(url, insecure=insecure, protocols=protocols)

    @property
    def label(self) -> str:
        """What a person calls the account: the server login(s), not the whole URLs."""
        parts = []
        for side in ("source", "dest"):
            text = self.source if side == "source" else self.dest
            if side in SERVER_SIDES[self.kind]:
                try:
                    ep = self.endpoint(side, insecure=True)
                    text = f"{ep.user}@{ep.host}"
                except MailmigrateError:
                    pass
            parts.append(text)
        return " -> ".join(parts)


def read_accounts(path: Path, *, fmt: str = "auto", source_host: str | None = None,
                  dest_host: str | None = None, allow_clear: bool = False,
                  source_password: str | None = None, dest_password: str | None = None,
                  insecure: bool = False, base: Path | None = None) -> list[AccountSpec]:
    """Every account of ``path``, or a UsageError naming the bad lines (nothing is kept)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = guess_format(text)
    defaults = {"source_password": source_password, "dest_password": dest_password}
    reader = _Rows(allow_clear, insecure, base or Path.cwd(), defaults)
    if fmt == "imapsync":
        rows = reader.imapsync(text)
    elif fmt == "exchange":
        if not source_host or not dest_host:
            raise UsageError("an Exchange Online CSV names no servers: give --source-host "
                             "and --dest-host (a host, or a URL such as imaps://host:993)")
        rows = reader.exchange(text, source_host, dest_host)
    else:
        rows = reader.native(text)
    accounts: list[AccountSpec] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, AccountSpec):
            if row.key in seen:
                reader.bad(line, f"the same account as line {seen[row.key]}")
            else:
                seen[row.key] = line
                accounts.append(row)
    reader.raise_if_bad(path)
    if not accounts:
        raise UsageError(f"{path} lists no accounts")
    return accounts


def guess_format(text: str) -> str:
    """imapsync lines have five semicolons; Exchange's header names EmailAddress."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")),
                 "")
    header = [c.strip().lower() for c in first.split(",")]
    if "emailaddress" in header:
        return "exchange"
    if first.count(";") >= 5 and "," not in first.split(";")[0]:
        return "imapsync"
    return "native"


def server_url(host: str, user: str) -> str:
    """``host`` (``imap.example.com[:port]``, implicit TLS) or a URL without a user
    (``imap://127.0.0.1:1143?tls=none``), with ``user`` filled in."""
    host = host.strip()
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "imaps", host
    return f"{scheme}://{quote(user, safe='')}@{rest}"


def expand_template(template: str, endpoint: Endpoint, base: Path) -> str:
    """``archives/{user}.sqlite`` -> an absolute path for this account. A format prefix
    (``maildir:``) stays in front; the login never adds a directory level."""
    local, _, domain = endpoint.user.partition("@")
    values = {"user": endpoint.user, "local": local, "domain": domain or endpoint.host,
              "host": endpoint.host}
    safe = {k: v.replace("/", "_").replace("\\", "_").replace("\0", "_") or "_"
            for k, v in values.items()}
    try:
        filled = template.format(**safe)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"bad archive template {template!r} ({exc}); use {{user}}, {{local}}, "
                         "{domain} or {host}") from None
    prefix, colon, rest = filled.partition(":")
    if colon and prefix.isalpha() and len(prefix) > 1:
        return f"{prefix}:{(base / Path(rest).expanduser()).resolve()}"
    return str((base / Path(filled).expanduser()).resolve())


class _Rows:
    """Row parsing with error collection: every bad line is named, then all are refused."""

    def __init__(self, allow_clear: bool, insecure: bool, base: Path,
                 defaults: dict[str, str | None]) -> None:
        self.allow_clear = allow_clear
        self.insecure = insecure
        self.base = base
        self.defaults = defaults
        self.errors: list[tuple[int, str]] = []

    def bad(self, line: int, message: str) -> None:
        self.errors.append((line, message))

    def raise_if_bad(self, path: Path) -> None:
        if not self.errors:
            return
        line, message = self.errors[0]
        more = ""
        if len(self.errors) > 1:
            others = ", ".join(str(n) for n, _ in self.errors[1:1 + _MAX_SHOWN])
            tail = ", …" if len(self.errors) > 1 + _MAX_SHOWN else ""
            more = f" ({len(self.errors) - 1} more bad rows: lines {others}{tail})"
        raise UsageError(f"{path} line {line}: {message}{more}; nothing was imported")

    # -- formats ---------------------------------------------------------------------
    def _table(self, text: str, header_ok: Callable[[list[str]], str | None],
               ) -> Iterator[tuple[int, dict[str, str]]]:
        """(line, {column: cell}) of a CSV with a header; ``header_ok`` says what is wrong
        with the (lower-cased) columns, or None."""
        lines = _records(text, delimiter=",")
        try:
            header_line, header = next(lines)
        except StopIteration:
            return
        columns = [c.strip().lower() for c in header]
        problem = header_ok(columns)
        if problem:
            self.bad(header_line, problem)
            return
        for line, cells in lines:
            if len(cells) != len(columns):
                self.bad(line, f"{len(cells)} fields, the header has {len(columns)}")
                continue
            yield line, dict(zip(columns, (c.strip() for c in cells), strict=True))

    def native(self, text: str) -> Iterator[tuple[int, AccountSpec | None]]:
        def header_ok(columns: list[str]) -> str | None:
            unknown = [c for c in columns if c not in NATIVE_COLUMNS]
            if not unknown and "source" in columns and "dest" in columns:
                return None
            what = f"unknown column {unknown[0]!r}" if unknown else "no source and dest columns"
            return f"{what}; the header is {','.join(NATIVE_COLUMNS)} (kind optional)"

        for line, row in self._table(text, header_ok):
            yield line, self.account(line, row.get("kind") or "copy", row["source"], row["dest"],
                                     row.get("source_password", ""), row.get("dest_password", ""))

    def imapsync(self, text: str) -> Iterator[tuple[int, AccountSpec | None]]:
        for index, (line, cells) in enumerate(_records(text, delimiter=";")):
            cells = [c.strip() for c in cells]
            while len(cells) > 6 and not cells[-1]:
                cells.pop()  # imapsync's files end lines with ';'
            if index == 0 and tuple(c.lower() for c in cells) == IMAPSYNC_HEADER:
                continue  # the FAQ's header line, copied into the file: not an account
            if len(cells) != 6:
                self.bad(line, f"{len(cells)} fields; imapsync lines are "
                         "host1;user1;password1;host2;user2;password2")
                continue
            host1, user1, pw1, host2, user2, pw2 = cells
            if not all((host1, user1, host2, user2)):
                self.bad(line, "a host or user is empty")
                continue
            yield line, self.account(line, "copy", server_url(host1, user1),
                                     server_url(host2, user2), pw1, pw2)

    def exchange(self, text: str, source_host: str,
                 dest_host: str) -> Iterator[tuple[int, AccountSpec | None]]:
        def header_ok(columns: list[str]) -> str | None:
            if all(c in columns for c in EXCHANGE_COLUMNS):
                return None
            return "the header is EmailAddress,UserName,Password"

        for line, row in self._table(text, header_ok):
            if not row["emailaddress"] or not row["username"]:
                self.bad(line, "EmailAddress and UserName must not be empty")
                continue
            yield line, self.account(line, "copy", server_url(source_host, row["username"]),
                                     server_url(dest_host, row["emailaddress"]), row["password"], "")

    # -- one row -----------------------------------------------------------------------
    def account(self, line: int, kind: str, source: str, dest: str, source_pw: str,
                dest_pw: str) -> AccountSpec | None:
        kind = kind.strip().lower()
        if kind not in KINDS:
            self.bad(line, f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
            return None
        if not source or not dest:
            self.bad(line, "source and dest must not be empty")
            return None
        sides = SERVER_SIDES[kind]
        try:
            endpoints = {side: AccountSpec(kind, source, dest).endpoint(side, self.insecure)
                         for side in sides}
            server = endpoints[sides[0]]
            if kind in ("backup", "drain"):
                dest = expand_template(dest, server, self.base)
            elif kind == "restore":
                source = expand_template(source, server, self.base)
                if not Path(source.partition(":")[2] if source.startswith(("maildir:", "eml:"))
                            else source).exists():
                    raise UsageError(f"archive {source} does not exist")
            elif endpoints["source"].display() == endpoints["dest"].display():
                raise UsageError("source and dest are the same account")
            creds = {}
            for side, cell in (("source", source_pw), ("dest", dest_pw)):
                creds[side] = self.credential(side, cell, side in sides)
        except UsageError as exc:
            self.bad(line, str(exc))
            return None
        return AccountSpec(kind, source, dest, creds["source"], creds["dest"])

    def credential(self, side: str, cell: str, needed: bool) -> Credential | None:
        cell = cell or self.defaults[f"{side}_password"] or ""
        if not needed:
            if cell:
                raise UsageError(f"{side}_password given, but the {side} is an archive")
            return None
        if not cell:
            raise UsageError(f"no {side}_password: say where it comes from, e.g. env:VAR, "
                             f"or give --{side}-password for every row")
        try:
            return parse_credential(cell, allow_clear=self.allow_clear)
        except UsageError as exc:
            raise UsageError(f"{side}_password: {exc}") from None


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-empty, non-comment CSV record."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=False)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UsageError(f"line {reader.line_num}: not valid CSV ({exc})") from None
        if not cells or not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        yield reader.line_num, cells


__all__ = ["FORMATS", "KINDS", "SERVER_SIDES", "AccountSpec", "expand_template", "guess_format",
           "read_accounts", "server_url"]
