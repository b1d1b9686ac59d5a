"""The embedded SQLite backend of `Storage` (default `<state-dir>/hq.db`).

Durability: WAL with `synchronous=FULL`, and every batch is one `BEGIN IMMEDIATE .. COMMIT`,
so when `ingest` returns, the envelopes and the `acked_through` they justify are on disk
together: an answer never acknowledges what a power cut could take back. `BEGIN IMMEDIATE`
also serializes writers (the server uses one thread; a CLI `enroll` on the side waits for
the lock, up to `busy_timeout`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.envelope import sig_kid
from hq.storage.base import (
    MAX_SEQ,
    AheadPurge,
    Decide,
    Enrolment,
    EnrolmentConflict,
    LoggedRejection,
    PurgeRange,
    StorageError,
    StoredEnvelope,
    StreamSnapshot,
    StreamState,
    StreamUpdate,
)

DB_NAME = "hq.db"
_IN_CHUNK = 500  # bound parameters per IN (...) list


class SchemaTooNew(StorageError):
    """The database was written by a newer HQ; refusing to guess at its schema."""


def _m001_initial(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE terminals (
            terminal    TEXT PRIMARY KEY,
            enrolled_at INTEGER NOT NULL
        );
        CREATE TABLE terminal_keys (
            terminal    TEXT NOT NULL REFERENCES terminals (terminal),
            sig_kid     TEXT NOT NULL,
            public_key  BLOB NOT NULL UNIQUE,
            enrolled_at INTEGER NOT NULL,
            PRIMARY KEY (terminal, sig_kid)
        );
        CREATE TABLE streams (
            terminal      TEXT NOT NULL,
            stream        BLOB NOT NULL,
            acked_through INTEGER NOT NULL,
            first_seen    INTEGER NOT NULL,
            updated_at    INTEGER NOT NULL,
            PRIMARY KEY (terminal, stream)
        );
        CREATE TABLE envelopes (
            terminal    TEXT NOT NULL,
            stream      BLOB NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            ts          INTEGER NOT NULL,
            prev        BLOB NOT NULL,
            hash        BLOB NOT NULL,
            body        BLOB NOT NULL,
            received_at INTEGER NOT NULL,
            chained     INTEGER NOT NULL,
            PRIMARY KEY (terminal, stream, seq)
        );
        CREATE INDEX envelopes_by_kind_ts ON envelopes (kind, ts);
        CREATE TABLE purges (
            terminal    TEXT NOT NULL,
            stream      BLOB NOT NULL,
            purge_seq   INTEGER NOT NULL,
            first_seq   INTEGER NOT NULL,
            last_seq    INTEGER NOT NULL,
            last_hash   BLOB NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (terminal, stream, purge_seq)
        );
        CREATE TABLE rejections (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            at       INTEGER NOT NULL,
            terminal TEXT NOT NULL,
            stream   BLOB NOT NULL,
            seq      INTEGER NOT NULL,
            code     TEXT NOT NULL,
            detail   TEXT NOT NULL,
            evidence BLOB
        );
        CREATE INDEX rejections_by_terminal ON rejections (terminal, stream, seq);
        """,
    )


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Statement by statement: `executescript` would COMMIT the migration's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = (
    ("initial", _m001_initial),
)


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(
            f"HQ database schema version {version} is newer than this HQ ({len(MIGRATIONS)})"
        )
    for number, (_name, step) in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _chunks(values: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


class SqliteStorage:
    """`Storage` over one SQLite file and one connection. Use from a single thread."""

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
            _migrate(self.conn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open HQ database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; SQLite failures become `StorageError` after ROLLBACK."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database busy or unwritable: {exc}") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT may have rolled back already
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"HQ database write failed: {exc}") from exc
            raise

    def _now(self) -> int:
        return int(self.clock())

    # --- terminal registry ---------------------------------------------------------------

    def enroll(self, terminal: str, public_key: bytes) -> Enrolment:
        kid = sig_kid(public_key)  # raises for anything but 32 bytes
        Ed25519PublicKey.from_public_bytes(public_key)  # ValueError if not a valid key
        with self._tx() as conn:
            owner = conn.execute(
                "SELECT terminal FROM terminal_keys WHERE public_key = ?", (public_key,)
            ).fetchone()
            if owner is not None and owner[0] != terminal:
                raise EnrolmentConflict(
                    f"key {kid} is already registered for terminal {owner[0]}; a signing key "
                    "belongs to one terminal"
                )
            if owner is not None:
                return Enrolment(terminal, kid, new=False)
            now = self._now()
            conn.execute(
                "INSERT OR IGNORE INTO terminals (terminal, enrolled_at) VALUES (?, ?)",
                (terminal, now),
            )
            conn.execute(
                "INSERT INTO terminal_keys (terminal, sig_kid, public_key, enrolled_at) "
                "VALUES (?, ?, ?, ?)",
                (terminal, kid, public_key, now),
            )
        return Enrolment(terminal, kid, new=True)

    def terminal_keys(self, terminal: str) -> dict[str, bytes] | None:
        try:
            known = self.conn.execute(
                "SELECT 1 FROM terminals WHERE terminal = ?", (terminal,)
            ).fetchone()
            if known is None:
                return None
            rows = self.conn.execute(
                "SELECT sig_kid, public_key FROM terminal_keys WHERE terminal = ?", (terminal,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database read failed: {exc}") from exc
        return {kid: bytes(key) for kid, key in rows}

    # --- ingest ----------------------------------------------------------------------------

    def _snapshot(
        self, conn: sqlite3.Connection, terminal: str, stream: bytes, wanted: Collection[int]
    ) -> StreamSnapshot:
        row = conn.execute(
            "SELECT acked_through FROM streams WHERE terminal = ? AND stream = ?",
            (terminal, stream),
        ).fetchone()
        acked = int(row[0]) if row else 0
        seqs = sorted({s for s in wanted if 0 < s <= MAX_SEQ} | {acked} - {0})
        hashes: dict[int, bytes] = {}
        for chunk in _chunks(seqs):
            marks = ",".join("?" * len(chunk))
            for seq, digest in conn.execute(
                "SELECT seq, hash FROM envelopes WHERE terminal = ? AND stream = ? "  # noqa: S608
                f"AND seq IN ({marks})",
                (terminal, stream, *chunk),
            ):
                hashes[seq] = bytes(digest)
        purges = tuple(
            PurgeRange(p, f, la, bytes(h))
            for p, f, la, h in conn.execute(
                "SELECT purge_seq, first_seq, last_seq, last_hash FROM purges "
                "WHERE terminal = ? AND stream = ? ORDER BY purge_seq",
                (terminal, stream),
            )
        )
        ahead = {
            seq: AheadPurge(seq, bytes(prev), bytes(digest))
            for seq, prev, digest in conn.execute(
                "SELECT seq, prev, hash FROM envelopes WHERE terminal = ? AND stream = ? "
                "AND chained = 0 AND seq > ?",
                (terminal, stream, acked),
            )
        }
        return StreamSnapshot(terminal, stream, acked, hashes, purges, ahead)

    def ingest(
        self, terminal: str, stream: bytes, wanted: Collection[int], decide: Decide
    ) -> StreamUpdate:
        with self._tx() as conn:
            snapshot = self._snapshot(conn, terminal, stream, wanted)
            update = decide(snapshot)
            if update.acked_through < snapshot.acked_through:
                raise AssertionError("acked_through must never move backwards")
            self._apply(conn, terminal, stream, snapshot, update)
        return update

    def _apply(
        self,
        conn: sqlite3.Connection,
        terminal: str,
        stream: bytes,
        snapshot: StreamSnapshot,
        update: StreamUpdate,
    ) -> None:
        now = self._now()
        conn.executemany(
            "INSERT INTO envelopes (terminal, stream, seq, kind, ts, prev, hash, body, "
            "received_at, chained) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    terminal,
                    stream,
                    e.seq,
                    e.kind,
                    min(e.ts, MAX_SEQ),  # ts is metadata here; the signed bytes keep it exact
                    e.prev,
                    e.hash,
                    e.body,
                    now,
                    int(e.chained),
                )
                for e in update.new_envelopes
            ],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO purges (terminal, stream, purge_seq, first_seq, last_seq, "
            "last_hash, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (terminal, stream, p.purge_seq, p.first_seq, p.last_seq, p.last_hash, now)
                for p in update.new_purges
            ],
        )
        conn.executemany(
            "UPDATE envelopes SET chained = 1 WHERE terminal = ? AND stream = ? AND seq = ?",
            [(terminal, stream, seq) for seq in update.chained],
        )
        removed: dict[int, bytes] = {}  # dropped ahead purges: their bytes become evidence
        for seq in update.dropped:
            for (body,) in conn.execute(
                "DELETE FROM envelopes WHERE terminal = ? AND stream = ? AND seq = ? "
                "AND chained = 0 RETURNING body",
                (terminal, stream, seq),
            ).fetchall():
                removed[seq] = bytes(body)
        conn.executemany(
            "INSERT INTO rejections (at, terminal, stream, seq, code, detail, evidence) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    now,
                    terminal,
                    stream,
                    r.seq,
                    r.code,
                    r.detail[:1000],
                    r.evidence if r.evidence is not None else removed.get(r.seq),
                )
                for r in update.rejections
            ],
        )
        if update.new_envelopes or update.new_purges or update.acked_through:
            conn.execute(
                "INSERT INTO streams (terminal, stream, acked_through, first_seen, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal, stream) DO UPDATE SET "
                "acked_through = excluded.acked_through, updated_at = excluded.updated_at",
                (terminal, stream, update.acked_through, now, now),
            )

    # --- reading ---------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"HQ database read failed: {exc}") from exc

    def acked_through(self, terminal: str, stream: bytes) -> int:
        rows = self._read(
            "SELECT acked_through FROM streams WHERE terminal = ? AND stream = ?",
            (terminal, stream),
        )
        return int(rows[0][0]) if rows else 0

    def stored_seqs(self, terminal: str, stream: bytes) -> list[int]:
        rows = self._read(
            "SELECT seq FROM envelopes WHERE terminal = ? AND stream = ? ORDER BY seq",
            (terminal, stream),
        )
        return [int(r[0]) for r in rows]

    def purges(self, terminal: str, stream: bytes) -> list[PurgeRange]:
        rows = self.conn.execute(
            "SELECT purge_seq, first_seq, last_seq, last_hash FROM purges "
            "WHERE terminal = ? AND stream = ? ORDER BY purge_seq",
            (terminal, stream),
        ).fetchall()
        return [PurgeRange(p, f, la, bytes(h)) for p, f, la, h in rows]

    def streams(self, terminal: str | None = None) -> list[StreamState]:
        rows = self.conn.execute(
            "SELECT s.terminal, s.stream, s.acked_through, "
            "(SELECT COUNT(*) FROM envelopes e WHERE e.terminal = s.terminal "
            " AND e.stream = s.stream) FROM streams s "
            "WHERE ?1 IS NULL OR s.terminal = ?1 ORDER BY s.terminal, s.first_seen",
            (terminal,),
        ).fetchall()
        return [StreamState(t, bytes(s), a, n) for t, s, a, n in rows]

    def envelopes(
        self, *, kind: str | None = None, since_ts: int | None = None
    ) -> Iterator[StoredEnvelope]:
        cursor = self.conn.execute(
            "SELECT terminal, stream, seq, kind, ts, hash, body, received_at FROM envelopes "
            "WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR ts >= ?2) "
            "ORDER BY terminal, stream, seq",
            (kind, since_ts),
        )
        for t, s, seq, k, ts, h, body, at in cursor:
            yield StoredEnvelope(t, bytes(s), seq, k, ts, bytes(h), bytes(body), at)

    def rejections(self, terminal: str | None = None) -> list[LoggedRejection]:
        rows = self.conn.execute(
            "SELECT at, terminal, stream, seq, code, detail, evidence FROM rejections "
            "WHERE ?1 IS NULL OR terminal = ?1 ORDER BY id",
            (terminal,),
        ).fetchall()
        return [
            LoggedRejection(at, t, bytes(s), seq, c, d, None if e is None else bytes(e))
            for at, t, s, seq, c, d, e in rows
        ]

    def ping(self) -> None:
        self._read("SELECT 1", ())
