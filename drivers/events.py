"""`CardRead`: what every reader driver (serial, PC/SC) hands to the agent.

A CardRead only exists for a validated card number: it is built after `drivers.cards` has
checked the rules, and it re-checks the structure (13 digits, check digit) when built, so no
code path can hand the session a malformed number. Prefixes are configuration and are
checked by the driver. Its ``repr`` masks the number, so logging one by mistake leaks nothing;
``to_json`` masks unless asked (``readers watch --unmask``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from drivers.cards import check_card, mask

Source = Literal["serial", "pcsc"]
_SOURCES = ("serial", "pcsc")


@dataclass(frozen=True, slots=True)
class CardRead:
    """One card read by one reader at one instant (UTC)."""

    reader: str
    source: Source
    card: str
    at: datetime
    symbology: str | None = None

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, not {self.source!r}")
        if self.at.tzinfo is None or self.at.utcoffset() != timedelta(0):
            raise ValueError("CardRead.at must be an aware datetime in UTC")
        # Any prefix passes here: prefixes are configuration, checked by the driver.
        reason = check_card(self.card, prefixes=None)
        if reason is not None:
            raise ValueError(f"CardRead.card is not a card number ({reason})")

    @property
    def masked(self) -> str:
        """The number as it may be shown outside the encrypted payload: ``2099*******82``."""
        return mask(self.card)

    def __repr__(self) -> str:
        return (
            f"CardRead(reader={self.reader!r}, source={self.source!r}, card={self.masked!r}, "
            f"at={self.at.isoformat()!r}, symbology={self.symbology!r})"
        )

    __str__ = __repr__

    def to_json(self, *, unmask: bool = False) -> dict[str, str | None]:
        """A JSON-ready mapping: reader, source, card (masked unless ``unmask``), at (ISO-8601,
        UTC, ``Z``), symbology (AIM identifier or null)."""
        return {
            "reader": self.reader,
            "source": self.source,
            "card": self.card if unmask else self.masked,
            "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "symbology": self.symbology,
        }
