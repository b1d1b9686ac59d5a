"""Statistics with a floor: no group below k households is ever shown (property-based)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hq.periods import epoch_ms
from hq.stats import (
    DIMENSIONS,
    ProductGroups,
    StatsError,
    aggregate,
    gtin13,
    iso_week,
)
from hq.storage import CrmItem, CrmPurchase, HqStore, ItemRow

WEEK0 = epoch_ms(datetime(2026, 11, 23, tzinfo=UTC))  # a Monday
GTINS = ["7612345678900", "7610000000011", "4006381333931", "96385074", "012345678905"]

rows_strategy = st.lists(
    st.builds(
        ItemRow,
        event_id=st.sampled_from([f"e{n}" for n in range(30)]),
        store=st.sampled_from(["0042", "0043", "0100"]),
        occurred_ms=st.integers(min_value=WEEK0, max_value=WEEK0 + 21 * 86_400_000),
        card=st.one_of(st.none(), st.sampled_from([f"card{n}" for n in range(25)])),
        gtin=st.sampled_from(GTINS),
        qty=st.integers(min_value=1, max_value=5000),
        amount=st.integers(min_value=0, max_value=10_000),
    ),
    max_size=150,
)
dims_strategy = st.lists(st.sampled_from(DIMENSIONS), min_size=1, max_size=3, unique=True)


def truth(rows: list[ItemRow], by: list[str]) -> dict[tuple[str, ...], set[str]]:
    """Households per group, computed the plain way."""
    groups = ProductGroups()
    cells: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for r in rows:
        values = {"store": r.store, "week": iso_week(r.occurred_ms), "group": groups.group(r.gtin)}
        cell = cells[tuple(values[d] for d in by)]
        if r.card is not None:
            cell.add(r.card)
    return cells


@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, by=dims_strategy, k=st.integers(min_value=1, max_value=12))
def test_no_group_below_k_households_is_ever_shown(
    rows: list[ItemRow], by: list[str], k: int
) -> None:
    result = aggregate(rows, by, k)
    cells = truth(rows, by)
    assert all(g.households >= k for g in result.groups)
    assert all(len(cells[g.key]) == g.households for g in result.groups)
    # … and every group at or above the floor is shown; the rest are only counted
    assert {g.key for g in result.groups} == {key for key, c in cells.items() if len(c) >= k}
    assert result.suppressed == len(cells) - len(result.groups)


@settings(max_examples=100, deadline=None)
@given(rows=rows_strategy, by=dims_strategy)
def test_unlinked_purchases_never_count_as_households(rows: list[ItemRow], by: list[str]) -> None:
    unlinked = [
        ItemRow(r.event_id, r.store, r.occurred_ms, None, r.gtin, r.qty, r.amount) for r in rows
    ]
    assert aggregate(unlinked, by, k=1).groups == ()


def test_the_default_floor_is_fifty_households() -> None:
    rows = [ItemRow(f"e{n}", "0042", WEEK0, f"c{n}", GTINS[0], 1000, 100) for n in range(49)]
    assert aggregate(rows, ["store"]).groups == ()
    rows.append(ItemRow("e49", "0042", WEEK0, "c49", GTINS[0], 1000, 100))
    [group] = aggregate(rows, ["store"]).groups
    assert (group.households, group.purchases, group.amount) == (50, 50, 5000)


@pytest.mark.parametrize(
    ("gtin", "form", "group"),
    [
        ("7610000000011", "7610000000011", "gs1-761"),
        ("4006381333931", "4006381333931", "gs1-400"),
        ("012345678905", "0012345678905", "gs1-001"),  # UPC-A
        ("96385074", "0000096385074", "gs1-8-963"),  # GTIN-8
        ("17612345678907", "7612345678907", "gs1-761"),  # GTIN-14: indicator dropped
    ],
)
def test_gtins_map_to_gs1_prefix_groups_by_default(gtin: str, form: str, group: str) -> None:
    assert gtin13(gtin) == form
    assert ProductGroups().group(gtin) == group


def test_a_mapping_file_wins_by_longest_prefix(tmp_path: Path) -> None:
    path = tmp_path / "groups.toml"
    path.write_text('[prefixes]\n"761" = "swiss"\n"76123" = "dairy"\n')
    groups = ProductGroups.load(path)
    assert groups.group("7612345678900") == "dairy"
    assert groups.group("7610000000011") == "swiss"
    assert groups.group("4006381333931") == "gs1-400"


@pytest.mark.parametrize(
    "text", ['[prefixes]\n"7a" = "x"\n', '[other]\n"1" = "x"\n', '[prefixes]\n"1" = 3\n', "x ="]
)
def test_bad_mapping_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "groups.toml"
    path.write_text(text)
    with pytest.raises(StatsError):
        ProductGroups.load(path)


def test_stats_over_each_backend_suppress_small_stores(storage: HqStore) -> None:
    purchases = [
        CrmPurchase(
            event_id=f"e{n}", occurred_ms=WEEK0 + n, occurred_at="2026-11-23T00:00:00.000Z",
            store="big" if n < 12 else "small", terminal="t", receipt=f"r{n}", currency="CHF",
            total=100, items=(CrmItem(0, GTINS[(n % 2) * 2], 1000, 100),),
            card=f"20990000000{n:02d}",
        )
        for n in range(15)
    ]  # fmt: skip
    storage.save_read(purchases, [])
    result = aggregate(storage.item_rows(WEEK0, WEEK0 + 86_400_000), ["store"], k=10)
    assert [(g.key, g.households) for g in result.groups] == [(("big",), 12)]
    assert result.suppressed == 1
    by_group = aggregate(storage.item_rows(WEEK0, WEEK0 + 86_400_000), ["store", "group"], k=10)
    assert by_group.groups == () and by_group.suppressed == 4  # 6+6 big, 2+1 small: all < 10
