"""Reader tier: one household card's own purchase records, for `cumulus-hq export`.

Why it decrypts everything: the ingest tier stores envelopes without any key, so nothing
outside `ct` says whose purchase it is; finding one card's records means opening every
purchase envelope in the period with HQ's private keys (all key ids present, or those named
with `--kid`: keys are rotated, old data stays under old keys). Other customers' payloads
exist only in memory while being compared and are never printed or logged; diagnostics show
the card masked (`2099*******82`).

The period is judged by the payload's `occurred_at`; the clear header `ts` (when it was
sealed, same terminal clock, a moment later) only narrows which envelopes are opened.
"""

from __future__ import annotations

import calendar
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from hq.storage import Storage

_PERIOD_RE = re.compile(r"(\d{1,4})([ymwd])")
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


@dataclass(frozen=True, slots=True)
class Period:
    """How far back: `2y`, `18m`, `6w`, `30d` (calendar years and months)."""

    amount: int
    unit: str

    def start(self, now: datetime) -> datetime:
        if self.unit == "d":
            return now - timedelta(days=self.amount)
        if self.unit == "w":
            return now - timedelta(weeks=self.amount)
        months = self.amount * (12 if self.unit == "y" else 1)
        total = now.year * 12 + now.month - 1 - months
        year, month = divmod(total, 12)
        month += 1
        if year < 1:
            return datetime(1, 1, 1, tzinfo=UTC)
        day = min(now.day, calendar.monthrange(year, month)[1])  # 29 Feb → 28 Feb
        return now.replace(year=year, month=month, day=day)


def parse_period(text: str) -> Period:
    m = _PERIOD_RE.fullmatch(text.strip().lower())
    if not m:
        raise ExportError(f"--since {text!r}: expected a number and y, m, w or d (2y, 18m, 30d)")
    return Period(int(m.group(1)), m.group(2))


def load_reader_keys(state_dir: Path, kids: Sequence[str] | None = None) -> dict[str, HqKey]:
    """The private keys of the reader tier: every `<state-dir>/keys/<kid>.json`, or `kids`."""
    directory = state_dir / "keys"
    names = list(kids) if kids else sorted(p.stem for p in directory.glob("*.json"))
    if not names:
        raise MissingKey(
            f"no HQ keys under {directory}: export needs the reader tier's private keys"
        )
    out: dict[str, HqKey] = {}
    for kid in names:
        try:
            out[kid] = hq_keys.load(state_dir, kid)
        except FileNotFoundError:
            raise MissingKey(f"no key {kid!r} at {hq_keys.key_path(state_dir, kid)}") from None
        except (OSError, ValueError, KeyError, UnsafePermissions) as exc:
            raise MissingKey(f"key {kid!r} is unreadable: {exc}") from None
    return out


def _parse_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


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
            "since": self.since.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "until": self.until.isoformat(timespec="seconds").replace("+00:00", "Z"),
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
        if not since <= _parse_rfc3339(payload.occurred_at) <= until:
            continue
        report.purchases.append(_record(payload, env.header))
    report.purchases.sort(key=lambda p: (p["occurred_at"], p["event_id"]))
    return report


def export_card(
    storage: Storage,
    state_dir: Path,
    card: str,
    period: Period,
    *,
    kids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> ExportReport:
    """Everything `cumulus-hq export` does but printing."""
    card = check_card(card)
    until = now or datetime.now(UTC)
    keys = load_reader_keys(state_dir, kids)
    return export_purchases(storage, keys, card, period.start(until), until)
