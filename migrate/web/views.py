"""The data of every page: what the JSON twin returns and what the HTML page shows.

One function per page, each returning a plain dict, so the HTML and JSON
forms of a page cannot disagree (the template renders the same dict) and a
later change to the JSON shape is one place. IDs are ints, as ``search``
prints them.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from migrate.archive.browse import SearchQuery, parse_id
from migrate.archive.catalog import Catalog, Row
from migrate.errors import UsageError
from migrate.formats.reading import Reading

PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # past any archive; keeps OFFSET inside SQLite's integers
SEARCH_FIELDS = ("q", "from", "to", "subject", "since", "before", "folder", "fts")


def message_url(ident: int) -> str:
    return f"/message/{ident}"


def folder_url(name: str, page: int = 1) -> str:
    query = {"name": name} if page == 1 else {"name": name, "page": str(page)}
    return "/folder?" + urlencode(query)


def _row(row: Row) -> dict[str, Any]:
    out = row.as_dict()
    out["url"] = message_url(row.id)
    return out


def _page_number(value: str | None) -> int:
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise UsageError(f"page {value!r} is not a page number (1, 2, …)")
    return int(value)


def folders_page(catalog: Catalog) -> dict[str, Any]:
    """The folder tree with counts: every folder, its depth and last name part.

    A parent that is no folder of its own (the server never listed it) is
    shown as a tree node with no messages, so its children sit under it.
    """
    found = {entry.name: entry.as_dict() for entry in catalog.folders()}
    for name in list(found):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            found.setdefault(parent, {"name": parent, "messages": 0, "bytes": 0,
                                      "special_use": None, "node_only": True})
    entries = []
    for name in sorted(found, key=lambda n: [p.casefold() for p in n.split("/")]):
        item = found[name]
        item.setdefault("node_only", False)
        item.update(depth=name.count("/"), label=name.rsplit("/", 1)[-1],
                    url=folder_url(name))
        entries.append(item)
    return {"archive": catalog.path, "kind": catalog.kind, "searchable": catalog.searchable,
            "folders": entries, "messages": sum(e["messages"] for e in entries)}


def folder_page(catalog: Catalog, name: str | None, page: str | None) -> dict[str, Any]:
    if not name:
        raise UsageError("which folder? add ?name=FOLDER (the names on the start page)")
    number = _page_number(page)
    known = {f["name"] for f in folders_page(catalog)["folders"]}
    if name not in known:
        raise LookupError(f"no folder {name!r} in this archive")
    rows, total = catalog.page(name, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    return {"folder": name, "page": number, "pages": pages, "total": total,
            "messages": [_row(r) for r in rows],
            "prev": folder_url(name, number - 1) if number > 1 else None,
            "next": folder_url(name, number + 1) if number < pages else None}


def _day(value: str | None, what: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a day; write YYYY-MM-DD") from None


def search_query(params: dict[str, str]) -> SearchQuery:
    """The search form's fields as the query ``mailmigrate search`` would run."""
    folder = params.get("folder") or ""
    return SearchQuery(text=params.get("q", ""), from_addr=params.get("from") or None,
                       to_addr=params.get("to") or None, subject=params.get("subject") or None,
                       since=_day(params.get("since"), "since"),
                       before=_day(params.get("before"), "before"),
                       folders=(folder,) if folder else (),
                       raw_fts=params.get("fts") in ("1", "on", "true"))


def search_page(catalog: Catalog, params: dict[str, str]) -> dict[str, Any]:
    form = {k: params.get(k, "") for k in SEARCH_FIELDS}
    out: dict[str, Any] = {"searchable": catalog.searchable, "form": form, "messages": [],
                           "page": 1, "prev": None, "next": None}
    if not catalog.searchable:
        out["notice"] = ("Searching needs a SQLite archive (it has the full-text index); "
                         "this is an mbox tree.")
        return out
    query = search_query(params)
    if not query.needs_index() and not (query.since or query.before or query.folders):
        return out
    number = _page_number(params.get("page"))
    rows, more = catalog.search(query, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    kept = {k: v for k, v in form.items() if v}
    out.update(page=number, messages=[_row(r) for r in rows],
               prev=("/search?" + urlencode({**kept, "page": number - 1})) if number > 1 else None,
               next=("/search?" + urlencode({**kept, "page": number + 1})) if more else None)
    return out


def message_page(catalog: Catalog, ident: str) -> dict[str, Any]:
    number = parse_id(ident)
    try:
        folder, msg = catalog.message(number)
    except UsageError as exc:
        raise LookupError(str(exc)) from None
    reading = Reading(msg.raw)
    has_html = reading.html() is not None
    base = message_url(number)
    attachments = []
    for item in reading.attachments():
        entry = item.as_dict()
        entry["url"] = f"{base}/part/{item.number}"
        attachments.append(entry)
    return {"id": number, "folder": folder.name, "folder_url": folder_url(folder.name),
            "flags": list(msg.flags),
            "received": msg.internaldate.isoformat() if msg.internaldate else None,
            "size": msg.size, "headers": reading.headers(), "text": reading.text(),
            "html": has_html, "attachments": attachments,
            "raw_url": f"{base}/raw", "body_url": f"{base}/body" if has_html else None}


def json_twin(path: str, query: str) -> str:
    """The JSON twin's URL of the page at ``path``."""
    return "/api" + (path if path != "/" else "/folders") + (f"?{query}" if query else "")


def attachment_name(filename: str | None, ident: int, number: int) -> str:
    return filename or f"message-{ident}-part-{number}.bin"


def content_disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name (RFC 8187)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_"
                       for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


__all__ = ["PAGE_SIZE", "attachment_name", "content_disposition", "folder_page", "folders_page",
           "json_twin", "message_page", "search_page", "search_query"]
