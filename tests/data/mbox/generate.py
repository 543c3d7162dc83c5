"""Writes the foreign mbox samples in this directory (run it to regenerate them).

thunderbird.mbox  mboxo as Thunderbird writes it: "From - <date>" lines, LF line ends,
                  X-Mozilla-Status/-Keys, a body line "From the start" quoted as ">From
                  the start", one message marked expunged (not compacted yet).
takeout.mbox      Google Takeout: X-Gmail-Labels, "From <id>@xxx <date with offset>" lines.
mboxrd.mbox       mboxrd: ">From " in the original became ">>From ".
mboxcl2.mbox      Content-Length framing, body "From " lines not quoted.

All synthetic (written for this project, MIT like the rest of it).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

THUNDERBIRD = [
    ("From - Tue Mar 05 10:15:00 2019\n", "0001", "$label1 todo",
     "Message-ID: <tb1@example.org>\nFrom: Ann <ann@example.org>\nSubject: read and tagged\n"
     "Date: Tue, 05 Mar 2019 10:14:00 +0100\n\nHello,\n>From the start it was mboxo.\nAnn\n"),
    ("From - Wed Jun 10 08:00:00 1998\n", "0005", "",
     "Message-ID: <tb2@example.org>\nFrom: Bob <bob@example.org>\nSubject: flagged, 1998\n\n"
     "Old but important.\n"),
    ("From - Thu Jan 01 00:00:00 2015\n", "0009", "",
     "Message-ID: <tb3@example.org>\nSubject: deleted, not compacted\n\nGone.\n"),
    ("From - Fri Dec 24 18:30:00 2021\n", "0000", "bad(kw",
     "From: Carl <carl@example.org>\nSubject: unread, no Message-ID\n\nBody line one\n\n"
     "From here on, a blank line came before.\n"),
]

TAKEOUT = [
    ("Inbox,Opened,Category Personal", "+0000 2024-01-03",
     "Message-ID: <g1@mail.gmail.com>\r\nSubject: in the inbox\r\n\r\nhi\r\n"),
    ("Sent,Opened", "+0000 2023-05-06",
     "Message-ID: <g2@mail.gmail.com>\r\nSubject: I sent this\r\n\r\nsent\r\n"),
    ("Unread,Archived,Work/Projects,Important", "+0000 2022-02-02",
     "Message-ID: <g3@mail.gmail.com>\r\nSubject: work\r\n\r\nwork\r\n"),
    ("Opened,Archived", "+0000 2010-10-10",
     "Message-ID: <g4@mail.gmail.com>\r\nSubject: archived only\r\n\r\nold\r\n"),
    ('Inbox,"Family, close",Opened,Starred', "+0000 2024-02-14",
     "Message-ID: <g5@mail.gmail.com>\r\nSubject: two labels\r\n\r\nlove\r\n"),
    ("Spam,Unread", "+0000 2024-03-01",
     "Message-ID: <g6@mail.gmail.com>\r\nSubject: buy now\r\n\r\nspam\r\n"),
    ("=?UTF-8?Q?Reisen_=C3=9Cbersee?=,Opened", "+0000 2019-08-08",
     "Message-ID: <g7@mail.gmail.com>\r\nSubject: travel\r\n\r\ntrip\r\n"),
]


def _asctime(iso_day: str) -> str:
    from datetime import datetime

    d = datetime.strptime(iso_day, "%Y-%m-%d")
    return d.strftime("%a %b %d 12:00:00")


def main() -> None:
    with open(HERE / "thunderbird.mbox", "wb") as f:
        for from_line, status, keys, msg in THUNDERBIRD:
            head, body = msg.split("\n\n", 1)
            body = "\n".join((">" + ln) if ln.startswith("From ") else ln for ln in body.split("\n"))
            f.write(from_line.encode())
            f.write(f"X-Mozilla-Status: {status}\nX-Mozilla-Status2: 00000000\n"
                    f"X-Mozilla-Keys: {keys:<80}\n".encode())
            f.write((head + "\n\n" + body + "\n").encode())
    with open(HERE / "takeout.mbox", "wb") as f:
        for i, (labels, date, msg) in enumerate(TAKEOUT):
            offset, day = date.split()
            stamp = _asctime(day)
            f.write(f"From 17{i:017d}@xxx {stamp} {offset} {day[:4]}\r\n".encode())
            f.write(f"X-GM-THRID: 17{i:017d}\r\nX-Gmail-Labels: {labels}\r\n".encode())
            f.write(msg.encode() + b"\r\n")
    with open(HERE / "mboxrd.mbox", "wb") as f:
        f.write(b"From a@example.org Mon Jan  2 15:04:05 2006\n"
                b"Subject: rd\n\n>From quoted once\n>>From was quoted in the original\n\n")
        f.write(b"From b@example.org Mon Jan  2 15:04:06 2006\nSubject: rd2\n\nplain\n\n")
    with open(HERE / "mboxcl2.mbox", "wb") as f:
        for i, body in enumerate([b"From the top, unquoted\n\nFrom a line after a blank\n",
                                  b"second\n"]):
            f.write(f"From c@example.org Mon Jan  2 15:04:0{i} 2006\n".encode())
            f.write(f"Subject: cl2 {i}\nContent-Length: {len(body)}\n\n".encode() + body + b"\n")


if __name__ == "__main__":
    main()
