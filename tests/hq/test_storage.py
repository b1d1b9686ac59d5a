"""Both backends: where they live, durability, registry, atomic batches, migrations.

Tests taking `storage` run on SQLite and on PostgreSQL (tests/hq/conftest.py).
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import sig_kid
from hq.storage import (
    EnrolmentConflict,
    HqStore,
    NewEnvelope,
    Rejection,
    SchemaTooNew,
    SqliteStorage,
    StorageError,
    StreamSnapshot,
    StreamUpdate,
    UnsupportedDatabase,
    open_storage,
    parse_db,
    redact,
    sqlite_path,
)
from hq.storage.postgres import PostgresStorage, stream_lock_key
from hq.storage.postgres import SchemaTooNew as PgSchemaTooNew
from hq.storage.schema import MIGRATIONS, statements
from tests.hq.support import SealingTerminal

STREAM = bytes(range(16))


def key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (None, "state/hq.db"),
        ("", "state/hq.db"),
        ("other.db", "other.db"),
        ("/var/lib/hq/x.db", "/var/lib/hq/x.db"),
        ("sqlite:///rel/x.db", "rel/x.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
    ],
)
def test_db_argument_names_a_sqlite_file(db: str | None, expected: str) -> None:
    assert sqlite_path(db, Path("state")) == Path(expected)


@pytest.mark.parametrize(
    "db", ["postgresql://hq@db.example/hq", "postgres://u:secret@10.0.0.1:5433/hq?sslmode=require"]
)
def test_postgresql_urls_select_the_postgresql_backend(db: str) -> None:
    target = parse_db(db, Path("state"))
    assert not target.is_sqlite and target.url == db
    assert "secret" not in str(target)


def test_passwords_never_appear_in_messages() -> None:
    assert redact("postgresql://hq:s3cret@db:5432/hq") == "postgresql://hq:***@db:5432/hq"
    assert redact("postgresql://db/hq") == "postgresql://db/hq"


@pytest.mark.parametrize(
    ("db", "match"),
    [
        ("mysql://hq@db/hq", "not supported yet"),
        ("sqlite://host/x.db", "sqlite:///relative"),
        ("sqlite:///", "sqlite:///relative"),
    ],
)
def test_other_database_urls_are_refused_clearly(db: str, match: str) -> None:
    with pytest.raises(UnsupportedDatabase, match=match):
        open_storage(db, Path("state"))


def test_database_uses_wal_and_full_sync_and_is_private(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path / "hq.db") as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        s.enroll("t", key())
        for name in ("hq.db", "hq.db-wal"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hq.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaTooNew):
        SqliteStorage(tmp_path / "hq.db")


def test_enrol_is_idempotent_and_a_terminal_can_hold_several_keys(
    storage: HqStore,
) -> None:
    first, second = key(), key()
    assert storage.terminal_keys("0042-07") is None
    assert storage.enroll("0042-07", first).new
    again = storage.enroll("0042-07", first)
    assert not again.new and again.sig_kid == sig_kid(first)
    storage.enroll("0042-07", second)
    assert storage.terminal_keys("0042-07") == {sig_kid(first): first, sig_kid(second): second}


def test_a_key_belongs_to_one_terminal(storage: HqStore) -> None:
    k = key()
    storage.enroll("0042-07", k)
    with pytest.raises(EnrolmentConflict, match="already registered for terminal 0042-07"):
        storage.enroll("0042-08", k)
    assert storage.terminal_keys("0042-08") is None


def _env(seq: int) -> NewEnvelope:
    return NewEnvelope(seq, "purchase", 1, bytes(32), bytes([seq]) * 32, b"body", chained=True)


def test_envelopes_and_acked_through_commit_together(storage: HqStore) -> None:
    storage.ingest("t", STREAM, [1], lambda snap: StreamUpdate(1, (_env(1),)))
    assert storage.acked_through("t", STREAM) == 1

    def broken(snap: StreamSnapshot) -> StreamUpdate:  # seq 1 again: the insert fails
        return StreamUpdate(2, (_env(2), _env(1)))

    with pytest.raises(StorageError):
        storage.ingest("t", STREAM, [1, 2], broken)
    assert storage.acked_through("t", STREAM) == 1
    assert storage.stored_seqs("t", STREAM) == [1]


def test_acked_through_never_moves_backwards(storage: HqStore) -> None:
    storage.ingest("t", STREAM, [1], lambda snap: StreamUpdate(1, (_env(1),)))
    with pytest.raises(AssertionError):
        storage.ingest("t", STREAM, [], lambda snap: StreamUpdate(0))
    assert storage.acked_through("t", STREAM) == 1


def test_snapshot_holds_the_hash_at_acked_through_and_the_asked_seqs(
    storage: HqStore,
) -> None:
    storage.ingest("t", STREAM, [], lambda s: StreamUpdate(3, tuple(_env(n) for n in (1, 2, 3))))
    seen: list[StreamSnapshot] = []

    def look(snap: StreamSnapshot) -> StreamUpdate:
        seen.append(snap)
        return StreamUpdate(snap.acked_through)

    storage.ingest("t", STREAM, [1, 9], look)
    assert seen[0].acked_through == 3
    assert set(seen[0].hashes) == {1, 3}


def test_rejections_are_logged_without_creating_a_stream(storage: HqStore) -> None:
    update = StreamUpdate(0, rejections=(Rejection(5, "gap", "expected seq 1 next"),))
    storage.ingest("t", STREAM, [5], lambda snap: update)
    [logged] = storage.rejections("t")
    assert (logged.seq, logged.code, logged.evidence) == (5, "gap", None)
    assert storage.streams() == []


def test_a_newer_postgresql_schema_is_refused(pg_url: str) -> None:
    with PostgresStorage(pg_url) as s:
        assert s.schema_version == len(MIGRATIONS)
        s.execute("UPDATE hq_schema SET version = 99")
    with pytest.raises(PgSchemaTooNew):
        PostgresStorage(pg_url)


def test_migrating_twice_changes_nothing(db_url: str, tmp_path: Path) -> None:
    with open_storage(db_url, tmp_path) as first:
        first.enroll("t", key())
    with open_storage(db_url, tmp_path) as again:
        assert again.terminal_keys("t") is not None


def test_a_sqlite_database_of_the_first_schema_is_migrated_with_its_envelopes(
    tmp_path: Path, terminal: SealingTerminal
) -> None:
    """Databases written before the reader tier existed keep working: enc_kid back-filled."""
    conn = sqlite3.connect(tmp_path / "hq.db", isolation_level=None)
    for statement in statements(MIGRATIONS[0].steps[0], "sqlite"):  # type: ignore[arg-type]
        conn.execute(statement)
    terminal.seal(2)
    for n, body in enumerate(terminal.bodies(), start=1):
        conn.execute(
            "INSERT INTO envelopes VALUES (?, ?, ?, 'purchase', 1, ?, ?, ?, 1, 1)",
            (terminal.terminal, terminal.stream, n, bytes(32), bytes([n]) * 32, body),
        )
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with SqliteStorage(tmp_path / "hq.db") as s:
        assert s.schema_version == len(MIGRATIONS)
        assert s.envelope_kids() == {terminal.keys.enc_kid: 2}
        assert len(list(s.envelopes())) == 2


def test_postgresql_reconnects_after_the_connection_is_lost(pg_url: str) -> None:
    with PostgresStorage(pg_url) as s:
        s.enroll("t", key())
        s.conn.close()  # e.g. the server restarted under us
        assert s.terminal_keys("t") is not None


def test_stream_lock_keys_are_signed_64_bit_and_distinct() -> None:
    a, b = stream_lock_key("0042-07", STREAM), stream_lock_key("0042-08", STREAM)
    assert a != b and all(-(1 << 63) <= k < (1 << 63) for k in (a, b))


def test_database_errors_never_quote_a_card_number(storage: HqStore) -> None:
    """A constraint violation's DETAIL can quote the row; HQ's message keeps the first line."""
    with pytest.raises(StorageError) as failure:
        storage.execute(  # type: ignore[attr-defined]
            "INSERT INTO crm_purchases (event_id, card, occurred_ms, occurred_at, store, "
            "terminal, receipt, currency, total, read_at) "
            "VALUES ('e', '2099123456786', 1, 'x', 'no-such-store', 't', 'r', 'CHF', 1, 1)"
        )
    assert "2099123456786" not in str(failure.value)
