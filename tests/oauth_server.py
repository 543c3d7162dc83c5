"""A tiny OAuth2 token-introspection endpoint (RFC 7662) on loopback, for Dovecot's oauth2 passdb.

Dovecot POSTs ``token=…`` (``introspection_mode = post``); we answer
``{"active": true, "username": …}`` for a known, unexpired token and
``{"active": false}`` otherwise. Tests add tokens, expire them, and read
``requests`` to see which tokens Dovecot asked about.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class IntrospectionServer:
    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}  # token -> user name
        self.requests: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                with owner._lock:
                    owner.requests.append(token)
                    user = owner.tokens.get(token)
                body = json.dumps({"active": True, "username": user} if user else {"active": False})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/introspect"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def grant(self, token: str, user: str) -> None:
        with self._lock:
            self.tokens[token] = user

    def expire(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def __enter__(self) -> IntrospectionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
