"""The viewer as a Starlette application: pages, their JSON twins, downloads, guards.

Starlette was chosen over Flask because it is small (one dependency, anyio),
runs under uvicorn, a production server with graceful shutdown (Flask's own
server is for development), and has a test client; Jinja2 renders the pages
with autoescaping on, so no header of a hostile mail becomes markup.

Guards, all in this module:

- read-only: the catalog opens the archive read-only (SQLite ``mode=ro``);
  only GET is routed, apart from the token form; catalog calls are
  serialised by a lock (one SQLite connection; WAL lets a backup write
  meanwhile);
- ``Host`` must be the address served (on loopback: 127.0.0.1, localhost,
  ::1), so a web page elsewhere cannot reach the viewer by DNS rebinding;
- with an access token (required off loopback), every request needs a
  session cookie, got by posting the token to ``/login``, or an
  ``Authorization: Bearer`` header; the token is never in a URL, so no
  access log line carries it;
- every response forbids scripts and remote loads (:data:`PAGE_CSP`), and
  mail HTML is sanitised and sandboxed (:mod:`migrate.web.sanitize`).
"""

from __future__ import annotations

import hmac
import secrets
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from migrate.archive.catalog import Catalog
from migrate.errors import MailmigrateError, UsageError
from migrate.formats.reading import Reading
from migrate.web import sanitize, views

HERE = Path(__file__).resolve().parent
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SESSION_COOKIE = "mailmigrate_session"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
OPEN_PATHS = ("/login", "/static/")


_R = TypeVar("_R", bound=Response)


def _secure_headers(response: _R, csp: str = PAGE_CSP) -> _R:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


class SecureHeaders:
    """The page policy on every response that set none of its own (static files too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (("Content-Security-Policy", PAGE_CSP),
                                    ("X-Content-Type-Options", "nosniff"),
                                    ("Referrer-Policy", "no-referrer"),
                                    ("Cache-Control", "no-store")):
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


class TokenGuard:
    """Lets a request through with a valid session cookie or bearer token, else asks."""

    def __init__(self, app: ASGIApp, token: str | None, sessions: set[str]) -> None:
        self.app = app
        self.token = token
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or self._allowed(Request(scope)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response: Response
        if request.url.path.startswith("/api/"):
            response = JSONResponse({"error": "access token required (Authorization: Bearer)"},
                                    status_code=401)
        else:
            response = RedirectResponse("/login", status_code=303)
        await _secure_headers(response)(scope, receive, send)

    def _allowed(self, request: Request) -> bool:
        if request.url.path.startswith(OPEN_PATHS):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and any(hmac.compare_digest(cookie, s) for s in list(self.sessions)):
            return True
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        return (scheme.lower() == "bearer" and self.token is not None
                and hmac.compare_digest(given.strip().encode(), self.token.encode()))


class Viewer:
    """The routes' state: the catalog (behind a lock), the templates, the token."""

    def __init__(self, catalog: Catalog, token: str | None) -> None:
        self.catalog = catalog
        self.token = token
        self.sessions: set[str] = set()
        self.lock = threading.Lock()
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True))

    def read(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            return fn()

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(archive=self.catalog.path,
                                                        searchable=self.catalog.searchable,
                                                        **context)
        return _secure_headers(HTMLResponse(html, status_code=status))


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items()}


def _page(viewer: Viewer, template: str,
          build: Callable[[Request], dict[str, Any]]) -> tuple[Route, Route]:
    """A page and its JSON twin under /api, from one data function."""

    def data(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        try:
            return viewer.read(lambda: build(request)), None
        except LookupError as exc:
            return None, _error(viewer, request, str(exc).strip("'\""), 404)
        except MailmigrateError as exc:
            return None, _error(viewer, request, str(exc), 400)
        except Exception as exc:  # one line, never a traceback (see _failed)
            return None, _failed(viewer, request, exc)

    def html(request: Request) -> Response:
        payload, error = data(request)
        if error is not None:
            return error
        twin = views.json_twin(request.url.path, request.url.query)
        nav = viewer.read(lambda: views.folders_page(viewer.catalog))["folders"]
        current = (payload or {}).get("folder")
        return viewer.render(template, page=payload, json_url=twin, nav=nav,
                             current_folder=current)

    def api(request: Request) -> Response:
        payload, error = data(request)
        if error is not None:
            return error
        return _secure_headers(JSONResponse(payload))

    path = {"folders.html": "/", "folder.html": "/folder", "search.html": "/search",
            "message.html": "/message/{ident}"}[template]
    api_path = "/api/folders" if path == "/" else "/api" + path
    return Route(path, html, methods=["GET"]), Route(api_path, api, methods=["GET"])


def _error(viewer: Viewer, request: Request, text: str, status: int) -> Response:
    if request.url.path.startswith("/api/"):
        return _secure_headers(JSONResponse({"error": text}, status_code=status))
    return viewer.render("error.html", status=status, message=text)


def _failed(viewer: Viewer, request: Request, exc: Exception) -> Response:
    """Anything unforeseen: a one-line error page and log line, not a traceback."""
    text = f"cannot show {request.url.path}: {type(exc).__name__}: {exc}"
    print(f"mailmigrate: {text}", file=sys.stderr, flush=True)
    return _error(viewer, request, text, 500)


def _message_bytes(viewer: Viewer, ident: str) -> tuple[int, bytes]:
    from migrate.archive.browse import parse_id

    number = parse_id(ident)
    with viewer.lock:
        try:
            _, msg = viewer.catalog.message(number)
        except UsageError as exc:
            raise LookupError(str(exc)) from None
    return number, msg.raw


def create_app(catalog: Catalog, token: str | None = None,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The viewer for ``catalog``; ``token`` guards every page when given."""
    viewer = Viewer(catalog, token)

    def folders(request: Request) -> dict[str, Any]:
        return views.folders_page(catalog)

    def folder(request: Request) -> dict[str, Any]:
        return views.folder_page(catalog, request.query_params.get("name"),
                                 request.query_params.get("page"))

    def search(request: Request) -> dict[str, Any]:
        return views.search_page(catalog, _params(request))

    def message(request: Request) -> dict[str, Any]:
        return views.message_page(catalog, request.path_params["ident"])

    def guarded(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return fn(request)
            except LookupError as exc:
                return _error(viewer, request, str(exc).strip("'\""), 404)
            except MailmigrateError as exc:
                return _error(viewer, request, str(exc), 400)
            except Exception as exc:
                return _failed(viewer, request, exc)
        return run

    @guarded
    def body(request: Request) -> Response:
        """The sanitised HTML body, the iframe's document (sandboxed by its CSP too)."""
        number, raw = _message_bytes(viewer, request.path_params["ident"])
        reading = Reading(raw)
        markup = reading.html() or ""
        cids = {a.content_id: a.number for a in reading.attachments() if a.content_id}

        def cid_url(cid: str) -> str | None:
            part = cids.get(cid.strip("<>"))
            return f"/message/{number}/part/{part}" if part is not None else None

        images = request.query_params.get("images") == "1"
        safe = sanitize.sanitize(markup, cid_url, images=images)
        subject = reading.header("Subject") or ""
        return _secure_headers(HTMLResponse(sanitize.document(safe, subject)),
                               sanitize.body_csp(images))

    @guarded
    def part(request: Request) -> Response:
        number, raw = _message_bytes(viewer, request.path_params["ident"])
        index = request.path_params["number"]
        found = Reading(raw).attachment(int(index)) if index.isdigit() else None
        if found is None:
            raise LookupError(f"message {number} has no attachment {index}")
        item, data = found
        name = views.attachment_name(item.filename, number, item.number)
        # Only plain raster images show inline (for cid: references); everything else
        # downloads, as opaque bytes, so no attachment is ever rendered by the browser.
        inline = item.content_type in ("image/png", "image/jpeg", "image/gif", "image/webp")
        response = Response(data, media_type=item.content_type if inline
                            else "application/octet-stream")
        response.headers["Content-Disposition"] = views.content_disposition(
            "inline" if inline else "attachment", name)
        return _secure_headers(response, "default-src 'none'; sandbox")

    @guarded
    def raw(request: Request) -> Response:
        number, data = _message_bytes(viewer, request.path_params["ident"])
        response = Response(data, media_type="message/rfc822")
        response.headers["Content-Disposition"] = views.content_disposition(
            "attachment", f"{number}.eml")
        return _secure_headers(response, "default-src 'none'; sandbox")

    def login_form(request: Request) -> Response:
        return viewer.render("login.html", failed=False)

    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip()
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return viewer.render("login.html", status=403, failed=True)
        session = secrets.token_urlsafe(32)
        viewer.sessions.add(session)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return _secure_headers(response)

    routes: list[Route | Mount] = []
    for template, build in (("folders.html", folders), ("folder.html", folder),
                            ("search.html", search), ("message.html", message)):
        routes.extend(_page(viewer, template, build))
    routes += [
        Route("/message/{ident}/body", body, methods=["GET"]),
        Route("/message/{ident}/part/{number}", part, methods=["GET"]),
        Route("/message/{ident}/raw", raw, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecureHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS),
        Middleware(TokenGuard, token=token, sessions=viewer.sessions),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.viewer = viewer
    return app


__all__ = ["PAGE_CSP", "create_app"]
