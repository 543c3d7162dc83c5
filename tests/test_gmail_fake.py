"""The fake Gmail server (tests/fake_gmail.py) does what Google documents, as a plain
IMAP client sees it: the tests of mailmigrate's Gmail support are only as good as it."""

from __future__ import annotations

from fake_gmail import FakeGmail
from imapclient import IMAPClient


def login(gmail: FakeGmail, user) -> IMAPClient:
    client = IMAPClient(gmail.host, port=gmail.imap_port, ssl=False)
    client.login(user.name, user.password)
    return client


def test_labels_are_folders_over_one_message_store():
    with FakeGmail() as gmail:
        user = gmail.add_user()
        account = gmail.account(user)
        client = login(gmail, user)
        assert b"X-GM-EXT-1" in client.capabilities()
        uses = {name: flags for flags, _, name in client.list_folders()}
        assert b"\\All" in uses["[Gmail]/All Mail"] and b"\\Junk" in uses["[Gmail]/Spam"]
        client.create_folder("Work")
        # APPEND into a label folder gives the message that label, and it is in All Mail
        answer = client.append("Work", b"Message-ID: <f1@t>\r\n\r\nhello\r\n", ["\\Seen"])
        assert b"APPENDUID" in answer
        client.select_folder("[Gmail]/All Mail")
        (uid,) = client.search(["ALL"])
        item = client.fetch([uid], ["X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"])[uid]
        assert item[b"X-GM-LABELS"] == (b"Work",)
        msgid = item[b"X-GM-MSGID"]
        assert client.search(["X-GM-MSGID", msgid]) == [uid]
        assert client.search(["X-GM-THRID", item[b"X-GM-THRID"]]) == [uid]
        # STORE +X-GM-LABELS shows the message in INBOX too, and moves its MODSEQ
        before = client.folder_status("[Gmail]/All Mail", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"]
        client.add_gmail_labels([uid], ["\\Inbox", "Reisen/2024"])
        after = client.folder_status("[Gmail]/All Mail", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"]
        assert after > before
        assert client.search(["X-GM-LABELS", "Reisen/2024"]) == [uid]
        assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 1
        assert "Reisen/2024" in {name for _, _, name in client.list_folders()}
        # one message, whatever the folders show; a body fetched is counted
        client.select_folder("INBOX", readonly=True)
        client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
        client.logout()
        assert len(account.messages) == 1 and account.body_fetches[msgid] == 1


def test_spam_and_trash_are_outside_all_mail_and_names_can_be_german():
    with FakeGmail(lang="de", prefix="[Google Mail]") as gmail:
        user = gmail.add_user()
        account = gmail.account(user)
        account.add(b"Message-ID: <s@t>\r\n\r\nspam\r\n", where="spam")
        account.add(b"Message-ID: <k@t>\r\n\r\nkept\r\n", labels=("\\Inbox",))
        client = login(gmail, user)
        names = {name for _, _, name in client.list_folders()}
        assert {"[Google Mail]/Alle Nachrichten", "[Google Mail]/Papierkorb"} <= names
        count = {n: client.folder_status(n, ["MESSAGES"])[b"MESSAGES"]
                 for n in ("[Google Mail]/Alle Nachrichten", "[Google Mail]/Spam", "INBOX")}
        client.logout()
        assert count == {"[Google Mail]/Alle Nachrichten": 1, "[Google Mail]/Spam": 1, "INBOX": 1}
