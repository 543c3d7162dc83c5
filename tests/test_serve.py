"""`mailmigrate serve`: pages and their JSON twins, downloads, guards, read-only, live reads.

A real viewer process (`python -m migrate serve`) on an archive made by a real
backup from Dovecot; requests over real HTTP. The browser's side (clicks,
downloads, no script and no remote load in a real Chromium) is in
test_serve_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import backup_args, cli_env, run_cli
from seeding import bulk_append, imap_login, seed_message
from serve_helpers import BULK, PDF, Canary, ServeProcess, fetch, make_viewer_archive


@pytest.fixture(scope="module")
def canary():
    with Canary() as server:
        yield server


@pytest.fixture(scope="module")
def viewer_archive(dovecot, canary, tmp_path_factory):
    return make_viewer_archive(dovecot, canary, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def served(viewer_archive):
    with ServeProcess(viewer_archive["sqlite"]) as process:
        yield process


def search_ids(archive: Path, words: str) -> list[int]:
    result = run_cli("search", str(archive), words, "--json")
    assert result.code == 0, result.err
    return [h["id"] for h in result.json()["results"]]


def test_every_page_has_a_json_twin(served):
    for page, twin in (("/", "/api/folders"), ("/folder?name=INBOX", "/api/folder?name=INBOX"),
                       ("/search?q=K%C3%B6ln", "/api/search?q=K%C3%B6ln")):
        html = served.get(page)
        assert html.status == 200 and html.headers["content-type"].startswith("text/html")
        assert f'type="application/json" href="{twin.replace("&", "&amp;")}"' in html.body.decode()
        data = served.get(twin)
        assert data.status == 200 and data.headers["content-type"] == "application/json"
    [ident] = search_ids(served.args[4], "quarterly")
    assert f'href="/api/message/{ident}"' in served.get(f"/message/{ident}").body.decode()
    assert served.get(f"/api/message/{ident}").json()["id"] == ident


def test_folder_tree_counts_and_pagination(served):
    folders = {f["name"]: f for f in served.get("/api/folders").json()["folders"]}
    assert {n: f["messages"] for n, f in folders.items() if f["messages"]} == \
        {"INBOX": 3, "Work/2024": 1, "Lists/Bulk": BULK}
    assert folders["Work/2024"]["depth"] == 1 and folders["Work/2024"]["label"] == "2024"
    first = served.get("/api/folder?name=Lists/Bulk").json()
    assert (first["total"], first["pages"], len(first["messages"])) == (BULK, 2, 50)
    second = served.get(first["next"].replace("/folder", "/api/folder")).json()
    assert len(second["messages"]) == BULK - 50 and second["next"] is None
    ids = [m["id"] for m in first["messages"] + second["messages"]]
    assert len(set(ids)) == BULK
    page = served.get("/folder?name=Lists/Bulk&page=2").body.decode()
    assert "Page 2 of 2" in page and 'rel="prev"' in page
    assert served.get("/api/folder?name=Lists/Bulk&page=x").status == 400
    assert served.get("/api/folder?name=Lists/Bulk&page=" + "9" * 30).status == 400
    assert served.get("/api/folder?name=Nowhere").status == 404


def test_search_is_the_search_command(served, viewer_archive):
    db = viewer_archive["sqlite"]
    for words in ("Köln", "Empfänger", "quarterly", "news*"):
        hits = served.get("/api/search?" + _q(q=words)).json()["messages"]
        assert [h["id"] for h in hits] == search_ids(db, words), words
    by_from = served.get("/api/search?" + _q(**{"from": "Jürgen"})).json()["messages"]
    assert [h["subject"] for h in by_from] == ["Grüße aus Köln"]
    assert served.get("/api/search?" + _q(q="x", since="yesterday")).status == 400
    html = served.get("/search?" + _q(q="Köln")).body.decode()
    assert "Grüße aus Köln" in html


def _q(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def test_message_page_headers_attachment_and_raw(served, viewer_archive):
    [ident] = search_ids(viewer_archive["sqlite"], "quarterly")
    page = served.get(f"/api/message/{ident}").json()
    assert page["headers"]["From"] == "Bob <bob@example.org>"
    assert page["folder"] == "INBOX" and page["flags"] == ["\\Seen"]
    assert page["received"].startswith("2024-03-04T09:30:00")
    assert page["text"].strip() == "The quarterly numbers are attached."
    [attachment] = page["attachments"]
    assert attachment["filename"] == "Bericht März.pdf" and attachment["size"] == len(PDF)
    download = served.get(attachment["url"])
    assert download.status == 200 and download.body == PDF
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''Bericht%20M%C3%A4rz.pdf" in download.headers["content-disposition"]
    raw = served.get(page["raw_url"])
    assert raw.body == viewer_archive["mail"]["report"]
    assert raw.headers["content-disposition"].startswith(f'attachment; filename="{ident}.eml"')
    html = served.get(f"/message/{ident}").body.decode()
    assert "Bericht März.pdf" in html and "Quarterly report" in html and "\\Seen" in html
    assert served.get("/api/message/999999").status == 404
    assert served.get("/api/message/abc").status == 400
    assert served.get(f"/message/{ident}/part/99").status == 404


def test_hostile_html_is_sanitised_and_sandboxed(served, viewer_archive, canary):
    [ident] = search_ids(viewer_archive["sqlite"], "hostile")
    body = served.get(f"/message/{ident}/body")
    csp = body.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "http:" not in csp
    assert "script-src" not in csp  # falls back to default-src 'none'
    head, text = body.body.decode().split("<body>", 1)  # the mail's part: after our <head>
    assert head.count("<meta") == 1 and "<title>Hostile HTML</title>" in head
    assert "Hostile text marker" in text
    for banned in ("<script", "onload", "onerror", "<form", "<meta", "<iframe", "<link",
                   "<object", "<embed", "<style", "srcset", "background", "url(", "ping="):
        assert banned not in text, banned
    # A link stays a link (following it is the reader's choice); nothing else points out.
    assert canary.url not in re.sub(r'<a href="[^"]*"', "", text)
    # Remote images only on request; scripts, styles and the rest never.
    shown = served.get(f"/message/{ident}/body?images=1")
    assert f'src="{canary.url}/img.png"' in shown.body.decode()
    assert "http:" in shown.headers["content-security-policy"]
    assert "<script" not in shown.body.decode() and "url(" not in shown.body.decode()
    page = served.get(f"/message/{ident}")
    iframe = re.search(r"<iframe[^>]*>", page.body.decode()).group(0)
    assert " sandbox " in iframe and "allow-" not in iframe
    assert "script-src" not in page.headers["content-security-policy"]
    assert "<script" not in page.body.decode()
    assert canary.seen() == []  # the server itself fetched nothing either


def test_inline_cid_images_come_from_the_message(served, viewer_archive):
    [ident] = search_ids(viewer_archive["sqlite"], "newsletter")
    text = served.get(f"/message/{ident}/body").body.decode()
    src = re.search(r'<img src="([^"]+)"', text).group(1)
    assert src.startswith(f"/message/{ident}/part/")
    image = served.get(src)
    assert image.status == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")


def test_guards_host_header_and_no_writes(served, viewer_archive):
    evil = served.get("/api/folders", headers={"Host": "attacker.example"})
    assert evil.status == 400  # DNS rebinding: a foreign Host is refused
    for path in ("/api/folders", "/message/1/raw"):
        assert fetch(served.url + path, data=b"x=1").status == 405  # only GET
    db = viewer_archive["sqlite"]
    before = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns
    for path in ("/", "/folder?name=INBOX", "/search?q=K%C3%B6ln", "/api/message/1",
                 "/message/1/raw", "/message/1/body"):
        served.get(path)
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before


def test_catalog_opens_sqlite_read_only(viewer_archive):
    from migrate.archive.catalog import open_catalog

    catalog = open_catalog(str(viewer_archive["sqlite"]))
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            catalog.archive.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    finally:
        catalog.close()


def test_reads_while_a_backup_writes(dovecot, viewer_archive, tmp_path):
    """WAL: the viewer keeps serving while a backup commits, and shows the new mail."""
    user = viewer_archive["user"]
    db = tmp_path / "live.sqlite"
    assert run_cli(*backup_args(dovecot, user, db), password=user.password).code == 0
    with ServeProcess(db) as process:
        before = process.get("/api/folder?name=INBOX").json()["total"]
        client = imap_login(dovecot, user)
        try:
            bulk_append(client, "INBOX", [seed_message(i, tag="live") for i in range(5)])
        finally:
            client.logout()
        assert run_cli(*backup_args(dovecot, user, db), password=user.password).code == 0
        after = process.get("/api/folder?name=INBOX").json()["total"]
        assert after == before + 5
        client = imap_login(dovecot, user)
        try:  # leave the shared account as the other tests expect it
            client.select_folder("INBOX")
            client.delete_messages(client.search(["SUBJECT", "live message"]))
            client.expunge()
        finally:
            client.logout()


def test_access_token_never_in_a_url_or_the_log(viewer_archive, tmp_path):
    token = "s3cret-token-for-the-viewer"
    env = cli_env(None, MM_VIEW_TOKEN=token)
    with ServeProcess(viewer_archive["sqlite"], "--token-env", "MM_VIEW_TOKEN",
                      env=env) as process:
        assert process.get("/").status == 303
        assert process.get("/").headers["location"] == "/login"
        assert process.get("/api/folders").status == 401
        wrong = process.get("/login", data=b"token=nope")
        assert wrong.status == 403
        login = process.get("/login", data=f"token={token}".encode())
        assert login.status == 303 and token not in login.headers["location"]
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
        session = cookie.split(";")[0]
        assert process.get("/", headers={"Cookie": session}).status == 200
        bearer = process.get("/api/folders", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status == 200 and bearer.json()["folders"]
        assert process.get("/api/folders", headers={"Authorization": "Bearer x"}).status == 401
    log = "".join(process.log)
    assert "GET /api/folders" in log  # the access log is there, and holds no token
    assert token not in log


def test_serve_refuses_what_it_must(viewer_archive, tmp_path):
    db = str(viewer_archive["sqlite"])
    for args, text in ((("--host", "0.0.0.0"), "needs an access token"),
                       (("--port", "70000"), "not a port"),
                       (("--datasette", "--host", "0.0.0.0"), "loopback"),
                       (("--token-env", "MM_NOT_SET_ANYWHERE"), "empty or unset")):
        result = run_cli("serve", db, *args)
        assert result.code == 2 and text in result.err, (args, result.err)
        assert "Traceback" not in result.err
    missing = run_cli("serve", str(tmp_path / "none.sqlite"))
    assert missing.code == 5 and "does not exist" in missing.err


def test_mbox_tree_is_browsable_without_search(viewer_archive):
    with ServeProcess(viewer_archive["tree"]) as process:
        folders = {f["name"]: f["messages"] for f in process.get("/api/folders").json()["folders"]}
        assert folders["INBOX"] == 3 and folders["Lists/Bulk"] == BULK
        inbox = process.get("/api/folder?name=INBOX").json()["messages"]
        subjects = {m["subject"] for m in inbox}
        assert subjects == {"Quarterly report", "Grüße aus Köln", "Hostile HTML"}
        report = next(m for m in inbox if m["subject"] == "Quarterly report")
        page = process.get(f"/api/message/{report['id']}").json()
        assert page["attachments"][0]["filename"] == "Bericht März.pdf"
        assert process.get(page["attachments"][0]["url"]).body == PDF
        found = process.get("/api/search?q=K%C3%B6ln").json()
        assert found["searchable"] is False and "SQLite" in found["notice"]


def test_datasette_metadata_is_printed(viewer_archive):
    result = run_cli("serve", str(viewer_archive["sqlite"]), "--datasette-metadata")
    assert result.code == 0
    meta = json.loads(result.out)
    tables = meta["databases"]["mail"]["tables"]
    assert tables["mail"]["fts_table"] == "messages_fts" and tables["messages"]["hidden"]
