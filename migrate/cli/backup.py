"""``backup`` and ``ls``: an IMAP account into an archive, and what an archive holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from migrate.archive.open import open_archive
from migrate.cli.common import (
    CafileOpt,
    DryRunOpt,
    ExcludeOpt,
    FolderOpt,
    FormatOpt,
    InsecureOpt,
    JsonOpt,
    LockWaitOpt,
    LogFileOpt,
    LoginOptions,
    MaxBytesOpt,
    MaxConnectionsOpt,
    MaxTimeOpt,
    OAuth2Opt,
    Outcome,
    PassCmdOpt,
    PassEnvOpt,
    PassFileOpt,
    ProviderOpt,
    QuietOpt,
    RateOpt,
    RetriesOpt,
    RetryDelayOpt,
    SinceOpt,
    TimeoutOpt,
    announce,
    app,
    budget,
    check_archive_path,
    make_reporter,
    parse_since,
    retry_policy,
    run_guarded,
    transfer_outcome,
)
from migrate.config.endpoints import parse_endpoint
from migrate.engine.progress import human_bytes
from migrate.engine.transfer import TransferOptions, transfer
from migrate.errors import EXIT_OK


# -- commands ---------------------------------------------------------------------
@app.command()
def backup(
    source: Annotated[str, typer.Argument(help="imaps://user@host[:port] or imap://... (STARTTLS).")],
    archive: Annotated[str, typer.Argument(help="archive.sqlite, or a directory for an mbox tree.")],
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    since: SinceOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    password_env: PassEnvOpt = None,
    password_file: PassFileOpt = None,
    password_command: PassCmdOpt = None,
    oauth2_token_command: OAuth2Opt = None,
    provider: ProviderOpt = None,
    insecure: InsecureOpt = False,
    cafile: CafileOpt = None,
    archive_format: FormatOpt = None,
    timeout: TimeoutOpt = 60.0,
    lock_wait: LockWaitOpt = 5.0,
    retries: RetriesOpt = 5,
    retry_delay: RetryDelayOpt = 1.0,
    rate: RateOpt = None,
    max_connections: MaxConnectionsOpt = None,
    max_time: MaxTimeOpt = None,
    max_bytes: MaxBytesOpt = None,
    log_file: LogFileOpt = None,
) -> None:
    """Mirror an IMAP account's folder tree into an archive; re-runs fetch only what is new."""

    def body() -> Outcome:
        from migrate.config import run_defaults
        from migrate.engine.ratelimit import limited, shared_pacer
        from migrate.engine.retry import RetryingSource, open_retrying
        from migrate.stores.base import SourceStore
        from migrate.stores.imap import ImapSource

        check_archive_path(archive, archive_format)
        endpoint = parse_endpoint(source, insecure=insecure,
                                  cafile=str(cafile) if cafile else None, provider=provider)
        reporter = make_reporter(quiet, as_json)
        run = run_defaults.resolve(endpoint, connections=max_connections, rate=rate,
                                   include=folder, exclude=exclude, warn=reporter.warn)
        announce(run.notes, quiet)
        options = TransferOptions(include=run.include, exclude=run.exclude,
                                  since=parse_since(since), dry_run=dry_run,
                                  connections=run.connections, budget=budget(max_time, max_bytes))
        pacer = shared_pacer(run.rate)
        policy = retry_policy(retries, retry_delay)
        account = f"{endpoint.user}@{endpoint.host}"
        password = LoginOptions(password_env, password_file, password_command,
                                oauth2_token_command).source(endpoint)

        if not password.is_oauth2:
            password.get()  # no password: said before any connection or file

        def open_source() -> SourceStore:
            return limited(RetryingSource(ImapSource(endpoint, password, timeout=timeout),
                                          policy, reporter), pacer)

        # Log in before the archive is opened: a run that cannot start (no
        # password, a refused login, no server) leaves no empty archive behind. The
        # first connection has the same retry budget as every later one.
        src = open_retrying(policy, reporter, f"connecting to {endpoint.host}", open_source)
        try:
            if dry_run and not Path(archive).expanduser().exists():
                from migrate.stores.empty import EmptyDestination

                dest: Any = EmptyDestination()
            else:
                dest = open_archive(archive, archive_format, account=account, readonly=dry_run,
                                    lock_wait=lock_wait)
            try:
                result = transfer(src, dest, options, reporter, open_source=open_source)
            finally:
                dest.close()
        finally:
            src.close()
        return transfer_outcome(result, {"source": endpoint.display(), "archive": archive})

    run_guarded(body, command="backup", as_json=as_json, log_file=log_file)


@app.command("ls")
def list_archive(
    archive: Annotated[str, typer.Argument(help="The archive to list.")],
    as_json: JsonOpt = False,
    archive_format: FormatOpt = None,
    log_file: LogFileOpt = None,
) -> None:
    """List an archive's folders with message counts and sizes."""

    def body() -> int | Outcome:
        store = open_archive(archive, archive_format, readonly=True)
        try:
            rows = store.folder_summary()
        finally:
            store.close()
        if as_json:
            return Outcome(EXIT_OK, {"archive": archive, "folders": [
                {"folder": f.name, "messages": n, "bytes": size, "special_use": f.special_use}
                for f, n, size in rows]})
        width = max((len(f.name) for f, _, _ in rows), default=6)
        for f, n, size in rows:
            special = f"  {f.special_use}" if f.special_use else ""
            typer.echo(f"{f.name:<{width}}  {n:>8}  {human_bytes(size):>10}{special}")
        total_n = sum(n for _, n, _ in rows)
        total_b = sum(s for _, _, s in rows)
        typer.echo(f"{'total':<{width}}  {total_n:>8}  {human_bytes(total_b):>10}")
        return EXIT_OK

    run_guarded(body, command="ls", as_json=as_json, log_file=log_file)
