"""The embedded SQLite backend (default `<state-dir>/hq.db`): one file, one connection.

Durability: WAL with `synchronous=FULL`, and every batch is one `BEGIN IMMEDIATE .. COMMIT`,
so when `ingest` returns, the envelopes and the `acked_through` they justify are on disk
together: an answer never acknowledges what a power cut could take back. `BEGIN IMMEDIATE`
also serializes writers: several `cumulus-hq serve` processes on one host may share the
file (each waits for the lock, up to `busy_timeout`), as may a CLI `enroll` on the side.
The SQL itself is shared with PostgreSQL (`hq.storage.sql`, `hq.storage.crm`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hq.storage.base import StorageError
from hq.storage.crm import CrmSql
from hq.storage.schema import MIGRATIONS, apply
from hq.storage.sql import IngestSql

DB_NAME = "hq.db"


class SchemaTooNew(StorageError):
    """The database was written by a newer HQ; refusing to guess at its schema."""


class SqliteStorage(IngestSql, CrmSql):
    """`HqStore` over one SQLite file and one connection. Use from a single thread."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite's -wal/-shm follow
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open HQ database {path}: {exc}") from exc

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaTooNew(
                f"HQ database schema version {version} is newer than this HQ ({len(MIGRATIONS)})"
            )
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            with self._tx():
                apply(migration, self.dialect, self)
                self.conn.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- how statements run --------------------------------------------------------------

    @contextmanager
    def _tx(self, *, rollback: bool = False) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database busy or unwritable: {exc}") from exc
        try:
            yield
            self.conn.execute("ROLLBACK" if rollback else "COMMIT")
        except BaseException as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT may have rolled back already
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"HQ database write failed: {exc}") from exc
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database write failed: {exc}") from exc

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database write failed: {exc}") from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database read failed: {exc}") from exc

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        try:
            yield from self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database read failed: {exc}") from exc
