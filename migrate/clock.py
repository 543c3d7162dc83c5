"""The one place that asks what time it is.

Retention (``drain --delete-older-than``) compares "now" with when a message
was archived; tests move time forward by setting ``MAILMIGRATE_NOW`` to an
ISO-8601 instant, in-process or for a CLI subprocess alike.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

NOW_ENV = "MAILMIGRATE_NOW"


def now() -> datetime:
    """Current time, timezone-aware (UTC), or the instant in $MAILMIGRATE_NOW."""
    fixed = os.environ.get(NOW_ENV)
    if fixed:
        stamp = datetime.fromisoformat(fixed)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return datetime.now(UTC)
