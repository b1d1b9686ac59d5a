"""Retention with an injected clock across the 2-, 5- and 10-year lines, on both backends.

One history, walked forward in time: purchases of household CARD and OTHER at T0 (terminal
A), of CARD at T0 + 3 years (terminal B). At each step the test asks what HQ shows and
keeps: the right-of-access export (never older than 2 years), the card links (gone after 5
years), the accounting facts (gone after 10 years), the envelopes (gone after 5 years but
the newest of each stream, whose hash the next one chains to).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hq import retention
from hq.export import export_card, load_reader_keys
from hq.ingest import ingest
from hq.keys import HqKey
from hq.periods import Period
from hq.reader import read_envelopes
from hq.retention import PolicyError, RetentionPolicy
from hq.storage import HqStore, RetentionCounts, open_storage
from tests.factories import HqKeyPair
from tests.hq.support import SealingTerminal, install_hq_key

CARD = "2099123456786"
OTHER = "2099000000019"
NEW = "2099000000026"
T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def years(n: int) -> datetime:
    return T0.replace(year=T0.year + n)


@dataclass
class World:
    store: HqStore
    state: Path
    clock: list[float]
    a: SealingTerminal
    b: SealingTerminal

    def at(self, moment: datetime) -> datetime:
        self.clock[0] = moment.timestamp()
        return moment

    def run(self, moment: datetime, *, dry_run: bool = False) -> dict[str, int]:
        self.at(moment)
        return retention.run(
            self.store, RetentionPolicy(), now=moment, dry_run=dry_run
        ).counts.as_dict()

    def linked(self, card: str) -> int:
        return len(self.store.card_purchases(card, 0, 1 << 62))

    def facts(self) -> list[tuple[str, str | None]]:
        """(occurred, card) of every item line HQ keeps, oldest first."""
        return sorted((str(r.occurred_ms), r.card) for r in self.store.item_rows(0, 1 << 62))

    def exported(self, moment: datetime) -> list[str]:
        report = export_card(self.store, self.state, CARD, now=moment)
        return [p["occurred_at"] for p in report.document()["purchases"]]


@pytest.fixture
def world(db_url: str, tmp_path: Path, hq_keys: HqKeyPair) -> Iterator[World]:
    clock = [T0.timestamp()]
    state = tmp_path / "hq-state"
    install_hq_key(state, hq_keys)
    store = open_storage(db_url, state, clock=lambda: clock[0])
    a = SealingTerminal.create(tmp_path / "a.db", hq_keys, "0042-01", clock=lambda: clock[0])
    b = SealingTerminal.create(tmp_path / "b.db", hq_keys, "0042-02", clock=lambda: clock[0])
    w = World(store, state, clock, a, b)
    w.at(T0)
    a.seal(card=CARD, at=T0.timestamp())
    a.seal(card=OTHER, at=T0.timestamp() + 3600)
    w.at(years(3))
    b.seal(card=CARD, at=years(3).timestamp())
    for t in (a, b):
        store.enroll(t.terminal, t.public_raw)
        assert ingest(store, t.bodies()).update.rejections == ()
    yield w
    a.close()
    b.close()
    store.close()


def test_the_2_5_and_10_year_lines(world: World) -> None:
    w = world
    # T0 + 3y + 1d: everything linked; the export shows only the last 2 years
    now = w.at(years(3) + DAY)
    assert read_envelopes(w.store, _keys(w), now=now).stored == 3
    assert w.run(now) == dict.fromkeys(_zero(), 0)
    assert w.exported(now) == [_iso(years(3))]
    assert w.linked(CARD) == 2 and w.linked(OTHER) == 1

    # one day before the 5-year line: nothing goes; the export still sees T0 + 3y only
    now = years(5) - DAY
    assert w.run(now) == dict.fromkeys(_zero(), 0)
    assert w.exported(now) == [_iso(years(3))]

    # one day past it: A's purchases lose their card, A's envelopes expire (tip kept)
    now = years(5) + DAY
    counts = w.run(now)
    assert counts["purchases_unlinked"] == 2
    assert counts["households_deleted"] == 1  # OTHER: nothing linked any more
    assert counts["envelopes_deleted"] == 1 and counts["envelope_tips_emptied"] == 1
    assert counts["purchases_deleted"] == 0
    assert w.linked(CARD) == 1 and w.linked(OTHER) == 0
    assert [card for _, card in w.facts()] == [None, None, CARD]  # facts kept, unlinked
    assert w.store.stored_seqs(w.a.terminal, w.a.stream) == [2]  # the tip's hash stays
    assert {e.terminal for e in w.store.envelopes()} == {w.b.terminal}
    assert w.exported(now) == []  # T0 + 3y is past the 2-year line now
    assert w.run(now) == dict.fromkeys(_zero(), 0)  # idempotent

    # the stream goes on: the next envelope chains to the emptied tip
    w.a.seal(card=NEW, at=now.timestamp())
    assert ingest(w.store, w.a.bodies()[2:]).update.acked_through == 3

    # past the 10-year line: a dry run counts exactly what the run then does
    now = years(10) + DAY
    before = w.facts()
    planned = w.run(now, dry_run=True)
    assert w.facts() == before
    done = w.run(now)
    assert planned == done
    assert done["purchases_deleted"] == 2 and done["items_deleted"] == 2
    assert done["purchases_unlinked"] == 1  # B's purchase of T0 + 3y is 7 years old
    assert [card for _, card in w.facts()] == [None]  # B's, unlinked; A's T0 ones gone
    assert w.run(now) == dict.fromkeys(_zero(), 0)

    audit = w.store.audit_log()
    assert [e.action for e in audit].count("retention.dry-run") == 1
    assert json.loads(audit[-2].detail)["counts"] == done
    assert all(CARD not in e.detail for e in audit)


def test_a_purchase_read_after_its_lines_is_stored_unlinked_or_not_at_all(world: World) -> None:
    now = years(10) + DAY  # nothing was read before: A's T0 purchases are past 10 years
    report = read_envelopes(world.store, _keys(world), now=now)
    assert (report.expired, report.unlinked_on_arrival, report.stored) == (2, 1, 1)
    assert world.linked(CARD) == 0


def test_envelopes_expiring_unread_are_counted(world: World) -> None:
    counts = world.run(years(5) + DAY)
    assert counts["envelopes_never_read"] == 2  # A's, deleted before the reader opened them


def test_rejection_evidence_expires_with_the_envelopes(world: World) -> None:
    world.at(T0)
    assert ingest(world.store, world.a.bodies()[1:]).update.rejections == ()  # duplicate
    forged = world.a.forge(5, bytes(32))
    assert ingest(world.store, [forged]).update.rejections[0].code == "gap"
    assert world.run(years(5) - DAY)["rejections_deleted"] == 0
    assert world.run(years(5) + DAY)["rejections_deleted"] == 1
    assert world.store.rejections() == []


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ({"envelopes": Period(6, "y")}, "envelopes period 6y is longer than the card link"),
        ({"accounting": Period(4, "y")}, "accounting period 4y is shorter"),
    ],
)
def test_policies_that_break_the_promises_are_refused(
    periods: dict[str, Period], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        RetentionPolicy(**periods)  # type: ignore[arg-type]


def test_cutoffs_follow_the_calendar() -> None:
    c = RetentionPolicy().cutoffs(datetime(2031, 2, 28, tzinfo=UTC))
    assert datetime.fromtimestamp(c.unlink_ms / 1000, UTC) == datetime(2026, 2, 28, tzinfo=UTC)
    assert datetime.fromtimestamp(c.delete_ms / 1000, UTC) == datetime(2021, 2, 28, tzinfo=UTC)


def _keys(w: World) -> dict[str, HqKey]:
    return load_reader_keys(w.state)


def _zero() -> list[str]:
    return list(RetentionCounts().as_dict())


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
