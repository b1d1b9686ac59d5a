"""Damage at rest, found at start: quarantine a broken database, explain lost rows.

Two kinds of damage, two answers, both audited and shown by `diag`:
- The file itself is damaged (`PRAGMA quick_check` fails, or SQLite calls it malformed):
  it is moved whole into `<state_dir>/quarantine/<time>/` (nothing deleted: support can
  still salvage it) and the agent starts a fresh outbox, i.e. a new stream, so it never
  crash-loops on a broken file and never builds on a damaged chain.
- The file is sound but rows are missing (deleted mid-stream): each missing range of the
  unsent part of the stream is explained to HQ by a signed `purge` envelope (reason
  `lost-at-rest`), whose last_hash comes from the next envelope's `prev` or from the chain
  head, so HQ can bridge the chain and acknowledge what follows.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import audit
from agent.envelope import Purged, PurgePayload, decode
from agent.outbox.store import Outbox, connect

log = logging.getLogger("cumulus.outbox")

QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class Quarantined:
    directory: Path
    reason: str


def check_file(db: Path) -> Quarantined | None:
    """Quarantine `db` (and its -wal/-shm) if SQLite finds it damaged; else None."""
    if not db.exists():
        return None
    reason: str | None = None
    try:
        conn = connect(db, readonly=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                reason = f"quick_check: {result}"
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if reason is None:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = db.parent / QUARANTINE / stamp
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        part = db.with_name(db.name + suffix)
        if part.exists():
            shutil.move(str(part), target / part.name)
    (target / "reason.json").write_text(json.dumps({"reason": reason, "at": stamp}))
    log.error(
        "database %s is damaged (%s): quarantined in %s; starting a new stream", db, reason, target
    )
    return Quarantined(target, reason)


def quarantined(state_dir: Path) -> list[dict[str, str]]:
    """What `diag` reports: every quarantined database with its reason."""
    base = state_dir / QUARANTINE
    out = []
    if base.is_dir():
        for d in sorted(base.iterdir()):
            info = d / "reason.json"
            reason = json.loads(info.read_text())["reason"] if info.exists() else "?"
            out.append({"dir": str(d), "reason": reason})
    return out


def missing_ranges(outbox: Outbox) -> list[tuple[int, int]]:
    """Seqs after acked_through that are neither stored, dead-lettered nor explained."""
    conn = outbox.conn
    acked = conn.execute("SELECT acked_through FROM head WHERE one = 1").fetchone()[0]
    last = outbox._head[0]
    present = {s for (s,) in conn.execute("SELECT seq FROM envelopes WHERE seq > ?", (acked,))}
    present |= {s for (s,) in conn.execute("SELECT seq FROM dead_letters WHERE seq > ?", (acked,))}
    for p in outbox.purges():
        purged = decode(p.body).header.purged
        if purged is not None:
            present |= set(range(purged.first_seq, purged.last_seq + 1))
    ranges: list[tuple[int, int]] = []
    seq = acked + 1
    while seq <= last:
        if seq in present:
            seq += 1
            continue
        start = seq
        while seq <= last and seq not in present:
            seq += 1
        ranges.append((start, seq - 1))
    return ranges


def explain_missing(outbox: Outbox) -> list[tuple[int, int]]:
    """Seal a `lost-at-rest` purge envelope for each missing range; return the ranges."""
    done = []
    for first, last in missing_ranges(outbox):
        digest = _hash_of(outbox, last)
        if digest is None:
            log.error(
                "rows %d..%d are missing and their hash is unknown: cannot bridge", first, last
            )
            continue
        with outbox._tx() as conn:
            sealed = outbox._append(
                conn,
                PurgePayload("lost-at-rest", last - first + 1),
                purged=Purged(first, last, digest),
                enforce_cap=False,
            )
            audit.append(
                conn,
                "rows-lost-at-rest",
                {"first_seq": first, "last_seq": last, "purge_seq": sealed.seq},
            )
        log.error(
            "envelopes %d..%d were missing from the outbox: explained to HQ by purge seq %d",
            first,
            last,
            sealed.seq,
        )
        done.append((first, last))
    return done


def _hash_of(outbox: Outbox, seq: int) -> bytes | None:
    """The hash of envelope `seq`: the next stored envelope's `prev`, or the chain head."""
    row = outbox.conn.execute(
        "SELECT body FROM envelopes WHERE seq = ? UNION ALL "
        "SELECT body FROM dead_letters WHERE seq = ?",
        (seq + 1, seq + 1),
    ).fetchone()
    if row is not None:
        return decode(bytes(row[0])).header.prev
    head_seq, head_hash = outbox._head
    return head_hash if head_seq == seq else None
