"""Right of access: the export never shows anything older than 2 years (JSON and HTML)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hq.export import ACCESS_PERIOD, ExportError, export_card
from hq.periods import Period, epoch_ms, parse_rfc3339_ms
from hq.report_html import money, quantity, render_html
from hq.storage import CrmItem, CrmPurchase, HqStore, SqliteStorage
from tests.factories import HqKeyPair
from tests.hq.support import install_hq_key

CARD = "2099123456786"
OTHER = "2099000000019"
NOW = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)  # a leap day: 2 years back is 28 Feb 2026


def purchase(n: int, at: datetime, card: str | None = CARD) -> CrmPurchase:
    return CrmPurchase(
        event_id=f"evt-{n}",
        occurred_ms=epoch_ms(at),
        occurred_at=at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        store="0042",
        terminal="0042-07",
        receipt=f"R-<{n}>",  # escaped in HTML
        currency="CHF",
        total=1295,
        items=(CrmItem(0, "7612345678900", 1500, 1295),),
        card=card,
    )


@pytest.fixture
def state(tmp_path: Path, hq_keys: HqKeyPair) -> Path:
    install_hq_key(tmp_path / "hq-state", hq_keys)
    return tmp_path / "hq-state"


def exported_times(
    store: HqStore, state: Path, now: datetime, since: Period = ACCESS_PERIOD
) -> list[datetime]:
    doc = export_card(store, state, CARD, since, now=now).document()
    return [parse_rfc3339_ms(p["occurred_at"]) for p in doc["purchases"]]


def test_the_export_shows_the_last_two_years_only(storage: HqStore, state: Path) -> None:
    line = ACCESS_PERIOD.start(NOW)
    assert line == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    times = [line - timedelta(seconds=1), line, NOW - timedelta(days=1), NOW]
    storage.save_read([purchase(n, t) for n, t in enumerate(times)], [])
    storage.save_read([purchase(9, NOW, card=OTHER)], [])
    assert exported_times(storage, state, NOW) == times[1:]


def test_the_html_report_is_readable_escaped_and_within_two_years(
    storage: HqStore, state: Path
) -> None:
    storage.save_read([purchase(1, NOW - timedelta(days=800)), purchase(2, NOW)], [])
    report = export_card(storage, state, CARD, now=NOW)
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "2099*******86" in page
    assert CARD not in page  # shown masked: a forwarded page does not carry the number
    assert "R-&lt;2&gt;" in page and "R-<2>" not in page
    assert "R-&lt;1&gt;" not in page  # 800 days ago: not in the report
    assert "CHF 12.95" in page and "<script" not in page and "http" not in page
    years = {int(y) for y in re.findall(r"(20\d\d)-\d\d-\d\d \d\d:", page)}
    assert years == {2028}


@pytest.mark.parametrize("since", [Period(3, "y"), Period(25, "m"), Period(732, "d")])
def test_a_longer_period_is_refused(storage: HqStore, state: Path, since: Period) -> None:
    with pytest.raises(ExportError, match="right of access covers the last 2 years"):
        export_card(storage, state, CARD, since, now=NOW)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStorage]:
    with SqliteStorage(tmp_path_factory.mktemp("prop") / "hq.db") as s:
        yield s


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.lists(st.integers(min_value=-60, max_value=5 * 366 * 24), max_size=12),
    now_hours=st.integers(min_value=0, max_value=3 * 366 * 24),
    since=st.sampled_from([Period(2, "y"), Period(18, "m"), Period(30, "d"), Period(1, "w")]),
)
def test_no_export_ever_shows_anything_older_than_two_years(
    sqlite_store: SqliteStorage,
    tmp_path_factory: pytest.TempPathFactory,
    hq_keys: HqKeyPair,
    offsets: list[int],
    now_hours: int,
    since: Period,
) -> None:
    """Any purchases, any moment, any allowed period: every exported purchase occurred
    within the period (so within 2 years), and every linked one within it is exported."""
    state = tmp_path_factory.getbasetemp() / "prop-state"
    if not (state / "keys").exists():
        install_hq_key(state, hq_keys)
    sqlite_store.execute("DELETE FROM crm_items")
    sqlite_store.execute("DELETE FROM crm_purchases")
    now = NOW + timedelta(hours=now_hours)
    times = [now - timedelta(hours=h) for h in offsets]
    sqlite_store.save_read([purchase(n, t) for n, t in enumerate(times)], [])
    shown = exported_times(sqlite_store, state, now, since)
    assert all(ACCESS_PERIOD.start(now) <= t <= now for t in shown)
    assert shown == sorted(t for t in times if since.start(now) <= t <= now)


def test_amounts_and_quantities_read_like_a_receipt() -> None:
    assert money(1295, "CHF") == "CHF 12.95" and money(-5, "CHF") == "-CHF 0.05"
    assert quantity(1000) == "1" and quantity(1500) == "1.5" and quantity(250) == "0.25"
