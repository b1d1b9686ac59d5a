"""Right of access: one household card's own purchase records (`cumulus-hq export`).

The promise: on request, a customer gets their purchases of the **last 2 years**, never
older (`ACCESS_PERIOD`; `--since` may only narrow it). `export_card` first brings the CRM
tables up to date (the reader job, with the keys it is given: rotated keys included), then
reads the card's linked purchases from them: the CRM is what HQ uses about a household, and
purchases unlinked after 5 years are, by design, no longer anyone's. The result is JSON
(`ExportReport.document()`) or a readable HTML report (`hq.report_html`). Diagnostics show
the card masked (`2099*******82`); other customers' data is never printed.

`export_purchases` is the older path that opens every purchase envelope of a period
directly (no CRM); the demo uses it. The period is judged by the payload's `occurred_at`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.envelope import (
    DecodeError,
    DecryptError,
    Header,
    PayloadError,
    PurchasePayload,
    decode,
    open_payload,
)
from agent.envelope.suites import PrivateKey
from agent.fsutil import UnsafePermissions
from hq import keys as hq_keys
from hq.keys import HqKey
from hq.periods import Period, PeriodError, epoch_ms, parse_rfc3339_ms, rfc3339
from hq.periods import parse_period as _parse_period
from hq.reader import ReaderReport, read_envelopes
from hq.retention import RetentionPolicy
from hq.storage import CrmPurchase, HqStore, Storage

ACCESS_PERIOD = Period(2, "y")
_CARD_RE = re.compile(r"\d{13}")
_TS_SLACK = 86_400  # seconds: `ts` is taken just after `occurred_at`; a day covers skew


class ExportError(Exception):
    """The export cannot run as asked (bad card, bad period); nothing was printed."""


class MissingKey(ExportError):
    """No reader-tier key to decrypt with (none under `<state-dir>/keys`, or a `--kid` absent)."""


def mask_card(card: str) -> str:
    """First 4 and last 2 digits: the only way a card number appears outside a payload."""
    if len(card) <= 6:
        return "*" * len(card)
    return card[:4] + "*" * (len(card) - 6) + card[-2:]


def check_card(card: str) -> str:
    """13 digits with a valid EAN-13 check digit (the household card format)."""
    card = card.strip().replace(" ", "")
    ok = bool(_CARD_RE.fullmatch(card)) and (
        sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(card)) % 10 == 0
    )
    if not ok:
        raise ExportError(
            f"--card {mask_card(card)}: not a card number (13 digits, EAN-13 check digit)"
        )
    return card


def parse_period(text: str) -> Period:
    try:
        return _parse_period(text)
    except PeriodError as exc:
        raise ExportError(str(exc)) from None


def load_reader_keys(state_dir: Path, kids: Sequence[str] | None = None) -> dict[str, HqKey]:
    """The private keys of the reader tier: every `<state-dir>/keys/<kid>.json`, or `kids`."""
    directory = state_dir / "keys"
    names = list(kids) if kids else sorted(p.stem for p in directory.glob("*.json"))
    if not names:
        raise MissingKey(f"no HQ keys under {directory}: the reader tier needs its private keys")
    out: dict[str, HqKey] = {}
    for kid in names:
        try:
            out[kid] = hq_keys.load(state_dir, kid)
        except FileNotFoundError:
            raise MissingKey(f"no key {kid!r} at {hq_keys.key_path(state_dir, kid)}") from None
        except (OSError, ValueError, KeyError, UnsafePermissions) as exc:
            raise MissingKey(f"key {kid!r} is unreadable: {exc}") from None
    return out


@dataclass
class ExportReport:
    card: str
    since: datetime
    until: datetime
    purchases: list[dict[str, Any]] = field(default_factory=list)
    opened: int = 0
    no_key: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0

    def document(self) -> dict[str, Any]:
        """The JSON printed on stdout: the customer's records, oldest first."""
        return {
            "card": self.card,
            "since": rfc3339(self.since),
            "until": rfc3339(self.until),
            "count": len(self.purchases),
            "purchases": self.purchases,
        }

    def summary(self) -> str:
        """One line for stderr, card masked."""
        parts = [
            f"{len(self.purchases)} purchases of card {mask_card(self.card)}",
            f"{self.opened} purchase envelopes opened",
        ]
        if self.no_key:
            parts.append("no key for " + ", ".join(f"{k} ({n})" for k, n in self.no_key.items()))
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable")
        return "; ".join(parts)


def _record(payload: PurchasePayload, header: Header) -> dict[str, Any]:
    return {
        "event_id": payload.event_id,
        "occurred_at": payload.occurred_at,
        "store": payload.store,
        "terminal": payload.terminal,
        "receipt": payload.receipt,
        "currency": payload.currency,
        "total": payload.total,
        "items": [{"gtin": i.gtin, "qty": i.qty, "amount": i.amount} for i in payload.items],
        "consent": {
            "decision": payload.consent.decision,
            "decided_at": payload.consent.decided_at,
            "by": payload.consent.by,
            "latency_ms": payload.consent.latency_ms,
        },
        "envelope": {
            "terminal": header.terminal,
            "stream": header.stream.hex(),
            "seq": header.seq,
            "enc_kid": header.enc_kid,
        },
    }


def export_purchases(
    storage: Storage, keys: dict[str, HqKey], card: str, since: datetime, until: datetime
) -> ExportReport:
    """Open every purchase envelope sealed in the period; keep those of `card`."""
    report = ExportReport(card, since, until)
    private: dict[str, PrivateKey] = {kid: k.private_key() for kid, k in keys.items()}
    since_ts = max(0, int(since.timestamp()) - _TS_SLACK)
    for stored in storage.envelopes(kind="purchase", since_ts=since_ts):
        try:
            env = decode(stored.body)
        except DecodeError:
            report.unreadable += 1
            continue
        kid = env.header.enc_kid
        if kid not in keys:
            report.no_key[kid] += 1
            continue
        report.opened += 1
        try:
            payload = open_payload(env, keys[kid].suite, private[kid])
        except (DecryptError, PayloadError):
            report.unreadable += 1
            continue
        if not isinstance(payload, PurchasePayload) or payload.card != card:
            continue
        if not since <= parse_rfc3339_ms(payload.occurred_at) <= until:
            continue
        report.purchases.append(_record(payload, env.header))
    report.purchases.sort(key=lambda p: (p["occurred_at"], p["event_id"]))
    return report


def crm_record(p: CrmPurchase) -> dict[str, Any]:
    """A CRM purchase in the same JSON shape as `_record` (v1 seals only recorded
    purchases, decided by the cashier: `decision` and `by` are those constants)."""
    src = p.source
    return {
        "event_id": p.event_id,
        "occurred_at": p.occurred_at,
        "store": p.store,
        "terminal": p.terminal,
        "receipt": p.receipt,
        "currency": p.currency,
        "total": p.total,
        "items": [{"gtin": i.gtin, "qty": i.qty, "amount": i.amount} for i in p.items],
        "consent": {
            "decision": "record",
            "decided_at": p.consent_decided_at,
            "by": "cashier",
            "latency_ms": p.consent_latency_ms,
        },
        "envelope": None
        if src is None
        else {
            "terminal": src.terminal,
            "stream": src.stream.hex(),
            "seq": src.seq,
            "enc_kid": p.enc_kid,
        },
    }


def export_card(
    storage: HqStore,
    state_dir: Path,
    card: str,
    period: Period = ACCESS_PERIOD,
    *,
    kids: Sequence[str] | None = None,
    now: datetime | None = None,
    policy: RetentionPolicy | None = None,
) -> ExportReport:
    """Everything `cumulus-hq export` does but printing: read new envelopes into the CRM,
    then the card's purchases of the period (at most `ACCESS_PERIOD`)."""
    card = check_card(card)
    until = now or datetime.now(UTC)
    if not period.covers_at_most(ACCESS_PERIOD, until):
        raise ExportError(
            f"--since {period}: the right of access covers the last {ACCESS_PERIOD.describe()}"
            f" ({ACCESS_PERIOD} at most)"
        )
    keys = load_reader_keys(state_dir, kids)
    reading: ReaderReport = read_envelopes(storage, keys, policy, now=until)
    since = period.start(until)
    report = ExportReport(card, since, until)
    report.purchases = [
        crm_record(p) for p in storage.card_purchases(card, epoch_ms(since), epoch_ms(until))
    ]
    report.opened = reading.opened
    report.no_key = reading.no_key
    report.unreadable = reading.unreadable
    return report
