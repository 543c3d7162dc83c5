"""The viewer in a real headless Chromium (Debian's chromium, driven by Playwright).

Clicks from a folder to a message, searches, downloads an attachment, and
opens a hostile HTML message (scripts, remote images, CSS with remote URLs,
forms, meta refresh, iframes, …) whose every remote reference points at a
canary HTTP server on loopback: the canary must see no request and no script
may run. Then "Show remote images" is clicked, and the canary must see the
image and nothing else: the positive control that shows the canary would
have seen a request.

Playwright never downloads a browser here: it drives /usr/bin/chromium.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import PDF, Canary, ServeProcess, make_viewer_archive

CHROMIUM = "/usr/bin/chromium"
# As the machine's notes say a headless Chromium runs here (no background traffic).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install playwright (no browser "
                    "download: it drives /usr/bin/chromium)", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def canary():
    with Canary() as server:
        yield server


@pytest.fixture(scope="module")
def served(dovecot, canary, tmp_path_factory):
    archive = make_viewer_archive(dovecot, canary, tmp_path_factory.mktemp("browser"))
    with ServeProcess(archive["sqlite"]) as process:
        yield process


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


def test_click_from_a_folder_to_a_message(page, served):
    page.goto(served.url + "/")
    page.locator("#folders").get_by_role("link", name="INBOX").click()
    page.wait_for_url("**/folder?name=INBOX")
    assert page.locator("#messages tbody tr").count() == 3
    page.get_by_role("link", name="Grüße aus Köln").click()
    page.wait_for_url("**/message/*")
    assert page.locator("#subject").inner_text() == "Grüße aus Köln"
    headers = page.locator("dl.headers").inner_text()
    assert "Jürgen Müller <j@example.de>" in headers and "Empfänger <e@example.de>" in headers
    assert "Das Straßenfest ist abgesagt." in page.locator("#text").inner_text()
    page.get_by_role("link", name="INBOX").last.click()  # back to the folder, from the message
    page.wait_for_url("**/folder?name=INBOX")


def test_search_and_download_an_attachment(page, served):
    page.goto(served.url + "/")
    page.get_by_label("Search").fill("quarterly")
    page.get_by_role("button", name="Search").first.click()
    page.wait_for_url("**/search?q=quarterly")
    page.get_by_role("link", name="Quarterly report").click()
    page.wait_for_url("**/message/*")
    with page.expect_download() as info:
        page.get_by_role("link", name="Bericht März.pdf").click()
    download = info.value
    assert download.suggested_filename == "Bericht März.pdf"
    assert Path(download.path()).read_bytes() == PDF


def test_hostile_html_runs_nothing_and_loads_nothing(page, served, canary):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    consoles: list[str] = []
    page.on("console", lambda m: consoles.append(m.text))
    page.goto(served.url + "/search?q=hostile")
    page.get_by_role("link", name="Hostile HTML").click()
    page.wait_for_url("**/message/*")
    frame = page.frame(name="mailbody")
    assert frame is not None
    frame.wait_for_load_state("load")  # every subresource the body asks for is asked by now
    assert frame.get_by_text("Hostile text marker").count() == 1
    # No script ran: the hostile script would have retitled and marked the document.
    assert frame.locator("body[data-pwned]").count() == 0
    assert frame.title() == "Hostile HTML"
    # Nothing that could act later is left in the document: no refresh, no form, no frame.
    for selector in ("meta[http-equiv]", "form", "iframe", "script", "object", "embed",
                     "link", "style", "[onload]", "[onerror]", "img[src^=http]"):
        assert frame.locator(selector).count() == 0, selector
    assert canary.seen() == []
    assert not [u for u in requests if u.startswith(canary.url)]
    assert all(u.startswith(served.url) for u in requests), requests
    # The positive control: the reader asks for images, and only the image comes.
    page.get_by_role("link", name="Show remote images").click()
    frame.wait_for_url("**/body?images=1")
    frame.wait_for_load_state("load")
    assert frame.locator("img[src$='/img.png']").evaluate("img => img.naturalWidth") == 1
    assert canary.seen() == ["/img.png"]
    assert frame.locator("body[data-pwned]").count() == 0


def test_inline_image_shows_without_remote_loads(page, served, canary):
    before = canary.seen()
    page.goto(served.url + "/search?q=newsletter")
    page.get_by_role("link", name="Newsletter with a logo").click()
    page.wait_for_url("**/message/*")
    frame = page.frame(name="mailbody")
    frame.wait_for_load_state("load")
    assert frame.locator("img[alt=logo]").evaluate("img => img.naturalWidth") == 1
    assert frame.locator("h1").inner_text() == "Spring news"
    assert canary.seen() == before


def test_screenshot_script_makes_the_readme_picture(tmp_path):
    """scripts/serve_screenshot.py makes docs/img/serve.png; here it writes to tmp_path."""
    out = tmp_path / "serve.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_screenshot.py"),
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
