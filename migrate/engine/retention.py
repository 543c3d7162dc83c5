"""What `drain` deletes from the POP3 server, and when.

Mail clients offer three settings; so do we:

* keep everything on the server (the default);
* ``--delete``: delete each message once it is durably archived;
* ``--delete-older-than DAYS``: "leave on server for N days", i.e. delete
  only messages that were archived at least DAYS ago (per
  :func:`migrate.clock.now`, which tests move with ``MAILMIGRATE_NOW``).

Why this runs *after* :func:`migrate.engine.transfer` and asks the archive
rather than trusting what the engine fetched: the archive's
``archived_at()`` only returns rows that are committed, and both archives
commit durably (SQLite ``synchronous=FULL`` in WAL; the mbox tree fsyncs its
frames before the index commit). So a message is DELEd only if its UIDL is
in a committed archive row -- after a crash, after a connection drop, after
a run that archived it weeks ago -- and never because a download merely
happened. Message numbers are per session, so DELE only ever uses numbers of
this session's listing. Deletion takes effect at QUIT: if the connection
dies before the server confirms QUIT, the server keeps everything, and the
next run deletes those messages without downloading them again (their
UIDLs are archived, so ``missing()`` skips them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from migrate import clock
from migrate.errors import UsageError
from migrate.stores.base import RetentionIndex
from migrate.stores.pop3 import INBOX, Listed, Pop3Source


@dataclass(frozen=True)
class RetentionPolicy:
    """``delete_all`` (--delete) or ``older_than_days`` (--delete-older-than), or neither."""

    delete_all: bool = False
    older_than_days: int | None = None

    @classmethod
    def from_options(cls, delete: bool, older_than_days: int | None) -> RetentionPolicy:
        if delete and older_than_days is not None:
            raise UsageError("give either --delete or --delete-older-than DAYS, not both "
                             "(--delete-older-than 0 is the same as --delete)")
        if older_than_days is not None and older_than_days < 0:
            raise UsageError(f"bad --delete-older-than {older_than_days}: DAYS must be 0 or more")
        return cls(delete_all=delete, older_than_days=older_than_days)

    @property
    def deletes(self) -> bool:
        return self.delete_all or self.older_than_days is not None

    def eligible(self, archived_at: datetime, now: datetime) -> bool:
        """May a message archived at ``archived_at`` leave the server at ``now``?"""
        if self.delete_all:
            return True
        if self.older_than_days is None:
            return False
        return now - archived_at >= timedelta(days=self.older_than_days)


@dataclass
class RetentionOutcome:
    planned: int = 0  # messages chosen for deletion (what --dry-run reports)
    deleted: int = 0  # confirmed gone: DELEd and QUIT answered +OK
    kept: int = 0  # left on the server (not archived, too young, or not asked)
    quit_confirmed: bool = False
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"delete_planned": self.planned, "deleted": self.deleted,
                "left_on_server": self.kept, "quit_confirmed": self.quit_confirmed}


def plan(listing: Sequence[Listed], archived: Mapping[str, datetime], policy: RetentionPolicy,
         now: datetime, duplicates: frozenset[str] | set[str] = frozenset()) -> list[Listed]:
    """The messages of this listing to DELE: archived, eligible, and unambiguous.

    A key that occurs twice in one listing (identical fingerprints, or a
    server bug) is never deleted: the archive holds one message under it and
    we cannot tell which of the two that is.
    """
    if not policy.deletes:
        return []
    out: list[Listed] = []
    for item in listing:
        when = archived.get(item.key)
        if when is None or item.key in duplicates:
            continue
        if policy.eligible(when, now):
            out.append(item)
    return out


def archived_keys(dest: object, keys: Sequence[str]) -> dict[str, datetime]:
    """{key: archived at} from an archive; {} from a destination that holds nothing."""
    if isinstance(dest, RetentionIndex):
        return dest.archived_at(INBOX, keys)
    return {}


def apply(source: Pop3Source, dest: object, policy: RetentionPolicy, *, dry_run: bool = False,
          would_archive: Sequence[str] = ()) -> RetentionOutcome:
    """Decide, DELE and QUIT. Call after ``transfer()`` returned (everything committed).

    In a dry run nothing is sent; ``would_archive`` (the keys the dry run
    would have downloaded) count as archived "now", so the plan shows what a
    real run would delete.
    """
    listing = source.listing()
    keys = [item.key for item in listing]
    archived = archived_keys(dest, keys)
    now = clock.now()
    if dry_run:
        for key in would_archive:
            archived.setdefault(key, now)
    chosen = plan(listing, archived, policy, now, source.duplicate_keys)
    out = RetentionOutcome(planned=len(chosen), kept=len(listing) - len(chosen))
    if policy.deletes and source.duplicate_keys:
        out.warnings.append(
            f"{len(source.duplicate_keys)} keys occur more than once on the server; "
            "those messages are archived once and left on the server")
    if dry_run or not chosen:
        return out
    if source.broken:
        out.warnings.append("the POP3 session went out of step; nothing was deleted "
                            "(the next run deletes what is archived)")
        out.kept = len(listing)
        return out
    marked = source.delete([item.number for item in chosen])
    out.quit_confirmed = source.quit()
    out.deleted = marked if out.quit_confirmed else 0
    out.kept = len(listing) - out.deleted
    return out


__all__ = ["RetentionOutcome", "RetentionPolicy", "apply", "archived_keys", "plan"]
