"""The outbox: sealed envelopes waiting for HQ, durable before anyone is told "recorded".

Guarantees (each tested):
- Sealing allocates `seq` and `prev` and inserts the envelope in ONE transaction; the call
  returns only after COMMIT with WAL and `synchronous=FULL`, so a seq reported to the POS
  survives a power cut or SIGKILL. Seqs are contiguous from 1 and never reused.
- Only ciphertext is stored: the payload is encrypted to HQ before it touches the database.
- `ack(n)` deletes exactly the envelopes with seq <= n, and only when n is a seq we made.
- Past the size cap, new purchases are refused with `OutboxFull`; nothing old is dropped
  except by a purge that leaves a signed `purge` envelope explaining the gap to HQ.

This class is blocking and single-threaded (one sqlite3 connection); `agent.outbox.aio` runs
it on a dedicated thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import audit
from agent.envelope import (
    ConsentStatsPayload,
    Header,
    Payload,
    PurchasePayload,
    Purged,
    PurgePayload,
    decode,
    envelope_hash,
    seal,
    sig_kid,
)
from agent.envelope.suites import PublicKey, load_public_key
from agent.outbox.db import (
    OutboxError,
    OutboxLocked,
    OutboxStatus,
    OutboxUnavailable,
    _writer_lock,
    connect,
    read_status,
)
from agent.outbox.schema import migrate

__all__ = [
    "OutboxError",
    "OutboxLocked",
    "OutboxStatus",
    "OutboxUnavailable",
    "connect",
    "read_status",
]

DB_NAME = "agent.db"
Outcome = Literal["record", "skip", "timeout"]


class OutboxFull(OutboxError):
    """The size cap is reached: new purchases are refused until HQ acknowledges some."""


class AckOutOfRange(OutboxError):
    """HQ acknowledged a seq this outbox never made: a fork or a confused HQ; nothing deleted."""


@dataclass(frozen=True, slots=True)
class SealingKeys:
    """What sealing needs: this terminal's identity and signing key, and HQ's public key."""

    terminal: str
    signing_key: Ed25519PrivateKey
    enc_kid: str
    enc_suite: str
    hq_public: PublicKey
    sig_kid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sig_kid", sig_kid(self.signing_key.public_key()))

    @classmethod
    def build(
        cls,
        terminal: str,
        signing_key: Ed25519PrivateKey,
        enc_kid: str,
        enc_suite: str,
        hq_public_raw: bytes,
    ) -> SealingKeys:
        return cls(
            terminal, signing_key, enc_kid, enc_suite, load_public_key(enc_suite, hq_public_raw)
        )


@dataclass(frozen=True, slots=True)
class Sealed:
    seq: int
    kind: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    seq: int
    kind: str
    ts: int
    body: bytes


class Outbox:
    """Blocking outbox over one SQLite file. Use from a single thread."""

    def __init__(
        self,
        path: Path,
        keys: SealingKeys | None,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.keys = keys
        self.max_bytes = max_bytes
        self.clock = clock
        self._lock_fd: int | None = None
        if keys is not None:
            self._lock_fd = _writer_lock(path)
        try:
            self.conn = connect(path)
            migrate(self.conn)
        except sqlite3.Error as exc:
            self.close_lock()
            raise OutboxUnavailable(f"cannot open outbox {path}: {exc}") from exc
        self.stream: bytes = bytes(
            self.conn.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()[0]
        )
        self._load_head()

    def _load_head(self) -> None:
        """(Re)read the chain head and the bytes waiting: at open, and after a failed write.

        The head is the last envelope still stored or, when HQ has acknowledged them all, the
        copy in the `head` row that `ack` and `purge` keep. Held in memory so that sealing a
        purchase is a single INSERT: this process is the stream's only writer, and the seq
        primary key turns any second writer's collision into an error, never a fork.
        """
        last_seq, last_hash = self.conn.execute(
            "SELECT last_seq, last_hash FROM head WHERE one = 1"
        ).fetchone()
        row = self.conn.execute(
            "SELECT seq, hash FROM envelopes ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None and row[0] > last_seq:
            last_seq, last_hash = row
        self._head: tuple[int, bytes] = (last_seq, bytes(last_hash))
        self._unsent: int = self.conn.execute(
            "SELECT COALESCE(SUM(length(body)), 0) FROM envelopes"
        ).fetchone()[0]

    def close(self) -> None:
        self.conn.close()
        self.close_lock()

    def close_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ---------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; any SQLite failure becomes `OutboxUnavailable`."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxUnavailable(f"outbox cannot start a write: {exc}") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the failed COMMIT may already have rolled back
            self._reload_after_failure()
            if isinstance(exc, sqlite3.Error):
                raise OutboxUnavailable(f"outbox write failed: {exc}") from exc
            raise

    @property
    def last_seq(self) -> int:
        """The newest seq this stream has made (committed)."""
        return self._head[0]

    def _reload_after_failure(self) -> None:
        try:
            self._load_head()
        except sqlite3.Error:
            pass  # still broken: the next write fails again and says so

    def _persist_head(self, conn: sqlite3.Connection) -> None:
        """Copy the in-memory head to the `head` row before envelopes are deleted."""
        conn.execute(
            "UPDATE head SET last_seq = ?, last_hash = ? WHERE one = 1",
            (self._head[0], self._head[1]),
        )

    def _require_keys(self) -> SealingKeys:
        if self.keys is None:
            raise OutboxError("this outbox was opened without sealing keys (read/ack only)")
        return self.keys

    def _append(
        self,
        conn: sqlite3.Connection,
        payload: Payload,
        *,
        purged: Purged | None = None,
        enforce_cap: bool,
    ) -> Sealed:
        """Seal `payload` as the next envelope of the stream, inside the caller's transaction."""
        keys = self._require_keys()
        last_seq, last_hash = self._head
        header = Header(
            terminal=keys.terminal,
            stream=self.stream,
            seq=last_seq + 1,
            kind=payload.kind,
            ts=int(self.clock()),
            prev=last_hash,
            sig_kid=keys.sig_kid,
            enc_kid=keys.enc_kid,
            purged=purged,
        )
        body = seal(
            header,
            payload,
            signing_key=keys.signing_key,
            suite_name=keys.enc_suite,
            hq_key=keys.hq_public,
        )
        if enforce_cap and self._unsent + len(body) > self.max_bytes:
            raise OutboxFull(
                f"outbox holds {self._unsent} bytes, cap {self.max_bytes}: recording paused "
                "until HQ acknowledges"
            )
        digest = envelope_hash(body)
        conn.execute(
            "INSERT INTO envelopes (seq, kind, ts, hash, body) VALUES (?, ?, ?, ?, ?)",
            (header.seq, header.kind, header.ts, digest, body),
        )
        # Optimistic: a failed COMMIT reloads both from the database (_tx).
        self._head = (header.seq, digest)
        self._unsent += len(body)
        return Sealed(header.seq, header.kind, len(body))

    # --- sealing ----------------------------------------------------------------------------

    def seal_purchase(self, payload: PurchasePayload) -> Sealed:
        """Seal and commit one recorded purchase; return only once it is durable.

        The INSERT runs in autocommit mode: one statement is one transaction (seq, prev and
        the row commit together, fsync'd), with no BEGIN/COMMIT round trips on the hot path.
        """
        try:
            return self._append(self.conn, payload, enforce_cap=True)
        except sqlite3.Error as exc:
            self._reload_after_failure()
            raise OutboxUnavailable(f"outbox write failed: {exc}") from exc

    def count_decision(self, outcome: Outcome, day: date) -> None:
        """Count a cashier decision for the day's consent-stats (no card, no basket)."""
        if outcome not in ("record", "skip", "timeout"):
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO consent_counters (day, {outcome}) VALUES (?, 1) "  # noqa: S608
                f"ON CONFLICT(day) DO UPDATE SET {outcome} = {outcome} + 1",
                (day.isoformat(),),
            )

    def seal_consent_stats(self, before: date) -> list[Sealed]:
        """Seal one consent-stats envelope for every finished day (< `before`) not yet sealed."""
        out: list[Sealed] = []
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT day, record, skip, timeout FROM consent_counters "
                "WHERE sealed_seq IS NULL AND day < ? ORDER BY day",
                (before.isoformat(),),
            ).fetchall()
            for day, rec, skip, timeout in rows:
                sealed = self._append(
                    conn, ConsentStatsPayload(day, rec, skip, timeout), enforce_cap=False
                )
                conn.execute(
                    "UPDATE consent_counters SET sealed_seq = ? WHERE day = ?", (sealed.seq, day)
                )
                out.append(sealed)
        return out

    def purge_expired(self, max_age_days: int, reason: str = "max-age") -> Sealed | None:
        """Delete the oldest unsent envelopes past `max_age_days` and seal a `purge` envelope.

        The range is the longest prefix (by seq) of unsent envelopes all older than the cut-off,
        so it is contiguous and never skips a newer envelope. Unsent purge envelopes inside the
        prefix are merged: the new range starts where theirs did, so HQ still sees every seq
        explained. It never starts at or below `acked_through` (HQ already holds those).
        """
        cutoff = int(self.clock()) - max_age_days * 86400
        with self._tx() as conn:
            acked = conn.execute("SELECT acked_through FROM head WHERE one = 1").fetchone()[0]
            self._persist_head(conn)
            prefix: list[tuple[int, str, bytes]] = []
            for seq, kind, ts, digest in conn.execute(
                "SELECT seq, kind, ts, hash FROM envelopes ORDER BY seq"
            ):
                if ts >= cutoff:
                    break
                prefix.append((seq, kind, bytes(digest)))
            if not prefix:
                return None
            first = prefix[0][0]
            for seq, kind, _digest in prefix:
                if kind == "purge":
                    row = conn.execute(
                        "SELECT body FROM envelopes WHERE seq = ?", (seq,)
                    ).fetchone()
                    earlier = decode(bytes(row[0])).header.purged
                    assert earlier is not None
                    first = min(first, earlier.first_seq)
            first = max(first, acked + 1)
            last_seq, _, last_hash = prefix[-1]
            count = last_seq - first + 1  # seqs this purge explains to HQ
            freed = conn.execute(
                "SELECT COALESCE(SUM(length(body)), 0) FROM envelopes WHERE seq <= ?",
                (last_seq,),
            ).fetchone()[0]
            conn.execute("DELETE FROM envelopes WHERE seq <= ?", (last_seq,))
            self._unsent -= freed
            sealed = self._append(
                conn,
                PurgePayload(reason, count),
                purged=Purged(first, last_seq, last_hash),
                enforce_cap=False,
            )
            audit.append(
                conn,
                "purge",
                {
                    "first_seq": first,
                    "last_seq": last_seq,
                    "count": count,
                    "reason": reason,
                    "purge_seq": sealed.seq,
                },
            )
            return sealed

    # --- sync side --------------------------------------------------------------------------

    def pending(self, after: int = 0, limit: int = 1000) -> list[StoredEnvelope]:
        rows = self.conn.execute(
            "SELECT seq, kind, ts, body FROM envelopes WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [StoredEnvelope(s, k, t, bytes(b)) for s, k, t, b in rows]

    def ack(self, acked_through: int) -> int:
        """HQ holds 1..acked_through: delete exactly those envelopes; return how many."""
        with self._tx() as conn:
            last_seq = self._head[0]
            acked = conn.execute("SELECT acked_through FROM head WHERE one = 1").fetchone()[0]
            if acked_through > last_seq:
                raise AckOutOfRange(
                    f"HQ acknowledged through seq {acked_through}, but this stream has only "
                    f"made {last_seq}"
                )
            if acked_through <= acked:
                return 0
            freed, count = conn.execute(
                "SELECT COALESCE(SUM(length(body)), 0), COUNT(*) FROM envelopes WHERE seq <= ?",
                (acked_through,),
            ).fetchone()
            conn.execute("DELETE FROM envelopes WHERE seq <= ?", (acked_through,))
            self._persist_head(conn)
            conn.execute("UPDATE head SET acked_through = ? WHERE one = 1", (acked_through,))
            self._unsent -= freed
            return int(count)

    def purges(self) -> list[StoredEnvelope]:
        """Every unsent purge envelope (sync sends each alone, ahead of its turn)."""
        rows = self.conn.execute(
            "SELECT seq, kind, ts, body FROM envelopes WHERE kind = 'purge' ORDER BY seq"
        ).fetchall()
        return [StoredEnvelope(s, k, t, bytes(b)) for s, k, t, b in rows]

    def dead_letter(
        self, seq: int, reason: str, *, bridge: bool = False, purge_reason: str = "rejected-by-hq"
    ) -> bool:
        """Move an envelope HQ rejected for good out of the queue, keeping it for diagnosis.

        With `bridge`, also seal a purge envelope for exactly that seq in the same
        transaction, so HQ sees the gap explained (signed, audited) and acknowledges the
        envelopes behind it instead of waiting forever.
        """
        with self._tx() as conn:
            row = conn.execute(
                "SELECT kind, ts, body, hash FROM envelopes WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None:
                return False
            kind, ts, body, digest = row
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (seq, kind, ts, reason, rejected_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, kind, ts, reason[:500], int(self.clock()), body),
            )
            conn.execute("DELETE FROM envelopes WHERE seq = ?", (seq,))
            self._persist_head(conn)
            self._unsent -= len(body)
            detail: dict[str, object] = {"seq": seq, "kind": kind, "reason": reason[:500]}
            if bridge and kind != "purge":
                bridged = self._append(
                    conn,
                    PurgePayload(purge_reason, 1),
                    # the hash recorded when it was sealed: the body may be corrupt since
                    purged=Purged(seq, seq, bytes(digest)),
                    enforce_cap=False,
                )
                detail["purge_seq"] = bridged.seq
            audit.append(conn, "hq-rejection", detail)
            return True

    def audit(self, action: str, detail: dict[str, object]) -> None:
        """Record a security-relevant action in the audit log (its own transaction)."""
        with self._tx() as conn:
            audit.append(conn, action, detail)

    # --- inspection -------------------------------------------------------------------------

    def status(self) -> OutboxStatus:
        return read_status(self.conn, self.max_bytes)

    def all_envelopes(self) -> list[StoredEnvelope]:
        return self.pending(0, limit=-1)
