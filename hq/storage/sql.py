"""The ingest tier's SQL, written once for both backends (`SqlBase` + `IngestSql`).

Why shared: SQLite and PostgreSQL must behave identically at the ingest tier (the same
snapshot, the same atomic apply), and two copies of this code would drift. The SQL here is
the common subset of both dialects (`?` placeholders, which the PostgreSQL backend rewrites;
`ON CONFLICT`; `RETURNING`; row values). A backend supplies the connection, the transaction
(`_tx`), how statements run (`execute`, `executemany`, `rows`, `iterate`), its errors mapped
to `StorageError`, and `_lock_stream`, the point where writers of one stream serialize.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
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
    StoredEnvelope,
    StreamSnapshot,
    StreamState,
    StreamUpdate,
)
from hq.storage.schema import Executor

IN_CHUNK = 500  # bound parameters per IN (...) list


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(n: int) -> str:
    return ",".join("?" * n)


class SqlBase(Executor):
    """What the shared SQL needs from a backend (see module doc)."""

    dialect: str
    clock: Callable[[], float]
    least = "MIN"  # the scalar two-argument minimum and maximum of the dialect
    greatest = "MAX"

    def _tx(self, *, rollback: bool = False) -> AbstractContextManager[None]:
        """One write transaction: COMMIT at the end (ROLLBACK with `rollback`, or on error).
        Writers of the whole database (SQLite) or of one stream (PostgreSQL, after
        `_lock_stream`) are serialized by it."""
        raise NotImplementedError  # pragma: no cover

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError  # pragma: no cover

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows one at a time, without loading them all (exports, statistics)."""
        raise NotImplementedError  # pragma: no cover

    def _lock_stream(self, terminal: str, stream: bytes) -> None:
        """Inside `_tx`: wait until no other transaction writes this stream."""

    def _now(self) -> int:
        return int(self.clock())


class IngestSql(SqlBase):
    """Terminal registry, the one write path (`ingest`) and the reading side of `Storage`."""

    # --- terminal registry ---------------------------------------------------------------

    def enroll(self, terminal: str, public_key: bytes) -> Enrolment:
        kid = sig_kid(public_key)  # raises for anything but 32 bytes
        Ed25519PublicKey.from_public_bytes(public_key)  # ValueError if not a valid key
        with self._tx():
            owner = self.rows(
                "SELECT terminal FROM terminal_keys WHERE public_key = ?", (public_key,)
            )
            if owner and owner[0][0] != terminal:
                raise EnrolmentConflict(
                    f"key {kid} is already registered for terminal {owner[0][0]}; a signing "
                    "key belongs to one terminal"
                )
            if owner:
                return Enrolment(terminal, kid, new=False)
            now = self._now()
            self.execute(
                "INSERT INTO terminals (terminal, enrolled_at) VALUES (?, ?) "
                "ON CONFLICT (terminal) DO NOTHING",
                (terminal, now),
            )
            self.execute(
                "INSERT INTO terminal_keys (terminal, sig_kid, public_key, enrolled_at) "
                "VALUES (?, ?, ?, ?)",
                (terminal, kid, public_key, now),
            )
        return Enrolment(terminal, kid, new=True)

    def terminal_keys(self, terminal: str) -> dict[str, bytes] | None:
        if not self.rows("SELECT 1 FROM terminals WHERE terminal = ?", (terminal,)):
            return None
        rows = self.rows(
            "SELECT sig_kid, public_key FROM terminal_keys WHERE terminal = ?", (terminal,)
        )
        return {kid: bytes(key) for kid, key in rows}

    # --- ingest ----------------------------------------------------------------------------

    def _snapshot(self, terminal: str, stream: bytes, wanted: Collection[int]) -> StreamSnapshot:
        row = self.rows(
            "SELECT acked_through FROM streams WHERE terminal = ? AND stream = ?",
            (terminal, stream),
        )
        acked = int(row[0][0]) if row else 0
        seqs = sorted({s for s in wanted if 0 < s <= MAX_SEQ} | {acked} - {0})
        hashes: dict[int, bytes] = {}
        for chunk in chunks(seqs):
            for seq, digest in self.rows(
                "SELECT seq, hash FROM envelopes WHERE terminal = ? AND stream = ? "  # noqa: S608
                f"AND seq IN ({marks(len(chunk))})",
                (terminal, stream, *chunk),
            ):
                hashes[int(seq)] = bytes(digest)
        purges = tuple(
            PurgeRange(p, f, la, bytes(h))
            for p, f, la, h in self.rows(
                "SELECT purge_seq, first_seq, last_seq, last_hash FROM purges "
                "WHERE terminal = ? AND stream = ? ORDER BY purge_seq",
                (terminal, stream),
            )
        )
        ahead = {
            int(seq): AheadPurge(int(seq), bytes(prev), bytes(digest))
            for seq, prev, digest in self.rows(
                "SELECT seq, prev, hash FROM envelopes WHERE terminal = ? AND stream = ? "
                "AND chained = 0 AND seq > ?",
                (terminal, stream, acked),
            )
        }
        return StreamSnapshot(terminal, stream, acked, hashes, purges, ahead)

    def ingest(
        self, terminal: str, stream: bytes, wanted: Collection[int], decide: Decide
    ) -> StreamUpdate:
        with self._tx():
            self._lock_stream(terminal, stream)
            snapshot = self._snapshot(terminal, stream, wanted)
            update = decide(snapshot)
            if update.acked_through < snapshot.acked_through:
                raise AssertionError("acked_through must never move backwards")
            self._apply(terminal, stream, update)
        return update

    def _apply(self, terminal: str, stream: bytes, update: StreamUpdate) -> None:
        now = self._now()
        if update.new_envelopes:
            self.executemany(
                "INSERT INTO envelopes (terminal, stream, seq, kind, ts, prev, hash, body, "
                "received_at, chained, enc_kid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        terminal,
                        stream,
                        e.seq,
                        e.kind,
                        min(e.ts, MAX_SEQ),  # ts is metadata here; the signed bytes keep it
                        e.prev,
                        e.hash,
                        e.body,
                        now,
                        int(e.chained),
                        e.enc_kid,
                    )
                    for e in update.new_envelopes
                ],
            )
        if update.new_purges:
            self.executemany(
                "INSERT INTO purges (terminal, stream, purge_seq, first_seq, last_seq, "
                "last_hash, received_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (terminal, stream, purge_seq) DO UPDATE SET "
                "first_seq = excluded.first_seq, last_seq = excluded.last_seq, "
                "last_hash = excluded.last_hash, received_at = excluded.received_at",
                [
                    (terminal, stream, p.purge_seq, p.first_seq, p.last_seq, p.last_hash, now)
                    for p in update.new_purges
                ],
            )
        if update.chained:
            self.executemany(
                "UPDATE envelopes SET chained = 1 WHERE terminal = ? AND stream = ? AND seq = ?",
                [(terminal, stream, seq) for seq in update.chained],
            )
        removed: dict[int, bytes] = {}  # dropped ahead purges: their bytes become evidence
        for seq in update.dropped:
            for (body,) in self.rows(
                "DELETE FROM envelopes WHERE terminal = ? AND stream = ? AND seq = ? "
                "AND chained = 0 RETURNING body",
                (terminal, stream, seq),
            ):
                removed[seq] = bytes(body)
        if update.rejections:
            self.executemany(
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
            self.execute(
                "INSERT INTO streams (terminal, stream, acked_through, first_seen, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal, stream) DO UPDATE SET "
                "acked_through = excluded.acked_through, updated_at = excluded.updated_at",
                (terminal, stream, update.acked_through, now, now),
            )

    # --- reading ---------------------------------------------------------------------------

    def acked_through(self, terminal: str, stream: bytes) -> int:
        rows = self.rows(
            "SELECT acked_through FROM streams WHERE terminal = ? AND stream = ?",
            (terminal, stream),
        )
        return int(rows[0][0]) if rows else 0

    def stored_seqs(self, terminal: str, stream: bytes) -> list[int]:
        rows = self.rows(
            "SELECT seq FROM envelopes WHERE terminal = ? AND stream = ? ORDER BY seq",
            (terminal, stream),
        )
        return [int(r[0]) for r in rows]

    def purges(self, terminal: str, stream: bytes) -> list[PurgeRange]:
        rows = self.rows(
            "SELECT purge_seq, first_seq, last_seq, last_hash FROM purges "
            "WHERE terminal = ? AND stream = ? ORDER BY purge_seq",
            (terminal, stream),
        )
        return [PurgeRange(p, f, la, bytes(h)) for p, f, la, h in rows]

    def streams(self, terminal: str | None = None) -> list[StreamState]:
        where, params = ("WHERE s.terminal = ? ", (terminal,)) if terminal is not None else ("", ())
        rows = self.rows(
            "SELECT s.terminal, s.stream, s.acked_through, "  # noqa: S608
            "(SELECT COUNT(*) FROM envelopes e WHERE e.terminal = s.terminal "
            f" AND e.stream = s.stream) FROM streams s {where}"
            "ORDER BY s.terminal, s.first_seen, s.stream",
            params,
        )
        return [StreamState(t, bytes(s), int(a), int(n)) for t, s, a, n in rows]

    def envelopes(
        self, *, kind: str | None = None, since_ts: int | None = None
    ) -> Iterator[StoredEnvelope]:
        conditions, params = ["length(body) > 0"], list[object]()
        if kind is not None:
            conditions.append("kind = ?")
            params.append(kind)
        if since_ts is not None:
            conditions.append("ts >= ?")
            params.append(since_ts)
        for t, s, seq, k, ts, h, body, at in self.iterate(
            "SELECT terminal, stream, seq, kind, ts, hash, body, received_at "  # noqa: S608
            f"FROM envelopes WHERE {' AND '.join(conditions)} ORDER BY terminal, stream, seq",
            params,
        ):
            yield StoredEnvelope(t, bytes(s), int(seq), k, int(ts), bytes(h), bytes(body), at)

    def rejections(self, terminal: str | None = None) -> list[LoggedRejection]:
        where, params = ("WHERE terminal = ? ", (terminal,)) if terminal is not None else ("", ())
        rows = self.rows(
            "SELECT at, terminal, stream, seq, code, detail, evidence "  # noqa: S608
            f"FROM rejections {where}ORDER BY id",
            params,
        )
        return [
            LoggedRejection(at, t, bytes(s), seq, c, d, None if e is None else bytes(e))
            for at, t, s, seq, c, d, e in rows
        ]

    def ping(self) -> None:
        self.rows("SELECT 1")
