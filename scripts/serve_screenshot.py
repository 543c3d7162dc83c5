"""Make the README's picture of the viewer: docs/img/serve.png.

    python scripts/serve_screenshot.py [OUT.png]

Builds a small demo archive with the library's own writer (no mail server
needed), serves it with `mailmigrate serve` on a free loopback port, and
photographs a message page in Debian's headless Chromium through Playwright
(/usr/bin/chromium; no browser is downloaded). tests/test_serve_browser.py
runs it, so the picture can always be made again.
"""

from __future__ import annotations

import base64
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from migrate.model import Folder, Message  # noqa: E402
from migrate.stores.sqlite_archive import SqliteArchive  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A square PNG of one colour with a white border (zlib and struct: no image library)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b""
    for y in range(size):
        row = b"".join(bytes((255, 255, 255)) if min(x, y, size - 1 - x, size - 1 - y) < 2
                       else bytes(rgb) for x in range(size))
        rows += b"\x00" + row
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


LOGO = base64.b64encode(png(16, (242, 160, 40)))
PEOPLE = ["Jürgen Müller <j.mueller@example.de>", "Ana Souza <ana@example.com.br>",
          "Zoë Kowalski <zoe@example.pl>", "Léa Martin <lea.martin@example.fr>",
          "Sven Ødegård <sven@example.no>", "Bob Smith <bob@example.org>"]
SUBJECTS = ["Protokoll der Sitzung vom Dienstag", "Re: Angebot für das Projekt Köln",
            "Flight booking confirmation", "Quarterly report Q1", "Einladung: Sommerfest 2024",
            "Re: Fotos vom Wochenende", "Your invoice 2024-0311", "Agenda for Monday",
            "Fwd: Räume buchen", "Team lunch on Friday?"]


def message(i: int, when: datetime) -> bytes:
    who = PEOPLE[i % len(PEOPLE)]
    subject = SUBJECTS[i % len(SUBJECTS)]
    return (f"Message-ID: <demo{i}@example.org>\r\nFrom: {who}\r\nTo: Me <me@example.org>\r\n"
            f"Subject: {subject}\r\nDate: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hallo,\r\n\r\nsiehe unten ({i}).\r\n").encode()


def newsletter(when: datetime) -> bytes:
    html = ("<html><body style=\"font-family: sans-serif\"><table width=\"100%\"><tr>"
            "<td style=\"background-color:#12324f;color:#fff;padding:12px\">"
            "<img src=\"cid:logo@demo\" alt=\"logo\" width=\"16\" height=\"16\"> "
            "<b>Stadtwerke Köln</b> · Kundenbrief</td></tr></table>"
            "<h2 style=\"color:#12324f\">Ihre Jahresabrechnung 2023</h2>"
            "<p>Sehr geehrte Frau Schäfer,</p><p>im Anhang finden Sie Ihre Jahresabrechnung. "
            "Der Abschlag ändert sich ab <b>1. April</b> auf <b>84,00 €</b> im Monat.</p>"
            "<p style=\"color:#555\">Bilder von anderen Servern werden erst nach einem Klick "
            "geladen: <img src=\"https://tracker.example/pixel.gif\" alt=\"[tracking pixel]\"></p>"
            "<p>Mit freundlichen Grüßen<br>Ihr Kundenservice</p></body></html>")
    return ("Message-ID: <news@demo>\r\nFrom: Stadtwerke Köln <service@example.de>\r\n"
            "To: Maria Schäfer <maria@example.org>\r\nSubject: Ihre Jahresabrechnung 2023\r\n"
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n"
            "Content-Type: multipart/related; boundary=R\r\n\r\n--R\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--R\r\n"
            "Content-Type: image/png\r\nContent-ID: <logo@demo>\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + LOGO.decode() + "\r\n--R--\r\n"
            "--M\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=\"Jahresabrechnung-2023.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"%PDF-1.4 demo " * 400).decode() + "\r\n--M--\r\n").encode()


def build(path: Path) -> None:
    archive = SqliteArchive(path, account="maria@example.org", upgrade_progress=False)
    try:
        start = datetime(2024, 3, 18, 8, 0, tzinfo=UTC)
        folders = {"INBOX": 23, "Sent": 9, "Archive/2023": 14, "Work/Projekte": 6,
                   "Work/Reisen": 4, "Newsletters": 3}
        uid = 0
        for name, count in folders.items():
            batch = []
            for n in range(count):
                uid += 1
                when = start - timedelta(hours=7 * uid)
                flags = ("\\Seen",) if n % 3 else ()
                batch.append(Message(key=str(uid), raw=message(uid, when), uid=uid, flags=flags,
                                     internaldate=when))
            if name == "INBOX":
                uid += 1
                batch.append(Message(key=str(uid), raw=newsletter(start), uid=uid,
                                     flags=("\\Flagged",), internaldate=start))
            archive.add_messages(Folder(name, delimiter="/"), batch)
    finally:
        archive.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else ROOT / "docs" / "img" / "serve.png"
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mm-shot-") as tmp:
        db = Path(tmp) / "maria.sqlite"
        build(db)
        proc = subprocess.Popen([sys.executable, "-m", "migrate", "serve", str(db), "--port", "0"],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            found = re.search(r"at (http://[^/\s]+)/", line)
            if not found:
                raise SystemExit(f"serve did not start: {line}{proc.stderr.read()}")
            url = found.group(1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(url + "/folder?name=INBOX")
                page.get_by_role("link", name="Ihre Jahresabrechnung 2023").click()
                page.wait_for_url("**/message/*")
                page.frame(name="mailbody").wait_for_load_state("load")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
