"""The right-of-access report as one self-contained HTML page (`export --format html`).

Why HTML and not PDF: it needs no dependency, every customer can open it, it prints to PDF
from any browser, and a screen reader reads its tables. The page loads nothing from
anywhere (no scripts, fonts or images) and every value is escaped. It shows the card
masked: the customer knows their number, and a page that gets forwarded should not carry it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from hq.export import ACCESS_PERIOD, ExportReport, mask_card

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #ccc; padding: .3rem .5rem; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #555; }
@media print { body { margin: 0; } h2 { break-after: avoid; } }
"""


def money(minor: int, currency: str) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{currency} {abs(minor) // 100}.{abs(minor) % 100:02d}"


def quantity(thousandths: int) -> str:
    whole, frac = divmod(abs(thousandths), 1000)
    sign = "-" if thousandths < 0 else ""
    return f"{sign}{whole}" if not frac else f"{sign}{whole}.{frac:03d}".rstrip("0")


def _purchase(p: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(i['gtin'])}</td><td class=num>{quantity(i['qty'])}</td>"
        f"<td class=num>{escape(money(i['amount'], p['currency']))}</td></tr>"
        for i in p["items"]
    )
    when = escape(p["occurred_at"].replace("T", " ").replace("Z", " UTC"))
    return (
        f"<h2>{when} · store {escape(p['store'])} · receipt {escape(p['receipt'])}</h2>"
        f"<p class=meta>Checkout {escape(p['terminal'])}; recorded with your consent "
        f"({escape(str(p['consent']['decided_at']))}). Total "
        f"<strong>{escape(money(p['total'], p['currency']))}</strong>.</p>"
        "<table><thead><tr><th>Article (GTIN)</th><th class=num>Quantity</th>"
        f"<th class=num>Amount</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_html(report: ExportReport) -> str:
    """The whole page for `report` (purchases oldest first, as in the JSON)."""
    doc = report.document()
    masked = escape(mask_card(report.card))
    body = "".join(_purchase(p) for p in doc["purchases"]) or (
        "<p>We hold no purchase recorded on this card in this period.</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>Your Cumulus purchases, card {masked}</title><style>{_STYLE}</style></head>"
        f"<body><h1>Your Cumulus purchases</h1>"
        f"<p class=meta>Card {masked} · from {escape(doc['since'])} to {escape(doc['until'])}"
        f" · {doc['count']} purchase{'' if doc['count'] == 1 else 's'}</p>"
        f"<p>This report covers the last {ACCESS_PERIOD.describe()}: what we hold about "
        "purchases you agreed to record at the checkout. Purchases older than 5 years are no "
        "longer linked to your card.</p>"
        f"{body}</body></html>\n"
    )
