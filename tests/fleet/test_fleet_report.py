"""The HTML report, opened in headless Chromium (Debian's, driven by Playwright): the
summary is there, and the failed account is the first row."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium, headless, with a fresh profile; never a downloaded browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the report test needs Playwright for Python: pip install playwright "
                    "(it drives Debian's chromium; no browser download)", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail("the report test needs Debian's chromium: apt-get install chromium",
                    pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_report_shows_the_failed_account_first(dovecot, hosts, make_fleet, tmp_path, browser):
    fleet = make_fleet(3)
    bad = fleet.pairs[2]
    (tmp_path / "secrets" / f"{bad.dest.name}.pw").write_text("not-the-password\n")
    ledger = tmp_path / "batch.sqlite"
    assert run_cli("batch", "init", str(ledger), "--accounts", str(fleet.csv)).code == 0
    assert run_cli("batch", "run", str(ledger), "--attempts", "1", "--quiet").code == 1
    page_path = tmp_path / "report.html"
    made = run_cli("batch", "report", str(ledger), "--out", str(page_path), "--title", "Domain move")
    assert made.code == 0, made.err
    page = browser.new_page()
    page.goto(page_path.as_uri())
    assert page.title() == "Domain move"
    first = page.locator("#accounts tbody tr").first
    assert first.get_attribute("data-state") == "failed"
    assert bad.source.name in first.inner_text()
    assert "authentication" in first.inner_text().lower() or "login" in first.inner_text().lower()
    assert page.locator("#accounts tbody tr").count() == 3
    assert "failed" in page.locator("#summary").inner_text()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
