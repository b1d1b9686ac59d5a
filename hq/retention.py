"""Retention: how long HQ keeps what, and the job that enforces it (`cumulus-hq retention run`).

The promises (docs/data-protection.md), as defaults of `RetentionPolicy`:
- a purchase stays linked to its household card for at most **5 years** (`purchase_link`);
  then the card, the source envelope's address, the key id and the consent details are
  removed from the row: nothing HQ holds ties it to a household any more;
- the transaction facts (when, store, terminal, receipt, currency, total, items) are kept
  for accounting for **10 years** (`accounting`), then deleted;
- envelopes (encrypted, but they contain the card) are deleted after **5 years**
  (`envelopes`), and so is the rejection log, whose evidence is envelopes. The newest
  envelope of each stream keeps its hash (body emptied): the next one chains to it.

Why the job decides instants and the store only executes: one clock (`now`, injectable),
one set of cutoffs, one transaction, one audit entry with the exact counts. A dry run runs
the same statements and rolls them back. Running twice changes nothing the second time.
A policy that would keep envelopes (card inside) longer than the card link is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hq.periods import Period, epoch_ms, rfc3339
from hq.storage import CrmStore, RetentionCounts, RetentionCutoffs

log = logging.getLogger("hq.retention")

PURCHASE_LINK = Period(5, "y")
ACCOUNTING = Period(10, "y")
ENVELOPES = Period(5, "y")
_REFERENCE = datetime(2001, 3, 1, tzinfo=UTC)  # any date: compares periods, not instants


class PolicyError(ValueError):
    """The periods contradict the promises (e.g. envelopes kept longer than the card link)."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    purchase_link: Period = PURCHASE_LINK
    accounting: Period = ACCOUNTING
    envelopes: Period = ENVELOPES

    def __post_init__(self) -> None:
        if not self.envelopes.covers_at_most(self.purchase_link, _REFERENCE):
            raise PolicyError(
                f"envelopes period {self.envelopes} is longer than the card link period "
                f"{self.purchase_link}: an envelope holds the card, so it may not outlive it"
            )
        if not self.purchase_link.covers_at_most(self.accounting, _REFERENCE):
            raise PolicyError(
                f"accounting period {self.accounting} is shorter than the card link period "
                f"{self.purchase_link}: unlinked facts would be deleted before being unlinked"
            )

    def cutoffs(self, now: datetime) -> RetentionCutoffs:
        return RetentionCutoffs(
            unlink_ms=epoch_ms(self.purchase_link.start(now)),
            delete_ms=epoch_ms(self.accounting.start(now)),
            envelope_ts=int(self.envelopes.start(now).timestamp()),
            now=int(now.timestamp()),
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "purchase_link": str(self.purchase_link),
            "accounting": str(self.accounting),
            "envelopes": str(self.envelopes),
        }


@dataclass(frozen=True, slots=True)
class RetentionResult:
    policy: RetentionPolicy
    now: datetime
    dry_run: bool
    counts: RetentionCounts
    cutoffs: RetentionCutoffs = field(repr=False)

    def document(self) -> dict[str, object]:
        """What is printed with `--json` and written to the audit log."""
        c = self.cutoffs
        return {
            "dry_run": self.dry_run,
            "now": rfc3339(self.now),
            "policy": self.policy.as_dict(),
            "cutoffs": {
                "unlink_purchases_before": rfc3339(datetime.fromtimestamp(c.unlink_ms / 1000, UTC)),
                "delete_purchases_before": rfc3339(datetime.fromtimestamp(c.delete_ms / 1000, UTC)),
                "delete_envelopes_sealed_before": rfc3339(
                    datetime.fromtimestamp(c.envelope_ts, UTC)
                ),
            },
            "counts": self.counts.as_dict(),
        }


def run(
    store: CrmStore,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = "cumulus-hq",
) -> RetentionResult:
    """Apply `policy` as of `now` (default: the current time), audit-log what it did."""
    moment = now or datetime.now(UTC)
    cutoffs = policy.cutoffs(moment)
    counts = store.apply_retention(cutoffs, dry_run=dry_run)
    result = RetentionResult(policy, moment, dry_run, counts, cutoffs)
    store.audit(
        "retention.dry-run" if dry_run else "retention.run",
        actor,
        json.dumps(result.document(), sort_keys=True),
    )
    log.info(
        "retention %s as of %s: %s",
        "dry run" if dry_run else "run",
        rfc3339(moment),
        ", ".join(f"{k}={v}" for k, v in counts.as_dict().items()),
    )
    return result
