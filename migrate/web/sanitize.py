"""A mail's HTML, made safe to show: hostile content, treated as such.

Two layers, each enough alone for what it covers:

1. nh3 (the Rust sanitiser ammonia on html5ever) keeps an allowlist of
   tags and attributes: no script, no style element, no form, no meta
   refresh, no iframe, object or embed, no event handler, no ``srcset``;
   ``style`` attributes keep only layout and colour properties, so no
   ``url()`` survives. Remote image sources are removed unless the reader
   asked for images; ``cid:`` references become links to the message's own
   parts, so inline images show without anything remote.
2. The viewer serves the result in a sandboxed iframe under a
   Content-Security-Policy that forbids scripts, forms and every remote
   load but images-on-request (:data:`BODY_CSP`), so a sanitiser bug still
   runs nothing and fetches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

import nh3

TAGS = set(nh3.ALLOWED_TAGS) | {"font", "center", "tfoot"}
ATTRIBUTES: dict[str, set[str]] = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
ATTRIBUTES["*"] = {"style", "title", "lang", "dir", "align", "valign", "width", "height"}
ATTRIBUTES["font"] = {"color", "face", "size"}
ATTRIBUTES["table"] = ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing",
                                                        "bgcolor"}
ATTRIBUTES["td"] = ATTRIBUTES.get("td", set()) | {"bgcolor", "nowrap"}
ATTRIBUTES["img"] = {"src", "alt", "width", "height", "align", "border"}
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-transform", "line-height",
    "letter-spacing", "white-space", "vertical-align", "width", "max-width", "min-width",
    "height", "max-height", "margin", "margin-top", "margin-bottom", "margin-left",
    "margin-right", "padding", "padding-top", "padding-bottom", "padding-left",
    "padding-right", "border", "border-top", "border-bottom", "border-left", "border-right",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "display", "list-style-type", "direction",
}
HIDDEN = {"script", "style", "title", "template", "noscript", "textarea", "select", "object",
          "iframe", "svg", "math", "head"}
URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}

# The sandboxed body's policy: no script, no form, nothing from elsewhere but what
# IMAGES adds. 'self' lets inline (cid:) images come from the viewer itself.
BODY_CSP = ("default-src 'none'; img-src 'self' data:{images}; style-src 'unsafe-inline'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox")
IMAGES = " http: https:"


def body_csp(images: bool) -> str:
    return BODY_CSP.format(images=IMAGES if images else "")


def _filter(cid_url: Callable[[str], str | None], images: bool
            ) -> Callable[[str, str, str], str | None]:
    def keep(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                return cid_url(value.strip()[4:])
            if lowered.startswith("data:image/") and not lowered.startswith("data:image/svg"):
                return value
            if lowered.startswith(("http:", "https:")) and images:
                return value
            return None  # remote (until asked for) or anything else: no request at all
        return value

    return keep


def sanitize(markup: str, cid_url: Callable[[str], str | None], images: bool = False) -> str:
    """``markup`` with everything that could run or load removed (see the module doc)."""
    return nh3.clean(markup, tags=TAGS, clean_content_tags=HIDDEN, attributes=ATTRIBUTES,
                     attribute_filter=_filter(cid_url, images), strip_comments=True,
                     link_rel="noopener noreferrer nofollow", url_schemes=URL_SCHEMES,
                     filter_style_properties=STYLE_PROPERTIES)


def document(body: str, title: str) -> str:
    """The sanitised body as the iframe's whole document."""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title></head><body>{body}</body></html>")


__all__ = ["BODY_CSP", "body_csp", "document", "sanitize"]
