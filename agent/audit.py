"""The local audit log: a hash-chained table of security-relevant actions.

Each row's `hash` is SHA-256 over the previous row's hash and the row's own content
(id, time, action, detail as canonical JSON). Editing a row changes its hash; deleting or
reordering rows breaks the `prev` links or the id sequence; so `verify` finds all three.
The chain head (last id and hash) is mirrored in a separate table so that cutting rows off the
end is noticed too, unless the attacker also rewrites the head, which is why the log is only
as strong as the file's permissions (the auditor's copy at HQ is the stronger proof).

No personal data is ever written here: details name seqs, counts, key ids, reasons.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = bytes(32)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL,
    last_hash BLOB NOT NULL
);
"""


def _row_hash(prev: bytes, row_id: int, at: str, action: str, detail: str) -> bytes:
    content = json.dumps([row_id, at, action, detail], separators=(",", ":")).encode()
    return hashlib.sha256(prev + content).digest()


def append(
    conn: sqlite3.Connection, action: str, detail: Mapping[str, Any], at: datetime | None = None
) -> int:
    """Add one row inside the caller's transaction (so the action and its record commit
    together); return its id."""
    when = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    text = json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))
    head = conn.execute("SELECT last_id, last_hash FROM audit_head WHERE one = 1").fetchone()
    last_id, prev = (head[0], bytes(head[1])) if head else (0, GENESIS)
    row_id = last_id + 1
    digest = _row_hash(prev, row_id, when, action, text)
    conn.execute(
        "INSERT INTO audit (id, at, action, detail, prev, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (row_id, when, action, text, prev, digest),
    )
    conn.execute(
        "INSERT INTO audit_head (one, last_id, last_hash) VALUES (1, ?, ?) "
        "ON CONFLICT(one) DO UPDATE SET last_id = excluded.last_id, "
        "last_hash = excluded.last_hash",
        (row_id, digest),
    )
    return row_id


@dataclass(frozen=True, slots=True)
class AuditProblem:
    row_id: int | None
    problem: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    rows: int
    problems: tuple[AuditProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "problems": [{"id": p.row_id, "problem": p.problem} for p in self.problems],
        }


def verify(conn: sqlite3.Connection) -> AuditReport:
    """Walk the chain in id order and report every break found."""
    problems: list[AuditProblem] = []
    prev = GENESIS
    expected_id = 1
    count = 0
    for row_id, at, action, detail, row_prev, row_hash in conn.execute(
        "SELECT id, at, action, detail, prev, hash FROM audit ORDER BY id"
    ):
        count += 1
        if row_id != expected_id:
            problems.append(AuditProblem(row_id, f"row(s) {expected_id}..{row_id - 1} missing"))
        if bytes(row_prev) != prev:
            problems.append(
                AuditProblem(
                    row_id, "prev does not match the row before (deleted or reordered rows)"
                )
            )
        if _row_hash(bytes(row_prev), row_id, at, action, detail) != bytes(row_hash):
            problems.append(AuditProblem(row_id, "content does not match its hash (edited)"))
        prev = bytes(row_hash)
        expected_id = row_id + 1
    head = conn.execute("SELECT last_id, last_hash FROM audit_head WHERE one = 1").fetchone()
    if head is not None and (head[0] != expected_id - 1 or bytes(head[1]) != prev):
        problems.append(
            AuditProblem(
                None,
                f"chain ends at row {expected_id - 1} but the head "
                f"records row {head[0]} (rows cut off the end)",
            )
        )
    if head is None and count:
        problems.append(AuditProblem(None, "chain head missing"))
    return AuditReport(count, tuple(problems))
