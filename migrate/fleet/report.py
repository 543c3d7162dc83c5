"""What a batch has done, for the admin (``status``), scripts (``--json``, ``--csv``) and a
manager (``report --out report.html``: one self-contained page, failures first).

The page has no script, no external style sheet, font or image: it opens from a
mail attachment or a file share as it is. Every value from the ledger (account
names, server error messages) is escaped, since a server chooses its own error text.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from migrate.engine.progress import human_bytes
from migrate.fleet.ledger import STATES, AccountRow, Ledger

#: Failures first, then what is still under way, then what is finished.
_ORDER = {"failed": 0, "running": 1, "new": 2, "verified": 3, "synced": 4, "done": 5}
CSV_COLUMNS = ("id", "account", "kind", "state", "pass", "messages", "bytes", "errors",
               "last_error", "attempts", "duration_s", "source", "dest")


def ordered(rows: Sequence[AccountRow]) -> list[AccountRow]:
    """Failed accounts first (then accounts with errors), each group by id."""
    return sorted(rows, key=lambda r: (_ORDER.get(r.state, 9), -min(r.errors, 1), r.id))


@dataclass(frozen=True)
class Totals:
    accounts: int
    by_state: dict[str, int]
    messages: int
    bytes: int
    errors: int
    remaining_bytes: int | None
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "by_state": self.by_state, "messages": self.messages,
                "bytes": self.bytes, "errors": self.errors, "remaining_bytes": self.remaining_bytes,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


def totals(ledger: Ledger, rows: Sequence[AccountRow]) -> Totals:
    """Sums, and an ETA from what verify counted and the last run's speed."""
    left = 0
    known = True
    for r in rows:
        if r.state in ("synced", "done", "failed"):
            continue
        if r.verify is None:
            known = False
            break
        left += max(int(r.verify.get("to_copy", {}).get("bytes", 0)) - r.bytes, 0)
    remaining = left if known else None
    speed = ledger.throughput()
    eta = remaining / speed if remaining is not None and speed else None
    if remaining == 0:
        eta = 0.0
    states = Counter(r.state for r in rows)
    return Totals(len(rows), {s: states[s] for s in STATES if states[s]},
                  sum(r.messages for r in rows), sum(r.bytes for r in rows),
                  sum(r.errors for r in rows), remaining, eta)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def status_lines(ledger: Ledger, rows: Sequence[AccountRow]) -> list[str]:
    """One line per account, then the totals."""
    out = []
    width = max((len(r.label) for r in rows), default=7)
    out.append(f"{'id':>4}  {'account':<{width}}  {'state':<8} {'pass':<6} {'messages':>8} "
               f"{'bytes':>9} {'errors':>6} {'tries':>5} {'time':>7}  last error")
    for r in rows:
        out.append(f"{r.id:>4}  {r.label:<{width}}  {r.state:<8} {r.pass_ or '-':<6} "
                   f"{r.messages:>8} {human_bytes(r.bytes):>9} {r.errors:>6} {r.attempts:>5} "
                   f"{duration(r.duration_s):>7}  {r.last_error or ''}")
    t = totals(ledger, rows)
    states = ", ".join(f"{n} {s}" for s, n in t.by_state.items()) or "no accounts"
    eta = "unknown (run `batch verify` first)" if t.remaining_bytes is None else (
        "nothing left" if t.remaining_bytes == 0 else
        f"{duration(t.eta_s)} for {human_bytes(t.remaining_bytes)}" if t.eta_s is not None
        else f"{human_bytes(t.remaining_bytes)} left, no speed measured yet")
    out.append(f"total: {t.accounts} accounts ({states}); {t.messages} messages, "
               f"{human_bytes(t.bytes)} moved, {t.errors} errors; ETA {eta}")
    return out


def status_csv(rows: Sequence[AccountRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        d = r.as_dict()
        writer.writerow([d[c] if d[c] is not None else "" for c in CSV_COLUMNS])
    return buf.getvalue()


def status_json(ledger: Ledger, rows: Sequence[AccountRow]) -> dict[str, Any]:
    return {"ledger": str(ledger.path), "batch_id": ledger.batch_id,
            "accounts": [r.as_dict() for r in rows], "totals": totals(ledger, rows).as_dict()}


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em;color:#1b1b1b;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}.sub{color:#555;margin:0 0 1.5em}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin-bottom:1.5em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.4em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;
border-bottom:1px solid #e5e5e5;vertical-align:top}th{background:#f5f5f5}
td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.failed{background:#fdecea}tr.failed td.state{color:#a40e0e;font-weight:bold}
tr.errors{background:#fff6e0}td.state{white-space:nowrap}.err{color:#7a1d1d}
"""


def report_html(ledger: Ledger, rows: Sequence[AccountRow], title: str | None = None) -> str:
    """A self-contained page: a summary, then one row per account, failures first."""
    e = html.escape
    t = totals(ledger, rows)
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = t.by_state.get("failed", 0)
    cards = [("accounts", str(t.accounts)), ("done", str(t.by_state.get("done", 0))),
             ("synced", str(t.by_state.get("synced", 0))), ("failed", str(failed)),
             ("messages moved", f"{t.messages:,}"), ("data moved", human_bytes(t.bytes)),
             ("message errors", str(t.errors)),
             ("ETA", "-" if t.eta_s is None else duration(t.eta_s))]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title or 'Mail migration report')}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title or 'Mail migration report')}</h1>",
        f'<p class="sub">Ledger {e(ledger.path.name)} &middot; made {e(made)} &middot; '
        f"{'all accounts fine' if not failed and not t.errors else f'{failed} failed accounts'}"
        "</p>",
        '<div class="cards" id="summary">',
        *(f'<div class="card"><b>{e(v)}</b>{e(k)}</div>' for k, v in cards),
        "</div>",
        '<table id="accounts"><thead><tr><th>Account</th><th>Kind</th><th>State</th><th>Pass</th>'
        '<th>Messages</th><th>Data</th><th>Errors</th><th>Attempts</th><th>Time</th>'
        "<th>Last error</th></tr></thead><tbody>",
    ]
    for r in ordered(rows):
        css = "failed" if r.state == "failed" else ("errors" if r.errors else "")
        parts.append(
            f'<tr class="{css}" data-state="{e(r.state)}"><td>{e(r.label)}</td><td>{e(r.spec.kind)}'
            f'</td><td class="state">{e(r.state)}</td><td>{e(r.pass_ or "-")}</td>'
            f'<td class="n">{r.messages:,}</td><td class="n">{e(human_bytes(r.bytes))}</td>'
            f'<td class="n">{r.errors}</td><td class="n">{r.attempts}</td>'
            f'<td class="n">{e(duration(r.duration_s))}</td>'
            f'<td class="err">{e(r.last_error or "")}</td></tr>')
    parts += ["</tbody></table></body></html>", ""]
    return "\n".join(parts)


__all__ = ["CSV_COLUMNS", "Totals", "ordered", "report_html", "status_csv", "status_json",
           "status_lines", "totals"]
