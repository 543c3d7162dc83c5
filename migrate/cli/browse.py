"""``search``, ``show`` and ``export``: browsing an archive, for the restore use case.

search and show only read (:mod:`migrate.archive.browse`); export is a transfer from
the archive to an export destination (:mod:`migrate.stores.export_stores`) on
the one engine, so it streams in bounded batches and a re-run resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from migrate.archive.browse import (
    FilteredArchiveSource,
    Hit,
    SearchQuery,
    describe,
    find_message,
    matching_ids,
    parse_id,
    render_shown,
    require_sqlite,
    search,
)
from migrate.archive.open import export_format, open_archive, open_export_destination, strip_prefix
from migrate.cli.common import (
    DryRunOpt,
    ExcludeOpt,
    FolderOpt,
    FormatOpt,
    JsonOpt,
    LockWaitOpt,
    LogFileOpt,
    Outcome,
    QuietOpt,
    app,
    make_reporter,
    parse_since,
    run_guarded,
    transfer_outcome,
)
from migrate.engine.progress import human_bytes
from migrate.engine.transfer import TransferOptions, transfer
from migrate.errors import EXIT_OK, UsageError
from migrate.stores.base import KeyedArchiveReader, SourceStore

FromOpt = Annotated[str | None, typer.Option(
    "--from", metavar="TEXT", help="Only messages whose From contains TEXT.")]
ToOpt = Annotated[str | None, typer.Option(
    "--to", metavar="TEXT", help="Only messages whose To or Cc contains TEXT.")]
SubjectOpt = Annotated[str | None, typer.Option(
    "--subject", metavar="TEXT", help="Only messages whose Subject contains TEXT.")]
SinceDayOpt = Annotated[str | None, typer.Option(
    "--since", metavar="YYYY-MM-DD", help="Only messages received on or after this day.")]
BeforeOpt = Annotated[str | None, typer.Option(
    "--before", metavar="YYYY-MM-DD", help="Only messages received before this day.")]
FtsOpt = Annotated[bool, typer.Option(
    "--fts", help="Take the query as FTS5 syntax (OR, NEAR, subject:word, prefix*).")]


def _query(text: str, from_addr: str | None, to_addr: str | None, subject: str | None,
           since: str | None, before: str | None, folder: list[str] | None,
           exclude: list[str] | None, fts: bool) -> SearchQuery:
    before_day = parse_since(before, "--before") if before else None
    return SearchQuery(text=text, from_addr=from_addr, to_addr=to_addr, subject=subject,
                       since=parse_since(since), before=before_day, folders=folder or (),
                       exclude=exclude or (), raw_fts=fts)


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def search_payload(archive: str, query: str, hits: list[Hit], more: bool) -> dict[str, Any]:
    """``search --json``'s own fields, inside the common envelope (IDs are ints, as show
    and export take them)."""
    return {"archive": archive, "query": query, "count": len(hits),
            "truncated": more, "results": [h.as_dict() for h in hits]}


@app.command("search")
def search_cmd(
    archive: Annotated[str, typer.Argument(help="A SQLite archive (it has the full-text index).")],
    query: Annotated[str, typer.Argument(
        help="Words that must all occur (subject, addresses, body); '' for filters only.")] = "",
    from_addr: FromOpt = None,
    to_addr: ToOpt = None,
    subject: SubjectOpt = None,
    since: SinceDayOpt = None,
    before: BeforeOpt = None,
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    fts: FtsOpt = False,
    limit: Annotated[int, typer.Option(help="Show at most this many (0: all).")] = 50,
    as_json: JsonOpt = False,
    archive_format: FormatOpt = None,
    log_file: LogFileOpt = None,
) -> None:
    """Find messages in a SQLite archive; prints IDs for `show` and `export --id`."""

    def body() -> int | Outcome:
        q = _query(query, from_addr, to_addr, subject, since, before, folder, exclude, fts)
        if limit < 0:
            raise UsageError("--limit must be 0 (all) or more")
        store = open_archive(archive, archive_format, readonly=True)
        try:
            sqlite = require_sqlite(store, archive)
            # One more than asked for tells whether there are more.
            hits = list(search(sqlite, q, limit + 1 if limit else None))
        finally:
            store.close()
        more = bool(limit) and len(hits) > limit
        hits = hits[:limit] if limit else hits
        if as_json:
            return Outcome(EXIT_OK, search_payload(archive, query, hits, more))
        for h in hits:
            day = (h.internaldate or h.date or "")[:10]
            typer.echo(f"{h.id:>7}  {day:<10}  {_short(h.folder, 20):<20}  "
                       f"{_short(h.from_addr, 30):<30}  {_short(h.subject, 60)}")
        if more:
            typer.echo(f"mailmigrate: more than {limit} matches; narrow the search or use "
                       "--limit 0", err=True)
        elif not hits:
            typer.echo("mailmigrate: no messages match", err=True)
        return EXIT_OK

    run_guarded(body, command="search", as_json=as_json, log_file=log_file)


@app.command("show")
def show_cmd(
    archive: Annotated[str, typer.Argument(help="A SQLite archive or an mbox tree.")],
    message_id: Annotated[str, typer.Argument(metavar="ID", help="An ID printed by `search`.")],
    raw: Annotated[bool, typer.Option(
        "--raw", help="Write the message's bytes to stdout exactly as archived.")] = False,
    as_json: JsonOpt = False,
    archive_format: FormatOpt = None,
    log_file: LogFileOpt = None,
) -> None:
    """Show one message: headers, text body and the list of attachments."""

    def body() -> int | Outcome:
        store = open_archive(archive, archive_format, readonly=True)
        try:
            folder, msg = find_message(store, message_id)
        finally:
            store.close()
        if raw:
            sys.stdout.buffer.write(msg.raw)
            sys.stdout.buffer.flush()
            return EXIT_OK
        shown = describe(parse_id(message_id), folder, msg)
        if as_json:
            return Outcome(EXIT_OK, {"archive": archive, **shown.as_dict()})
        typer.echo(render_shown(shown))
        return EXIT_OK

    run_guarded(body, command="show", as_json=as_json and not raw, log_file=log_file)


@app.command("export")
def export_cmd(
    archive: Annotated[str, typer.Argument(help="archive.sqlite or an mbox-tree directory.")],
    dest: Annotated[str, typer.Argument(
        help="eml:DIR (.eml files per folder), FILE.mbox (one mboxrd file) or maildir:DIR.")],
    query: Annotated[str, typer.Option(
        "--query", metavar="WORDS", help="Only messages `search` finds for WORDS (SQLite).")] = "",
    from_addr: FromOpt = None,
    to_addr: ToOpt = None,
    subject: SubjectOpt = None,
    since: SinceDayOpt = None,
    before: BeforeOpt = None,
    folder: FolderOpt = None,
    exclude: ExcludeOpt = None,
    ids: Annotated[list[str] | None, typer.Option(
        "--id", metavar="ID", help="Only this message (an ID from `search`; repeatable).")] = None,
    fts: FtsOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    archive_format: FormatOpt = None,
    dest_format: Annotated[str | None, typer.Option(
        "--dest-format", help="eml, mbox or maildir (default: from DEST).")] = None,
    mbox_format: Annotated[str, typer.Option(
        "--mbox-format", help="When ARCHIVE is one .mbox file: auto, mboxo, mboxrd or mboxcl2.")
    ] = "auto",
    lock_wait: LockWaitOpt = 5.0,
    log_file: LogFileOpt = None,
) -> None:
    """Export messages to .eml files, one .mbox file or a Maildir, by folder and search filters."""

    def body() -> Outcome:
        q = _query(query, from_addr, to_addr, subject, since, before, folder, exclude, fts)
        kind = export_format(dest, dest_format)
        identity = f"archive:{Path(strip_prefix(archive)).expanduser().resolve()}"
        source: SourceStore
        foreign = archive_format is None and archive.lower().endswith(".mbox")
        if foreign:
            # A single mbox file (ours, Thunderbird's, a Takeout) converts too; it has
            # neither IDs nor an index, so only folder and --since filters apply.
            from migrate.stores.foreign_mbox import ForeignMbox

            if q.needs_index() or ids or q.before:
                raise UsageError(f"{archive!r} is a single mbox file: export it by --folder "
                                 "and --since only (search, --id and --before need an archive)")
            store: Any = ForeignMbox(Path(archive).expanduser(), mbox_format)
            source = store
        else:
            store = open_archive(archive, archive_format, readonly=True, lock_wait=lock_wait)
        try:
            if not foreign:
                if not isinstance(store, KeyedArchiveReader):
                    raise UsageError(f"{archive!r} cannot be exported from")
                keys: set[str] | None = None
                if q.needs_index():
                    keys = {str(i) for i in matching_ids(require_sqlite(store, archive), q)}
                if ids:
                    wanted = {str(parse_id(i)) for i in ids}
                    for wanted_id in sorted(wanted):
                        # an ID that names no message is "not found", as for `show` (exit 2),
                        # said before anything is written
                        find_message(store, wanted_id)
                    keys = wanted if keys is None else keys & wanted
                source = FilteredArchiveSource(store, identity, keys=keys, before=q.before)
            target = open_export_destination(dest, identity, dest_format, dry_run=dry_run)
            try:
                options = TransferOptions(include=folder or (), exclude=exclude or (),
                                          since=q.since, dry_run=dry_run)
                result = transfer(source, target, options, make_reporter(quiet, as_json))
                if not dry_run:
                    target.finish()
            finally:
                target.close()
        finally:
            store.close()
        if not as_json and not quiet:
            verb = "would export" if dry_run else "exported"
            typer.echo(f"{verb} {result.new_messages} messages "
                       f"({human_bytes(result.new_bytes)}) to {dest}")
        return transfer_outcome(result, {"archive": archive, "destination": dest, "format": kind})

    run_guarded(body, command="export", as_json=as_json, log_file=log_file)
