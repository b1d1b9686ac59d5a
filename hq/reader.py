"""Reader tier: decrypt stored purchase envelopes into the CRM tables (`cumulus-hq reader run`).

Why a separate job: the ingest tier holds no decryption key (a compromised ingest host reads
no card and no basket); this job runs where the private keys are, loaded from mode-0600
files (`hq.keys`, refused when group or others can read them). It reads every purchase
envelope that has no read mark yet, in key order and pages, and writes per page, in one
transaction, the purchases (household card → purchase → items; store) and the marks, so a
crash or a second run never duplicates anything (`event_id` is the key).

Rotation: keys are looked up by the envelope's `enc_kid`; several are held at once. An
envelope sealed to a key the job does not hold is marked `no-key` and retried on a later run
that holds it. Retention applies on arrival too: a purchase read after its 5-year card link
has passed is stored unlinked, one older than the accounting period is not stored at all.
Nothing personal is logged: counts only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from agent.envelope import (
    DecodeError,
    DecryptError,
    PayloadError,
    PurchasePayload,
    decode,
    open_payload,
)
from agent.envelope.suites import PrivateKey
from hq.keys import HqKey
from hq.periods import epoch_ms, parse_rfc3339_ms
from hq.retention import RetentionPolicy
from hq.storage import (
    CrmItem,
    CrmPurchase,
    CrmStore,
    EnvelopeRef,
    ReadMark,
    RetentionCutoffs,
    SealedEnvelope,
)

log = logging.getLogger("hq.reader")
PAGE = 500


@dataclass
class ReaderReport:
    opened: int = 0
    stored: int = 0
    already_stored: int = 0  # an event_id the CRM had (same purchase in another envelope)
    unlinked_on_arrival: int = 0
    expired: int = 0
    unreadable: int = 0
    no_key: Counter[str] = field(default_factory=Counter)

    def document(self) -> dict[str, object]:
        return {
            "opened": self.opened,
            "stored": self.stored,
            "already_stored": self.already_stored,
            "unlinked_on_arrival": self.unlinked_on_arrival,
            "expired": self.expired,
            "unreadable": self.unreadable,
            "no_key": dict(self.no_key),
        }

    def summary(self) -> str:
        parts = [f"{self.opened} purchase envelopes opened, {self.stored} purchases stored"]
        if self.unlinked_on_arrival:
            parts.append(f"{self.unlinked_on_arrival} stored unlinked (older than the link)")
        if self.expired:
            parts.append(f"{self.expired} past the accounting period (not stored)")
        if self.no_key:
            parts.append("no key for " + ", ".join(f"{k} ({n})" for k, n in self.no_key.items()))
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable")
        return "; ".join(parts)


def to_crm(
    payload: PurchasePayload, ref: EnvelopeRef, enc_kid: str, cutoffs: RetentionCutoffs
) -> CrmPurchase | None:
    """The CRM row of a payload: full, unlinked (older than the link) or None (expired)."""
    occurred = epoch_ms(parse_rfc3339_ms(payload.occurred_at))
    if occurred < cutoffs.delete_ms:
        return None
    facts = CrmPurchase(
        event_id=payload.event_id,
        occurred_ms=occurred,
        occurred_at=payload.occurred_at,
        store=payload.store,
        terminal=payload.terminal,
        receipt=payload.receipt,
        currency=payload.currency,
        total=payload.total,
        items=tuple(CrmItem(n, i.gtin, i.qty, i.amount) for n, i in enumerate(payload.items)),
    )
    if occurred < cutoffs.unlink_ms:
        return facts  # the transaction facts only: no card, no envelope, no consent details
    return replace(
        facts,
        card=payload.card,
        source=ref,
        enc_kid=enc_kid,
        consent_decided_at=payload.consent.decided_at,
        consent_latency_ms=payload.consent.latency_ms,
    )


def _open(
    sealed: SealedEnvelope,
    keys: Mapping[str, HqKey],
    private: Mapping[str, PrivateKey],
    report: ReaderReport,
) -> PurchasePayload | str:
    """The payload, or the read state to mark (`no-key`, `unreadable`)."""
    if sealed.enc_kid not in keys:
        report.no_key[sealed.enc_kid] += 1
        return "no-key"
    try:
        env = decode(sealed.body)
        report.opened += 1
        payload = open_payload(env, keys[sealed.enc_kid].suite, private[sealed.enc_kid])
    except (DecodeError, DecryptError, PayloadError):
        report.unreadable += 1
        return "unreadable"
    if not isinstance(payload, PurchasePayload):
        report.unreadable += 1
        return "unreadable"
    return payload


def read_envelopes(
    store: CrmStore,
    keys: Mapping[str, HqKey],
    policy: RetentionPolicy | None = None,
    *,
    now: datetime | None = None,
    page: int = PAGE,
) -> ReaderReport:
    """Bring the CRM tables up to date with every readable stored purchase envelope."""
    cutoffs = (policy or RetentionPolicy()).cutoffs(now or datetime.now(UTC))
    private = {kid: k.private_key() for kid, k in keys.items()}
    report = ReaderReport()
    after: EnvelopeRef | None = None
    while batch := store.unread_envelopes(keys.keys(), after, page):
        purchases: list[CrmPurchase] = []
        marks: list[ReadMark] = []
        for sealed in batch:
            after = sealed.ref
            opened = _open(sealed, keys, private, report)
            if isinstance(opened, str):
                marks.append(ReadMark(sealed.ref, opened))
                continue
            row = to_crm(opened, sealed.ref, sealed.enc_kid, cutoffs)
            if row is None:
                report.expired += 1
                marks.append(ReadMark(sealed.ref, "expired"))
                continue
            if row.card is None:
                report.unlinked_on_arrival += 1
            purchases.append(row)
            marks.append(ReadMark(sealed.ref, "read"))
        stored = store.save_read(purchases, marks)
        report.stored += stored
        report.already_stored += len(purchases) - stored
    log.info("reader: %s", report.summary())
    return report
