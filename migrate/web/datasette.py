"""Datasette as an alternative viewer: the metadata that makes an archive readable there.

Datasette (``pip install 'mailmigrate[datasette]'``) browses any SQLite
file; this metadata labels the archive's tables and columns, opens on the
``mail`` view (one row per message per folder, with the ID ``search``
prints), hides what is only for the program (the raw message blobs, the
placement and meta tables), and turns on the full-text search box for the
view (``fts_table``/``fts_pk``: the index's rowid is ``message_id``).
Datasette opens the file read-only (``mode=ro``).
"""

from __future__ import annotations

from typing import Any

MAIL_COLUMNS = {
    "id": "The message's ID in this folder: what `mailmigrate search` prints and `show`, "
          "`export --id` and `mailmigrate serve` take",
    "folder": "Folder, '/' between levels",
    "date": "The Date header (ISO-8601)",
    "from": "From, decoded as a mail client shows it",
    "to": "To and Cc, decoded",
    "subject": "Subject, decoded",
    "size": "Size of the raw message in bytes",
    "flags": "IMAP flags and keywords (\\Seen, \\Flagged, $Forwarded, …)",
    "attachments": "Number of attached files",
    "received": "INTERNALDATE: when the server received it",
    "msgid": "The Message-ID header",
    "account": "The account (user@host) it was backed up from",
    "message_id": "The stored message (messages.id; one per content, shared by folders)",
    "labels": "Gmail: the message's labels (X-GM-LABELS, a JSON array); empty elsewhere",
    "thread": "Gmail: the message's thread (X-GM-THRID)",
}


def metadata(database: str) -> dict[str, Any]:
    """Datasette metadata for the archive served as database ``database`` (its file stem)."""
    return {
        "title": "mailmigrate archive",
        "description": "A mail archive written by mailmigrate (read-only). Start with the "
                       "mail view; its search box searches subject, addresses and text.",
        "databases": {database: {"tables": {
            "mail": {
                "title": "Mail",
                "description": "One row per message per folder.",
                "fts_table": "messages_fts",
                "fts_pk": "message_id",
                "sort_desc": "received",
                "facets": ["folder"],
                "label_column": "subject",
                "columns": MAIL_COLUMNS,
            },
            "folders": {
                "description": "The archived folders and the server state of each.",
                "label_column": "name",
                "columns": {"name": "Folder, '/' between levels",
                            "special_use": "RFC 6154 role (\\Sent, \\Drafts, …)",
                            "uidvalidity": "The server's UIDVALIDITY",
                            "partial": "1 after a --since pass"},
            },
            # The raw bytes (a blob per message) and the program's own bookkeeping.
            "messages": {"hidden": True},
            "folder_messages": {"hidden": True},
            "meta": {"hidden": True},
        }}},
    }


__all__ = ["MAIL_COLUMNS", "metadata"]
