"""CardRead (what drivers hand the agent) and ReaderStats (what they report)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from drivers.events import CardRead
from drivers.stats import ReaderState, ReaderStats
from tests.drivers.helpers import CARD, PRODUCT

AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def test_card_read_json_is_masked_unless_asked() -> None:
    read = CardRead("front", "serial", CARD, AT, "]E0")
    assert read.masked == "2099*******86"
    assert read.to_json() == {
        "reader": "front",
        "source": "serial",
        "card": "2099*******86",
        "at": "2026-03-01T09:30:15.123Z",
        "symbology": "]E0",
    }
    assert read.to_json(unmask=True)["card"] == CARD
    json.dumps(read.to_json())


def test_card_read_repr_never_shows_the_number() -> None:
    read = CardRead("front", "pcsc", CARD, AT)
    assert CARD not in repr(read)
    assert CARD not in str(read)
    assert "2099*******86" in repr(read)


@pytest.mark.parametrize("card", ["2099123456782", "209912345678", "abc", PRODUCT + "0"])
def test_card_read_refuses_what_is_not_a_card_number(card: str) -> None:
    with pytest.raises(ValueError, match="not a card number"):
        CardRead("front", "serial", card, AT)


def test_card_read_leaves_the_prefix_to_the_driver() -> None:
    assert CardRead("front", "serial", PRODUCT, AT).card == PRODUCT


@pytest.mark.parametrize(
    "at",
    [datetime(2026, 3, 1, 9, 30), datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))],
)
def test_card_read_time_must_be_utc(at: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        CardRead("front", "serial", CARD, at)


def test_card_read_source_is_serial_or_pcsc() -> None:
    with pytest.raises(ValueError, match="source"):
        CardRead("front", "usb", CARD, AT)  # type: ignore[arg-type]


def test_card_read_is_frozen() -> None:
    read = CardRead("front", "serial", CARD, AT)
    with pytest.raises(AttributeError):
        read.card = PRODUCT  # type: ignore[misc]


def test_stats_snapshot_is_plain_json() -> None:
    stats = ReaderStats()
    assert stats.state is ReaderState.CONNECTING
    stats.count_reject("bad-prefix")
    stats.count_reject("bad-prefix")
    stats.count_reject("noise")
    stats.count_good_read(AT)
    stats.set_state(ReaderState.ERROR, "permission denied")
    snapshot = stats.snapshot()
    assert snapshot == {
        "state": "error",
        "error_text": "permission denied",
        "good_reads": 1,
        "rejects": {"bad-prefix": 2, "noise": 1},
        "duplicates": 0,
        "comm_errors": 0,
        "reconnects": 0,
        "last_read_at": "2026-03-01T09:30:15.123Z",
        "bytes_in": 0,
    }
    assert stats.total_rejects == 3
    json.dumps(snapshot)


def test_stats_snapshot_is_a_copy() -> None:
    stats = ReaderStats()
    snapshot = stats.snapshot()
    stats.count_reject("noise")
    assert snapshot["rejects"] == {}
