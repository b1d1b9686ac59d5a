"""Periods of time as people state them ("2y", "18m", "30d"), on the calendar, in UTC.

Why calendar arithmetic: the promises are "5 years", "10 years", "the last 2 years"; a year
of 365 days would drift by a day every leap year and make the DPO's dates wrong. A period
ending on 29 February starts on 28 February (`2y` before 2028-02-29 is 2026-02-28).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_PERIOD_RE = re.compile(r"(\d{1,4})([ymwd])")
_UNIT_NAMES = {"y": "year", "m": "month", "w": "week", "d": "day"}


class PeriodError(ValueError):
    """Not a period (a number and y, m, w or d)."""


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """How far back: `2y`, `18m`, `6w`, `30d` (calendar years and months)."""

    amount: int
    unit: str

    def start(self, now: datetime) -> datetime:
        """The instant `self` before `now`."""
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

    def covers_at_most(self, other: Period, now: datetime) -> bool:
        """True when this period reaches no further back from `now` than `other`."""
        return self.start(now) >= other.start(now)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def describe(self) -> str:
        name = _UNIT_NAMES[self.unit]
        return f"{self.amount} {name}{'' if self.amount == 1 else 's'}"


def parse_period(text: str, *, what: str = "--since") -> Period:
    m = _PERIOD_RE.fullmatch(text.strip().lower())
    if not m:
        raise PeriodError(f"{what} {text!r}: expected a number and y, m, w or d (2y, 18m, 30d)")
    return Period(int(m.group(1)), m.group(2))


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_rfc3339_ms(text: str) -> datetime:
    """The payload's `occurred_at` (RFC 3339 UTC with milliseconds)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
