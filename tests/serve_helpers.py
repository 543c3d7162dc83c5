"""The viewer's tests: a real `mailmigrate serve` process, a canary web server, test mail.

* :class:`ServeProcess` runs ``python -m migrate serve ARCHIVE --port 0`` and
  reads the URL it prints; it keeps the process's stderr (the access log), so
  a test can check what the logs hold.
* :class:`Canary` is an HTTP server on loopback that records every request:
  a hostile message points every remote reference at it, so any request the
  browser makes on the message's behalf is seen.
* :func:`seed_viewer_mail` puts the viewer's test messages on a Dovecot account.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cli_helpers import backup_args, run_cli
from seeding import append, bulk_append, create_folder, imap_login, seed_message

# A 1x1 PNG (real, so a browser decodes it).
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n% mailmigrate test attachment\n" + bytes(range(256)) * 4
DAY = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)


class Canary:
    """A loopback HTTP server that records every request made to it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                with canary._lock:
                    canary.requests.append(self.path)
                body = PIXEL if self.path.endswith(".png") else b"canary"
                self.send_response(200)
                self.send_header("Content-Type", "image/png" if body is PIXEL else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Canary:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.requests)


def hostile_html(c: str) -> bytes:
    """Every way HTML mail tries to run code or phone home, aimed at canary ``c``."""
    return f"""<html><head>
<meta http-equiv="refresh" content="0;url={c}/refresh">
<link rel="stylesheet" href="{c}/link.css"><link rel="prefetch" href="{c}/prefetch">
<style>@import url("{c}/import.css"); body {{ background: url("{c}/style-bg.png"); }}
@font-face {{ font-family: x; src: url("{c}/font.woff"); }}</style>
<script src="{c}/script.js"></script><base href="{c}/base/">
</head><body onload="fetch('{c}/onload')">
<script>document.title = 'pwned'; fetch('{c}/inline-script');
document.body.setAttribute('data-pwned', '1');</script>
<p id="marker">Hostile text marker</p>
<img src="{c}/img.png" onerror="fetch('{c}/onerror')" alt="remote image">
<img srcset="{c}/srcset.png 2x"><picture><source srcset="{c}/source.png"></picture>
<p style="background-image: url('{c}/inline-style.png'); color: #a00">styled</p>
<table background="{c}/table-bg.png"><tr><td>cell</td></tr></table>
<form action="{c}/form" method="post"><input name="q" value="x"><button>Send</button></form>
<iframe src="{c}/iframe"></iframe><object data="{c}/object"></object><embed src="{c}/embed">
<video poster="{c}/poster.png"><source src="{c}/video.mp4"></video><audio src="{c}/audio.mp3"></audio>
<svg><image href="{c}/svg.png"/></svg><input type="image" src="{c}/input.png">
<a href="{c}/link" ping="{c}/ping">a link</a>
</body></html>""".encode()


def messages(canary_url: str) -> dict[str, bytes]:
    report = (b"Message-ID: <report@serve.test>\r\nFrom: Bob <bob@example.org>\r\n"
              b"To: Carol <carol@example.net>\r\nSubject: Quarterly report\r\nMIME-Version: 1.0\r\n"
              b"Date: Mon, 04 Mar 2024 10:30:00 +0100\r\n"
              b"Content-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
              b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
              b"The quarterly numbers are attached.\r\n"
              b"--XYZ\r\nContent-Type: application/pdf\r\n"
              b"Content-Disposition: attachment; filename*=utf-8''Bericht%20M%C3%A4rz.pdf\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n"
              + base64.encodebytes(PDF).replace(b"\n", b"\r\n") + b"--XYZ--\r\n")
    koeln = ("Message-ID: <koeln@serve.test>\r\nFrom: Jürgen Müller <j@example.de>\r\n"
             "To: Empfänger <e@example.de>\r\nSubject: Grüße aus Köln\r\nMIME-Version: 1.0\r\n"
             "Date: Tue, 05 Mar 2024 08:00:00 +0100\r\n"
             "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
             "\r\nDas Straßenfest ist abgesagt.\r\n").encode("latin-1")
    newsletter = (b"Message-ID: <news@serve.test>\r\nFrom: News <news@example.com>\r\n"
                  b"To: me@example.org\r\nSubject: Newsletter with a logo\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: multipart/related; boundary=R\r\n\r\n--R\r\n"
                  b"Content-Type: text/html; charset=utf-8\r\n\r\n"
                  b"<html><body><h1>Spring news</h1><img src=\"cid:logo@serve.test\" alt=logo>"
                  b"<p style=\"color: #226\">Inline images come from the message itself.</p>"
                  b"</body></html>\r\n--R\r\nContent-Type: image/png\r\n"
                  b"Content-ID: <logo@serve.test>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.b64encode(PIXEL) + b"\r\n--R--\r\n")
    hostile = (b"Message-ID: <hostile@serve.test>\r\nFrom: Mallory <m@evil.example>\r\n"
               b"To: me@example.org\r\nSubject: Hostile HTML\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/html; charset=utf-8\r\n\r\n" + hostile_html(canary_url))
    return {"report": report, "koeln": koeln, "newsletter": newsletter, "hostile": hostile}


BULK = 60  # more than one page (50) of the list


def seed_viewer_mail(server: Any, user: Any, canary_url: str) -> dict[str, bytes]:
    mail = messages(canary_url)
    client = imap_login(server, user)
    try:
        for name in ("Work/2024", "Lists/Bulk"):
            create_folder(client, name, parents=True)
        append(client, "INBOX", mail["report"], ("\\Seen",), DAY)
        append(client, "INBOX", mail["koeln"], (), DAY)
        append(client, "INBOX", mail["hostile"], (), DAY)
        append(client, "Work/2024", mail["newsletter"], ("\\Flagged",), DAY)
        bulk_append(client, "Lists/Bulk", [seed_message(i, tag="bulk") for i in range(BULK)])
    finally:
        client.logout()
    return mail


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> Fetched:
    request = urllib.request.Request(url, headers=headers or {}, data=data)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return Fetched(response.status, {k.lower(): v for k, v in response.headers.items()},
                           response.read())
    except urllib.error.HTTPError as exc:
        return Fetched(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


class ServeProcess:
    """``mailmigrate serve ARCHIVE --port 0 EXTRA...`` in a subprocess, for a ``with`` block."""

    def __init__(self, archive: Path | str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "migrate", "serve", str(archive), "--port", "0", *extra]
        self.env = env
        self.log: list[str] = []
        self.url = ""

    def __enter__(self) -> ServeProcess:
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True, env=self.env)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            found = re.search(r"at (http://[^/\s]+)/", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            self.proc.wait(timeout=30)
            raise AssertionError("serve did not start: " + "".join(self.log))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)

    def get(self, path: str, **kwargs: Any) -> Fetched:
        return fetch(self.url + path, **kwargs)



def make_viewer_archive(server: Any, canary: Canary, base: Path) -> dict[str, Any]:
    """The viewer's mail backed up from Dovecot into a SQLite archive and an mbox tree."""
    user = server.add_user()
    mail = seed_viewer_mail(server, user, canary.url)
    out: dict[str, Any] = {"sqlite": base / "mail.sqlite", "tree": base / "tree", "user": user,
                           "mail": mail}
    for kind in ("sqlite", "tree"):
        result = run_cli(*backup_args(server, user, out[kind]), password=user.password)
        assert result.code == 0, result.err
    return out
