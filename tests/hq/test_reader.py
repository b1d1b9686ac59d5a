"""The reader tier: stored envelopes decrypted into the CRM tables, on both backends."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.fsutil import UnsafePermissions
from hq import keys as key_files
from hq.export import MissingKey, load_reader_keys
from hq.ingest import ingest
from hq.reader import read_envelopes
from hq.storage import EnvelopeRef, HqStore
from tests.factories import HqKeyPair, hq_key_pair
from tests.hq.support import SealingTerminal, install_hq_key

CARD = "2099123456786"
DAY = 86_400
NOW = 1_790_000_000.0  # 2026-09-21


def fill(storage: HqStore, terminal: SealingTerminal) -> None:
    storage.enroll(terminal.terminal, terminal.public_raw)
    assert ingest(storage, terminal.bodies()).update.rejections == ()


def count(storage: HqStore, table: str) -> int:
    return int(storage.rows(f"SELECT COUNT(*) FROM {table}")[0][0])  # type: ignore[attr-defined]


def test_purchases_land_in_the_crm_tables_with_household_store_and_items(
    storage: HqStore, terminal: SealingTerminal, hq_keys: HqKeyPair, tmp_path: Path
) -> None:
    terminal.seal(card=CARD, at=NOW - 3 * DAY)
    terminal.seal(card=CARD, at=NOW - 2 * DAY)
    terminal.seal(2, at=NOW - DAY)  # two other households
    fill(storage, terminal)
    install_hq_key(tmp_path / "state", hq_keys)
    report = read_envelopes(storage, load_reader_keys(tmp_path / "state"))
    assert (report.opened, report.stored, report.unreadable) == (4, 4, 0)
    assert count(storage, "crm_households") == 3
    assert count(storage, "crm_stores") == 1
    assert count(storage, "crm_items") == 4
    [first, second] = storage.card_purchases(CARD, 0, int(NOW * 1000))
    assert first.occurred_ms < second.occurred_ms and first.card == CARD
    assert first.source == EnvelopeRef(terminal.terminal, terminal.stream, 1)
    assert first.enc_kid == hq_keys.kid and first.items[0].gtin.isdigit()


def test_reading_twice_stores_nothing_twice(
    storage: HqStore, terminal: SealingTerminal, hq_keys: HqKeyPair, tmp_path: Path
) -> None:
    terminal.seal(3, at=NOW)
    fill(storage, terminal)
    install_hq_key(tmp_path / "state", hq_keys)
    keys = load_reader_keys(tmp_path / "state")
    assert read_envelopes(storage, keys, page=2).stored == 3  # pages of 2
    again = read_envelopes(storage, keys)
    assert (again.opened, again.stored) == (0, 0)
    assert count(storage, "crm_purchases") == 3


def test_rotated_keys_are_read_side_by_side_and_a_missing_one_later(
    storage: HqStore, tmp_path: Path, hq_keys: HqKeyPair
) -> None:
    rotated = hq_key_pair(kid="hq-2027a")
    old = SealingTerminal.create(tmp_path / "a.db", hq_keys)
    new = SealingTerminal.create(tmp_path / "b.db", rotated, terminal="0042-08")
    old.seal(card=CARD, at=NOW)
    new.seal(card=CARD, at=NOW)
    for t in (old, new):
        fill(storage, t)
        t.close()
    state = tmp_path / "state"
    install_hq_key(state, hq_keys)
    first = read_envelopes(storage, load_reader_keys(state))
    assert first.stored == 1 and first.no_key == {"hq-2027a": 1}
    install_hq_key(state, rotated)  # the reader tier gets the new key: the rest is read
    second = read_envelopes(storage, load_reader_keys(state))
    assert second.stored == 1 and not second.no_key
    assert {p.enc_kid for p in storage.card_purchases(CARD, 0, int(NOW * 1000))} == {
        "hq-2026a",
        "hq-2027a",
    }


def test_an_envelope_that_does_not_decrypt_is_marked_and_not_retried(
    storage: HqStore, terminal: SealingTerminal, tmp_path: Path
) -> None:
    terminal.seal(1, at=NOW)
    fill(storage, terminal)
    impostor = hq_key_pair(kid=terminal.keys.enc_kid)  # same kid, other key
    install_hq_key(tmp_path / "state", impostor)
    keys = load_reader_keys(tmp_path / "state")
    assert read_envelopes(storage, keys).unreadable == 1
    assert read_envelopes(storage, keys).unreadable == 0
    assert count(storage, "crm_purchases") == 0


def test_private_keys_readable_by_others_are_refused(tmp_path: Path, hq_keys: HqKeyPair) -> None:
    path = install_hq_key(tmp_path, hq_keys)
    os.chmod(path, 0o644)
    with pytest.raises(UnsafePermissions):
        key_files.load(tmp_path, hq_keys.kid)
    with pytest.raises(MissingKey, match="must not be accessible"):
        load_reader_keys(tmp_path)


def test_the_reader_logs_no_card_number(
    storage: HqStore,
    terminal: SealingTerminal,
    hq_keys: HqKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminal.seal(card=CARD, at=NOW)
    fill(storage, terminal)
    install_hq_key(tmp_path / "state", hq_keys)
    with caplog.at_level(logging.DEBUG):
        read_envelopes(storage, load_reader_keys(tmp_path / "state"))
    assert caplog.text and CARD not in caplog.text
