"""The PostgreSQL backend: one connection per `cumulus-hq serve` process, many processes.

Why psycopg 3 (not asyncpg): `Storage` is a blocking interface run on the server's storage
thread, and every CLI job (reader, retention, export, stats) is synchronous; psycopg 3 is
synchronous first (asyncpg is asyncio-only and would need an event loop inside that thread),
speaks libpq, so every `postgresql://` URL, `PG*` variable, `.pgpass` and TLS option works as
DBAs expect, and ships typed wheels with libpq included (`psycopg[binary]`).

How several ingest processes stay exactly-once: each batch is one transaction that first
takes `pg_advisory_xact_lock` on a 64-bit key derived from `(terminal, stream)`. A second
process ingesting the same stream waits there until the first commits; its snapshot then
reads (READ COMMITTED: every statement sees what was committed before it began) the
envelopes and `acked_through` the first one wrote, so its resends are duplicates, never
second copies. The high-water mark is written in that same transaction. Why an advisory lock
rather than `SELECT … FOR UPDATE` on the `streams` row: the row does not exist before a
stream's first envelope, and creating it just to lock it would leave rows for streams that
never stored anything (junk batches from enrolled terminals). The primary keys remain the
last line of defence: a bug that tried to insert a seq twice fails the transaction (`503`,
the terminal retries) instead of storing a copy.

Commits are durable under the server's `synchronous_commit` (default `on`): an answer is
sent only after COMMIT returned. A broken connection (server restart) answers `503` once and
is reopened on the next request.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from hq.storage.base import StorageError
from hq.storage.crm import CrmSql
from hq.storage.redact import redact
from hq.storage.schema import MIGRATIONS, apply
from hq.storage.sql import IngestSql

#: `pg_advisory_lock` key held while migrating (any constant other instances share).
_MIGRATION_LOCK = 0x63756D756C7573  # "cumulus"
_STREAM_LOCK_DOMAIN = b"cumulus-hq stream lock\x00"
_CURSORS = itertools.count(1)  # server-side cursor names, unique per process


class SchemaTooNew(StorageError):
    """The database was migrated by a newer HQ; refusing to guess at its schema."""


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """The shared SQL's `?` placeholders as psycopg's `%s` (literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def stream_lock_key(terminal: str, stream: bytes) -> int:
    """A signed 64-bit key for `pg_advisory_xact_lock`; a collision only serializes two
    unrelated streams, it never merges their data."""
    digest = hashlib.sha256(_STREAM_LOCK_DOMAIN + terminal.encode() + b"\x00" + stream).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStorage(IngestSql, CrmSql):
    """`HqStore` over one psycopg connection (autocommit; explicit transactions)."""

    dialect = "postgresql"
    least = "LEAST"
    greatest = "GREATEST"

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout: int = 10,
    ) -> None:
        self.url = url
        self.display = redact(url)
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.conn = self._connect()
        self._migrate()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="cumulus-hq",
            )
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to HQ database {self.display}: {exc}") from exc

    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, reopened if the server dropped it since the last call."""
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()
        return self.conn

    def _migrate(self) -> None:
        conn = self._live()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        except psycopg.Error as exc:
            raise StorageError(f"HQ database {self.display}: {exc}") from exc
        try:
            self.execute("CREATE TABLE IF NOT EXISTS hq_schema (version INTEGER NOT NULL)")
            rows = self.rows("SELECT version FROM hq_schema")
            if not rows:
                self.execute("INSERT INTO hq_schema (version) VALUES (0)")
            version = int(rows[0][0]) if rows else 0
            if version > len(MIGRATIONS):
                raise SchemaTooNew(
                    f"HQ database schema version {version} is newer than this HQ "
                    f"({len(MIGRATIONS)})"
                )
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number <= version:
                    continue
                with self._tx():
                    apply(migration, self.dialect, self)
                    self.execute("UPDATE hq_schema SET version = ?", (number,))
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            except psycopg.Error:
                pass  # the connection is gone, and the session lock with it

    @property
    def schema_version(self) -> int:
        return int(self.rows("SELECT version FROM hq_schema")[0][0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PostgresStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- how statements run --------------------------------------------------------------

    def _failed(self, exc: psycopg.Error) -> StorageError:
        """Only the primary message: PostgreSQL's DETAIL line can quote a row's values (a
        card number in a constraint violation), and this text reaches logs and stderr."""
        primary = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
        text = primary or (str(exc).splitlines() or [type(exc).__name__])[0]
        return StorageError(f"HQ database {self.display} failed: {text}")

    @contextmanager
    def _tx(self, *, rollback: bool = False) -> Iterator[None]:
        conn = self._live()
        try:
            conn.execute("BEGIN")
        except psycopg.Error as exc:
            raise self._failed(exc) from exc
        try:
            yield
            conn.execute("ROLLBACK" if rollback else "COMMIT")
        except BaseException as exc:
            if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # the connection broke; `_live` reopens it next time
            if isinstance(exc, psycopg.Error):
                raise self._failed(exc) from exc
            raise

    def _lock_stream(self, terminal: str, stream: bytes) -> None:
        self.rows("SELECT pg_advisory_xact_lock(?::bigint)", (stream_lock_key(terminal, stream),))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._live().execute(to_pyformat(sql), params).rowcount
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        try:
            with self._live().cursor() as cur:
                cur.executemany(to_pyformat(sql), params)
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._live().execute(to_pyformat(sql), params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """A server-side cursor in its own read transaction: rows arrive 2,000 at a time."""
        conn = self._live()
        try:
            with conn.transaction(), conn.cursor(name=f"hq_iterate_{next(_CURSORS)}") as cur:
                cur.itersize = 2000
                cur.execute(to_pyformat(sql), params)
                yield from cur
        except psycopg.Error as exc:
            raise self._failed(exc) from exc
