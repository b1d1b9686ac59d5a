"""Statistics with a floor (`cumulus-hq stats`): no group smaller than k households is shown.

Why households, and why every group: a figure about a group of three households is a figure
about those three households. Each output group (a combination of the chosen dimensions:
store, ISO week, product group) counts the distinct household cards behind it; a group with
fewer than `k` (default 50) is left out entirely, never shown with a smaller number or a
"<50". Purchases already unlinked (older than 5 years) have no household; they add to the
figures of a group but never to its household count, so old data alone never passes the
floor. No totals or margins are printed: with them, one suppressed group could be computed
back from its visible siblings. Only the number of groups suppressed is reported.

`aggregate` is pure (rows in, groups out) so the floor is tested property-based;
`product_group` is the documented, deterministic GTIN → group rule (docs/hq.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hq.periods import from_ms
from hq.storage import ItemRow

DEFAULT_K = 50
MIN_K = 10  # the CLI refuses a lower floor: below it a group singles people out
DIMENSIONS = ("store", "week", "group")


class StatsError(ValueError):
    """The statistics cannot be computed as asked (bad dimension, k, mapping file)."""


# --- product groups -------------------------------------------------------------------------


def gtin13(gtin: str) -> str:
    """The 13-digit form of a GTIN-8/12/13/14: padded to 14 digits with zeros on the left,
    then the first (packaging indicator) digit dropped."""
    if not gtin.isdigit() or len(gtin) not in (8, 12, 13, 14):
        raise StatsError(f"not a GTIN: {gtin!r}")
    return gtin.zfill(14)[1:]


@dataclass(frozen=True, slots=True)
class ProductGroups:
    """GTIN → product group: the longest matching prefix of the 13-digit form in `prefixes`;
    without a match, the GS1 prefix: `gs1-` and its first 3 digits (`gs1-761` for
    7610000000011), or for a GTIN-8 `gs1-8-` and the first 3 of its 8 digits."""

    prefixes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for prefix, group in self.prefixes.items():
            if not prefix.isdigit() or not 1 <= len(prefix) <= 13:
                raise StatsError(f"product group prefix {prefix!r}: 1 to 13 digits")
            if not group or not group.isprintable():
                raise StatsError(f"product group for {prefix!r}: a non-empty name")

    def group(self, gtin: str) -> str:
        digits = gtin13(gtin)
        for length in range(min(13, max((len(p) for p in self.prefixes), default=0)), 0, -1):
            found = self.prefixes.get(digits[:length])
            if found is not None:
                return found
        if digits.startswith("00000"):
            return f"gs1-8-{digits[5:8]}"
        return f"gs1-{digits[:3]}"

    @classmethod
    def load(cls, path: Path) -> ProductGroups:
        """A TOML file with one table, `[prefixes]`: `"76123" = "dairy"`."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise StatsError(f"product groups {path}: {exc}") from None
        prefixes = data.get("prefixes", {})
        if set(data) - {"prefixes"} or not isinstance(prefixes, dict):
            raise StatsError(f"product groups {path}: expected only a [prefixes] table")
        if not all(isinstance(v, str) for v in prefixes.values()):
            raise StatsError(f"product groups {path}: every group name is a string")
        return cls(dict(prefixes))


# --- aggregation ----------------------------------------------------------------------------


def iso_week(ms: int) -> str:
    year, week, _ = from_ms(ms).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True, slots=True)
class Group:
    key: tuple[str, ...]
    households: int
    purchases: int
    quantity: int  # thousandths of a unit
    amount: int  # minor units

    def document(self, by: Sequence[str]) -> dict[str, object]:
        return {
            **dict(zip(by, self.key, strict=True)),
            "households": self.households,
            "purchases": self.purchases,
            "quantity": self.quantity / 1000,
            "amount": self.amount,
        }


@dataclass
class _Acc:
    cards: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    quantity: int = 0
    amount: int = 0


@dataclass(frozen=True, slots=True)
class StatsResult:
    by: tuple[str, ...]
    k: int
    groups: tuple[Group, ...]
    suppressed: int
    since: datetime | None = None
    until: datetime | None = None


def check_dimensions(by: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(by)
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown or not dims or len(set(dims)) != len(dims):
        raise StatsError(f"--by {','.join(dims)!r}: one or more of {', '.join(DIMENSIONS)}")
    return dims


def aggregate(
    rows: Iterable[ItemRow],
    by: Sequence[str],
    k: int = DEFAULT_K,
    groups: ProductGroups | None = None,
) -> StatsResult:
    """Group item rows by `by`; keep only groups with at least `k` distinct households."""
    dims = check_dimensions(by)
    if k < 1:
        raise StatsError("k must be at least 1")
    mapping = groups or ProductGroups()
    cells: dict[tuple[str, ...], _Acc] = {}
    for row in rows:
        values = {"store": row.store, "week": "", "group": ""}
        if "week" in dims:
            values["week"] = iso_week(row.occurred_ms)
        if "group" in dims:
            values["group"] = mapping.group(row.gtin)
        acc = cells.setdefault(tuple(values[d] for d in dims), _Acc())
        if row.card is not None:
            acc.cards.add(row.card)
        acc.events.add(row.event_id)
        acc.quantity += row.qty
        acc.amount += row.amount
    shown = tuple(
        Group(key, len(acc.cards), len(acc.events), acc.quantity, acc.amount)
        for key, acc in sorted(cells.items())
        if len(acc.cards) >= k
    )
    return StatsResult(dims, k, shown, suppressed=len(cells) - len(shown))
