"""``restore``, ``copy`` and ``verify``: the migration half, on the same engine as backup.

restore = archive (ours, or a foreign .mbox) -> IMAP; copy = IMAP -> IMAP,
streaming with no archive. Both write through :class:`ImapDestination`,
whose exactly-once bookkeeping lives in a per-job state file
(:mod:`migrate.stores.imap_state`). verify compares two stores per folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from migrate.archive.open import open_archive
from migrate.cli.common import (
    CafileOpt,
    DryRunOpt,
    ExcludeOpt,
    FolderOpt,
    InsecureOpt,
    JsonOpt,
    LockWaitOpt,
    LogFileOpt,
    LoginOptions,
    MaxBytesOpt,
    MaxConnectionsOpt,
    MaxTimeOpt,
    Outcome,
    PassCmdOpt,
    PassEnvOpt,
    PassFileOpt,
    QuietOpt,
    RateOpt,
    RetriesOpt,
    RetryDelayOpt,
    SinceOpt,
    TimeoutOpt,
    announce,
    app,
    budget,
    make_reporter,
    parse_since,
    retry_policy,
    run_guarded,
    transfer_outcome,
)
from migrate.config import run_defaults
from migrate.config.endpoints import Endpoint, PasswordSource, parse_endpoint
from migrate.config.profiles import Profile
from migrate.engine.progress import human_bytes
from migrate.engine.ratelimit import Pacer, limited, shared_pacer
from migrate.engine.retry import RetryingDestination, RetryingSource, RetryPolicy, open_retrying
from migrate.engine.transfer import Budget, TransferOptions, transfer
from migrate.errors import EXIT_OK, EXIT_PARTIAL, ArchiveError, UsageError
from migrate.folder_map import FolderMapper, MapRule, parse_rules
from migrate.model import Folder
from migrate.reporting import Reporter
from migrate.results import TransferResult
from migrate.stores.base import SourceStore
from migrate.stores.imap_state import JobState, job_path

MapOpt = Annotated[list[str] | None, typer.Option(
    "--map", metavar="SRC=DST",
    help="Put source folder SRC (and its subfolders) at DST; '*' globs, reused in DST (repeatable).")]
PrefixOpt = Annotated[str, typer.Option(
    "--prefix", metavar="PATH", help="Put every folder under PATH (e.g. 'Restored/'), names kept.")]
SpecialUseOpt = Annotated[bool, typer.Option(
    "--special-use/--no-special-use",
    help="Map Sent/Drafts/Trash/Junk/Archive to the destination's folders of that use.")]
StateOpt = Annotated[Path | None, typer.Option(
    "--state", metavar="PATH", help="Checkpoint state file (default: in the user state directory).")]
SourceFormatOpt = Annotated[str | None, typer.Option(
    "--format", help="Source kind: sqlite, mbox-tree or mbox (one foreign mbox file); "
    "default: guessed from the path.")]
MboxFormatOpt = Annotated[str, typer.Option(
    "--mbox-format", help="Framing of a foreign mbox file: auto, mboxo, mboxrd or mboxcl2.")]
DestPassEnvOpt = Annotated[str | None, typer.Option(
    "--dest-password-env", metavar="VAR",
    help="Destination password from this variable (default: the source's --password-*).")]
DestPassFileOpt = Annotated[Path | None, typer.Option(
    "--dest-password-file", metavar="PATH",
    help="Destination password from this file (default: the source's --password-*).")]
DestPassCmdOpt = Annotated[str | None, typer.Option(
    "--dest-password-command", metavar="CMD",
    help="Destination password from this command (default: the source's --password-*).")]
RestoreOAuth2Opt = Annotated[str | None, typer.Option(
    "--oauth2-token-command", metavar="CMD",
    help="OAuth2 (XOAUTH2/OAUTHBEARER) login to DEST: CMD prints an access token "
    "(or JSON with access_token, expires_in); run again when it expires. Not with --password-*.")]
SourceOAuth2Opt = Annotated[str | None, typer.Option(
    "--oauth2-token-command", metavar="CMD",
    help="OAuth2 (XOAUTH2/OAUTHBEARER) login to SOURCE: CMD prints an access token "
    "(or JSON with access_token, expires_in); run again when it expires. Not with --password-*.")]
DestOAuth2Opt = Annotated[str | None, typer.Option(
    "--dest-oauth2-token-command", metavar="CMD",
    help="OAuth2 login to DEST: CMD prints an access token for the destination account. "
    "Never taken from --oauth2-token-command: a token is good for one account only.")]
VerifyOAuth2Opt = Annotated[str | None, typer.Option(
    "--oauth2-token-command", metavar="CMD",
    help="OAuth2 (XOAUTH2/OAUTHBEARER) login to the server (the first of two): CMD prints an "
    "access token; run again when it expires. Not with --password-*.")]
VerifyDestOAuth2Opt = Annotated[str | None, typer.Option(
    "--dest-oauth2-token-command", metavar="CMD",
    help="OAuth2 login to the second server; never taken from --oauth2-token-command.")]
DestCafileOpt = Annotated[Path | None, typer.Option(
    "--dest-cafile", help="Trust this CA bundle for the destination (default: --cafile).")]
GmailLabelsOpt = Annotated[str, typer.Option(
    "--gmail-labels", metavar="HOW",
    help="Gmail labels to a server without labels: folders (a folder per label, unlabelled "
    "mail in Archive), keywords (one copy, labels as keywords) or first (one copy, in the "
    "first label's folder). To Gmail, labels stay labels.")]


# -- sources ------------------------------------------------------------------------
def _is_url(text: str) -> bool:
    return "://" in text


def _is_foreign_mbox(path: str, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "mbox"
    location = Path(path).expanduser()
    if path.lower().endswith(".mbox"):
        return True
    if location.is_file() and not path.lower().endswith((".sqlite", ".db", ".sqlite3")):
        with open(location, "rb") as fp:
            return fp.read(5) == b"From "
    return False


def open_local_source(path: str, fmt: str | None, mbox_format: str,
                      lock_wait: float) -> tuple[SourceStore, str, str | None]:
    """(source store, identity for the state file, what a foreign mbox was taken for)."""
    location = Path(path).expanduser()
    if _is_foreign_mbox(path, fmt):
        from migrate.stores.foreign_mbox import ForeignMbox

        mbox = ForeignMbox(location, mbox_format)
        return mbox, f"mbox:{location.resolve()}", mbox.description
    if fmt == "mbox":
        raise UsageError(f"--format mbox needs a file, {path!r} is not one")
    from migrate.stores.archive_source import ArchiveSource
    from migrate.stores.base import KeyedArchiveReader

    archive = open_archive(path, fmt, readonly=True, lock_wait=lock_wait)
    if not isinstance(archive, KeyedArchiveReader):
        archive.close()
        raise UsageError(f"archive {path!r} cannot be read for restore")
    return ArchiveSource(archive, f"archive:{location.resolve()}"), f"archive:{location.resolve()}", None


def _dest_password(endpoint: Endpoint, dest: LoginOptions, fallback: LoginOptions) -> PasswordSource:
    """The destination's --dest-* options; without any, the source's --password-*.

    A password may well be shared by two accounts, so it is reused. An OAuth2
    token command is not: a token is issued for one account (and provider),
    and the two sides of a copy are always two accounts, so reusing it could
    only fail at login. Without a terminal to prompt on, say so up front.
    """
    fallback.check()
    stored = dest.signed_in(endpoint)  # the destination's own sign-in beats a reused password
    if stored is not None:
        return stored
    if not dest.given:
        if fallback.oauth2 and endpoint.auth == "password" and not sys.stdin.isatty():
            raise UsageError(
                f"no credentials for {endpoint.display()}: {fallback.prefix}oauth2-token-command is "
                f"not reused for the destination (a token is good for one account); give "
                f"{dest.prefix}oauth2-token-command or {dest.prefix}password-env/-file/-command")
        dest.require_token_for(endpoint)
        # The passwords carry over (none when the source logs in with a token).
        dest = LoginOptions(fallback.env, fallback.file, fallback.command,
                            prefix=fallback.prefix if fallback.passwords else dest.prefix)
    return dest.source(endpoint)


def _run_to_imap(
    command: str, source: SourceStore, source_id: str, endpoint: Endpoint,
    password: PasswordSource, *, folder: list[str] | None, exclude: list[str] | None,
    since: str | None, dry_run: bool, as_json: bool, quiet: bool, map_rules: list[str] | None,
    prefix: str, special_use: bool, state: Path | None, timeout: float, lock_wait: float,
    extra: dict[str, Any], policy: RetryPolicy, rate: str | None = None,
    open_source: Callable[[], SourceStore] | None = None, connections: int = 1,
    source_profile: Profile | None = None, chunk: Budget | None = None,
    gmail_labels: str = "folders",
) -> Outcome:
    """The shared body of restore and copy: state, destination, the engine, the report.

    ``open_source`` opens one more source connection (copy with
    ``--max-connections``); ``source_profile`` is the source's provider preset,
    whose folder names help the mapping.
    """
    from migrate.stores.imap_writer import ImapDestination
    from migrate.stores.label_view import LabelView, labelled

    _check_gmail_labels(gmail_labels)
    has_labels = labelled(source)
    rules = parse_rules(map_rules)
    options = TransferOptions(include=folder or (), exclude=exclude or (),
                              since=parse_since(since), dry_run=dry_run, connections=connections,
                              budget=chunk)
    reporter = make_reporter(quiet, as_json)
    pacer = shared_pacer(rate)

    open_paced = _paced(open_source, reporter, pacer) if open_source else None
    state_path = job_path(source_id, endpoint.display(), state)
    if not password.is_oauth2:
        password.get()  # no password: say so before any file is made
    fresh = not state_path.exists()
    job = JobState(state_path, source_id, endpoint.display(), lock_wait=lock_wait, readonly=dry_run)
    try:
        try:
            dest = open_retrying(policy, reporter, f"connecting to {endpoint.host}",
                                 lambda: ImapDestination(
                                     endpoint, password, job, rules=rules, prefix=prefix,
                                     special_use=special_use, dry_run=dry_run, reporter=reporter,
                                     timeout=timeout, source_profile=source_profile,
                                     default_names={"\\Archive": "Archive"} if has_labels
                                     else None))
        except BaseException:
            if fresh:  # the login failed: a state file that never held anything goes again
                job.close()
                for leftover in (state_path, *(state_path.with_name(state_path.name + s)
                                               for s in ("-wal", "-shm", ".lock"))):
                    leftover.unlink(missing_ok=True)
            raise
        try:
            if isinstance(source, RetryingSource):
                source.reporter = reporter
            if has_labels:
                extra = {**extra, "gmail_labels": "labels" if dest.gmail else gmail_labels}
            if has_labels and not dest.gmail:
                # A destination without labels: the view says where each message goes.
                view = LabelView(source, gmail_labels)
                source = view
                if open_paced is not None:
                    more = open_paced
                    open_paced = lambda: LabelView(more(), gmail_labels, like=view)  # noqa: E731
            dest.plan(source.list_folders())
            writer = RetryingDestination(dest, policy, reporter)
            result = transfer(limited(source, pacer), writer, options, reporter,
                              open_source=open_paced)
            writer.finish_run()  # late copies of APPENDs interrupted earlier
            summary = dest.summary()
        finally:
            dest.close()
    finally:
        job.close()
    message_errors = [f"{err['folder']}: {err['message']}: {err['error']}"
                      for err in summary["message_errors"]]
    # two copies of one message that mailmigrate may not resolve itself: exit 1
    message_errors += [f"{dup['folder']}: twice in {dup['destination']!r} (UID {dup['uid']}): "
                       f"{dup['why']}" for dup in summary["duplicates_left"]]
    if as_json:
        pass
    elif dry_run:
        _print_plan(result, summary)
    elif message_errors and quiet:
        for text in message_errors:
            typer.echo(f"mailmigrate: not copied: {text}", err=True)
    return transfer_outcome(result, {**extra, "destination": endpoint.display(),
                                     "state": str(state_path), **summary}, message_errors)


def _check_gmail_labels(value: str) -> None:
    from migrate.stores.label_view import MODES

    if value not in MODES:
        raise UsageError(f"--gmail-labels {value!r}: choose one of {', '.join(MODES)}")


def _paced(open_source: Callable[[], SourceStore], reporter: Reporter,
           pacer: Pacer | None) -> Callable[[], SourceStore]:
    """``open_source`` for one more connection, reporting to this run and sharing its pace."""
    def opener() -> SourceStore:
        more = open_source()
        if isinstance(more, RetryingSource):
            more.reporter = reporter
        return limited(more, pacer)
    return opener


def _archive_profile(source: SourceStore) -> Profile | None:
    """The provider preset of the account an archive was made from (its host), so a
    T-Online archive's unmarked "INBOX/Gesendet" is still known as Sent on restore."""
    from migrate.config.profiles import profile_for_host

    accounts = getattr(getattr(source, "archive", None), "accounts", None)
    hosts = {a.rpartition("@")[2] for a in accounts()} if callable(accounts) else set()
    found = {p.id: p for p in (profile_for_host(h) for h in hosts) if p is not None}
    return next(iter(found.values())) if len(found) == 1 else None


def _print_plan(result: TransferResult, summary: dict[str, Any]) -> None:
    for name in summary.get("folders_to_create", []):
        typer.echo(f"create folder {name}")
    for rename in summary.get("folders_renamed", []):
        typer.echo(f"rename {rename['from']} -> {rename['to']} ({rename['why']})")
    folder_map: dict[str, str] = summary.get("folder_map", {})
    for f in result.folders:
        if f.new_messages:
            typer.echo(f"append {f.new_messages} messages ({human_bytes(f.new_bytes)}) "
                       f"from {f.name} to {folder_map.get(f.name, f.name)}")
    typer.echo(f"total: {result.new_messages} messages ({human_bytes(result.new_bytes)}) to append")


def _announce(reporter_quiet: bool, text: str | None) -> None:
    if text and not reporter_quiet:
        typer.echo(f"mailmigrate: reading {text}", err=True)


# -- restore ------------------------------------------------------------------------------
@app.command()
def restore(
    archive: Annotated[str, typer.Argument(
        help="archive.sqlite, an mbox-tree directory, or a foreign .mbox file (Thunderbird, Takeout).")],
    dest: Annotated[str, typer.Argument(help="imaps://user@host[:port] or imap://... (STARTTLS).")],
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    since: SinceOpt = None,
    map_rules: MapOpt = None,
    prefix: PrefixOpt = "",
    special_use: SpecialUseOpt = True,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    oauth2_token_command: RestoreOAuth2Opt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    source_format: SourceFormatOpt = None,
    mbox_format: MboxFormatOpt = "auto",
    state: StateOpt = None,
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
    retries: RetriesOpt = 5,
    retry_delay: RetryDelayOpt = 1.0,
    rate: RateOpt = None,
    max_time: MaxTimeOpt = None,
    max_bytes: MaxBytesOpt = None,
    gmail_labels: GmailLabelsOpt = "folders",
    log_file: LogFileOpt = None,
) -> None:
    """Replay an archive or a foreign mbox file into an IMAP account; re-runs append nothing twice."""

    def body() -> Outcome:
        _check_gmail_labels(gmail_labels)
        endpoint = parse_endpoint(dest, insecure=insecure, cafile=str(cafile) if cafile else None)
        password = LoginOptions(password_env, password_file, password_command,
                               oauth2_token_command).source(endpoint)
        source, source_id, described = open_local_source(archive, source_format, mbox_format,
                                                          lock_wait)
        try:
            _announce(quiet or as_json, described)
            extra: dict[str, Any] = {"archive": archive}
            if described:
                extra["source_format"] = described
            return _run_to_imap(
                "restore", source, source_id, endpoint, password, folder=folder, exclude=exclude,
                since=since, dry_run=dry_run, as_json=as_json, quiet=quiet, map_rules=map_rules,
                prefix=prefix, special_use=special_use, state=state, timeout=timeout,
                lock_wait=lock_wait, extra=extra, policy=retry_policy(retries, retry_delay),
                rate=rate, source_profile=_archive_profile(source),
                chunk=budget(max_time, max_bytes), gmail_labels=gmail_labels)
        finally:
            source.close()

    run_guarded(body, command="restore", as_json=as_json, log_file=log_file)


# -- copy -----------------------------------------------------------------------------------
@app.command()
def copy(
    source: Annotated[str, typer.Argument(help="The account to copy from: imaps://user@host.")],
    dest: Annotated[str, typer.Argument(help="The account to copy to: imaps://user@host.")],
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    since: SinceOpt = None,
    map_rules: MapOpt = None,
    prefix: PrefixOpt = "",
    special_use: SpecialUseOpt = True,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    oauth2_token_command: SourceOAuth2Opt = None,
    dest_password_env: DestPassEnvOpt = None,
    dest_password_file: DestPassFileOpt = None,
    dest_password_command: DestPassCmdOpt = None,
    dest_oauth2_token_command: DestOAuth2Opt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    dest_cafile: DestCafileOpt = None,
    state: StateOpt = None,
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
    retries: RetriesOpt = 5,
    retry_delay: RetryDelayOpt = 1.0,
    rate: RateOpt = None,
    max_connections: MaxConnectionsOpt = None,
    max_time: MaxTimeOpt = None,
    max_bytes: MaxBytesOpt = None,
    gmail_labels: GmailLabelsOpt = "folders",
    log_file: LogFileOpt = None,
) -> None:
    """Copy one IMAP account into another, streaming, no archive; re-runs copy only what is new.

    Without --dest-password-* or --dest-oauth2-token-command the destination
    uses the source's --password-* option; an --oauth2-token-command is never
    reused for the destination (a token is good for one account only).
    """

    def body() -> Outcome:
        from migrate.stores.imap import ImapSource

        _check_gmail_labels(gmail_labels)
        src_ep = parse_endpoint(source, insecure=insecure, cafile=str(cafile) if cafile else None)
        dst_ca = dest_cafile or cafile
        dst_ep = parse_endpoint(dest, insecure=insecure, cafile=str(dst_ca) if dst_ca else None)
        if src_ep.display() == dst_ep.display():
            raise UsageError("SOURCE and DEST are the same account; copy needs two accounts")
        src_creds = LoginOptions(password_env, password_file, password_command, oauth2_token_command)
        src_pw = src_creds.source(src_ep)
        dst_pw = _dest_password(dst_ep, LoginOptions(dest_password_env, dest_password_file,
                                                    dest_password_command, dest_oauth2_token_command,
                                                    prefix="--dest-"), src_creds)
        policy = retry_policy(retries, retry_delay)
        run = run_defaults.resolve(src_ep, connections=max_connections, rate=rate, include=folder,
                                   exclude=exclude, warn=lambda text: announce([text], quiet))
        announce(run.notes, quiet)

        def open_source() -> SourceStore:
            return RetryingSource(ImapSource(src_ep, src_pw, timeout=timeout), policy)

        src = open_retrying(policy, make_reporter(quiet, as_json), f"connecting to {src_ep.host}",
                            open_source)
        try:
            return _run_to_imap(
                "copy", src, src_ep.display(), dst_ep, dst_pw, folder=list(run.include),
                exclude=list(run.exclude), since=since, dry_run=dry_run, as_json=as_json,
                quiet=quiet, map_rules=map_rules, prefix=prefix, special_use=special_use,
                state=state, timeout=timeout, lock_wait=lock_wait,
                extra={"source": src_ep.display()}, policy=policy, rate=run.rate,
                open_source=open_source, connections=run.connections,
                source_profile=run.profile, chunk=budget(max_time, max_bytes),
                gmail_labels=gmail_labels)
        finally:
            src.close()

    run_guarded(body, command="copy", as_json=as_json, log_file=log_file)


# -- verify ----------------------------------------------------------------------------------
RepairOpt = Annotated[bool, typer.Option(
    "--repair", help="With one ARCHIVE: fix what can be fixed without guessing, and say what.")]


def _check_archive(path: str, fmt: str | None, repair: bool, as_json: bool,
                   lock_wait: float) -> Outcome:
    """``verify ARCHIVE [--repair]``: integrity of our own archive (see migrate.archive.integrity)."""
    from migrate.archive.integrity import check_mbox_tree, check_sqlite
    from migrate.archive.open import guess_format

    kind = fmt or guess_format(path)
    if kind not in ("sqlite", "mbox-tree"):
        raise UsageError(f"verify checks sqlite and mbox-tree archives; {path!r} is {kind}")
    # Opening the archive takes its lock (writable for --repair), so no backup
    # runs while we look, and never while we repair.
    store = open_archive(path, kind, readonly=not repair, lock_wait=lock_wait)
    try:
        location = Path(path).expanduser()
        report = (check_sqlite(location, repair) if kind == "sqlite"
                  else check_mbox_tree(location, repair))
    finally:
        store.close()
    if not as_json:
        for line in report.problems:
            typer.echo(f"DAMAGED {line}")
        for line in report.repaired:
            typer.echo(f"REPAIRED {line}")
        for line in report.notes:
            typer.echo(f"NOTE {line}")
        if not report.problems:
            typer.echo(f"verify: {report.messages_checked} messages read, every sha256 matches")
    fields = {"archive": path, **report.as_dict()}
    if report.ok:
        return Outcome(EXIT_OK, fields)
    text = (f"archive {path} is damaged ({len(report.problems)} problems; first: "
            f"{report.problems[0]}); run `mailmigrate verify --repair {path}`")
    typer.echo(f"mailmigrate: error: {text}", err=True)
    return Outcome(ArchiveError.exit_code, fields, [text])


def _mapper_for(rules: list[MapRule], prefix: str, special_use: bool,
                ) -> Callable[[list[Folder], list[Folder]], dict[str, str]]:
    """The folder mapping restore/copy would use, for verify's source-to-destination pairing."""

    def map_folders(src: list[Folder], dest: list[Folder]) -> dict[str, str]:
        delimiter = next((f.delimiter for f in dest if f.delimiter), "/")
        mapper = FolderMapper(dest, delimiter, rules, prefix, special_use)
        return {name: t.path for name, t in mapper.map_all(src).items()}
    return map_folders


@app.command()
def verify(
    first: Annotated[str, typer.Argument(help="An archive (or .mbox file), or imaps://user@host.")],
    second: Annotated[str | None, typer.Argument(
        help="The server to compare with (imaps://user@host); without it, check the archive.")] = None,
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    map_rules: MapOpt = None,
    prefix: PrefixOpt = "",
    special_use: SpecialUseOpt = True,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    oauth2_token_command: VerifyOAuth2Opt = None,
    dest_password_env: DestPassEnvOpt = None,
    dest_password_file: DestPassFileOpt = None,
    dest_password_command: DestPassCmdOpt = None,
    dest_oauth2_token_command: VerifyDestOAuth2Opt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    dest_cafile: DestCafileOpt = None,
    source_format: SourceFormatOpt = None,
    mbox_format: MboxFormatOpt = "auto",
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
    repair: RepairOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Compare per folder (counts and content hashes): archive vs server, or server vs server.

    With one argument, check the archive's integrity: every message against its
    sha256, the index against the mbox files, the full-text index, orphans
    (exit 5 when damaged; --repair fixes what needs no guessing).
    Exit 1 when anything differs.
    """

    def body() -> Outcome:
        if second is None and not _is_url(first) and not _is_foreign_mbox(first, source_format):
            return _check_archive(first, source_format, repair, as_json, lock_wait)
        if repair:
            raise UsageError("--repair works on one archive: mailmigrate verify --repair ARCHIVE")
        from migrate.engine.compare import compare, folder_hashes, render
        from migrate.stores.imap import ImapSource

        creds = LoginOptions(password_env, password_file, password_command, oauth2_token_command)
        dest_creds = LoginOptions(dest_password_env, dest_password_file, dest_password_command,
                                 dest_oauth2_token_command, prefix="--dest-")
        creds.check()
        dest_creds.check()
        opened: list[SourceStore] = []
        try:
            if _is_url(first):
                ep = parse_endpoint(first, insecure=insecure, cafile=str(cafile) if cafile else None)
                opened.append(ImapSource(ep, creds.source(ep), timeout=timeout))
            else:
                src, _, _ = open_local_source(first, source_format, mbox_format, lock_wait)
                opened.append(src)
            if second is None:
                if _is_url(first):
                    raise UsageError("verify with one argument checks an archive; give "
                                     "SOURCE and DEST to compare two servers")
                counts, _ = folder_hashes(opened[0], opened[0].list_folders())
                total = sum(counts.values())
                if not as_json:
                    typer.echo(f"verify: {total} messages read, every sha256 matches")
                return Outcome(EXIT_OK, {"archive": first, "equal": True, "messages": total})
            if not _is_url(second):
                raise UsageError(f"verify compares with a server: {second!r} is not an "
                                 "imap[s]:// URL")
            dst_ca = dest_cafile or cafile
            ep2 = parse_endpoint(second, insecure=insecure, cafile=str(dst_ca) if dst_ca else None)
            # ARCHIVE URL: the URL is the only server, so it takes the plain options.
            password = (_dest_password(ep2, dest_creds, creds) if _is_url(first)
                        else creds.source(ep2))
            opened.append(ImapSource(ep2, password, timeout=timeout))
            result = compare(opened[0], opened[1],
                             _mapper_for(parse_rules(map_rules), prefix, special_use),
                             folder or (), exclude or ())
        finally:
            for store in opened:
                store.close()
        if not as_json:
            for line in render(result):
                if not quiet or not line.startswith("OK"):
                    typer.echo(line)
        differences = [f"{f.folder}: {f.missing_count} missing, {f.extra_count} extra"
                       for f in result.folders if not f.equal]
        return Outcome(EXIT_OK if result.equal else EXIT_PARTIAL,
                       {"first": first, "second": second, **result.as_dict()}, differences)

    run_guarded(body, command="verify", as_json=as_json, log_file=log_file)
