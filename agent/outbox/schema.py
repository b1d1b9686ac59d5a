"""Schema of the agent database, as named, ordered migrations (sqlite-utils' habit).

`PRAGMA user_version` records how many migrations have run. Each migration runs in the
transaction that bumps the version, so a crash leaves either the old or the new schema.
A database from a newer agent (version above what we know) is refused rather than guessed at.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import audit

if TYPE_CHECKING:  # imported lazily: it costs ~5 MB of RSS, needed only to migrate
    import sqlite_utils


class SchemaTooNew(Exception):
    """The database was written by a newer agent; downgrading in place is not supported."""


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": bytes}, pk="key")
    db.table("head").create(
        {"one": int, "last_seq": int, "last_hash": bytes, "acked_through": int},
        pk="one",
    )
    db.table("envelopes").create(
        {"seq": int, "kind": str, "ts": int, "hash": bytes, "body": bytes},
        pk="seq",
        not_null={"kind", "ts", "hash", "body"},
    )
    db.table("dead_letters").create(
        {"seq": int, "kind": str, "ts": int, "reason": str, "rejected_at": int, "body": bytes},
        pk="seq",
        not_null={"kind", "ts", "reason", "rejected_at", "body"},
    )
    db.table("consent_counters").create(
        {"day": str, "record": int, "skip": int, "timeout": int, "sealed_seq": int},
        pk="day",
        defaults={"record": 0, "skip": 0, "timeout": 0},
    )
    for stmt in audit.SCHEMA.split(";"):
        if stmt.strip():
            db.conn.execute(stmt)
    # The chain head follows every insert in the same statement's transaction, so losing the
    # newest row (a damaged file, a deleted row) can never make the agent re-issue its seq.
    db.conn.execute(
        "CREATE TRIGGER envelopes_head AFTER INSERT ON envelopes BEGIN "
        "UPDATE head SET last_seq = NEW.seq, last_hash = NEW.hash "
        "WHERE one = 1 AND NEW.seq > last_seq; END"
    )
    db.conn.execute("INSERT INTO meta (key, value) VALUES ('stream', ?)", (os.urandom(16),))
    db.conn.execute(
        "INSERT INTO head (one, last_seq, last_hash, acked_through) VALUES (1, 0, ?, 0)",
        (bytes(32),),
    )


MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("initial", _m001_initial),
)


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Bring the schema up to date; return the names of the migrations applied."""
    applied: list[str] = []
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(
            f"database schema version {version} is newer than this agent ({len(MIGRATIONS)})"
        )
    if version == len(MIGRATIONS):
        return applied
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for number, (name, step) in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
