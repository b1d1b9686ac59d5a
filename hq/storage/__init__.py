"""Where HQ keeps the terminal registry, envelopes, stream state and the rejection log.

`open_storage(db, state_dir)` picks the backend from `--db`: nothing → `<state-dir>/hq.db`;
a path or `sqlite:///path` → SQLite (SQLAlchemy's spelling: `sqlite:///rel.db` is relative,
`sqlite:////var/lib/hq.db` absolute); `postgresql://…` (or `postgres://…`, any libpq URL) →
PostgreSQL. Other schemes are refused with a clear message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hq.storage.base import (
    MAX_SEQ,
    READ_STATES,
    AheadPurge,
    AuditEntry,
    CrmItem,
    CrmPurchase,
    CrmStore,
    Decide,
    Enrolment,
    EnrolmentConflict,
    EnvelopeRef,
    HqStore,
    ItemRow,
    LoggedRejection,
    NewEnvelope,
    PurgeRange,
    ReadMark,
    Rejection,
    RetentionCounts,
    RetentionCutoffs,
    SealedEnvelope,
    Storage,
    StorageError,
    StoredEnvelope,
    StreamSnapshot,
    StreamState,
    StreamUpdate,
)
from hq.storage.redact import redact
from hq.storage.sqlite import DB_NAME, SchemaTooNew, SqliteStorage

POSTGRES_SCHEMES = ("postgresql", "postgres")


__all__ = [
    "DB_NAME",
    "MAX_SEQ",
    "POSTGRES_SCHEMES",
    "READ_STATES",
    "AheadPurge",
    "AuditEntry",
    "CrmItem",
    "CrmPurchase",
    "CrmStore",
    "DbTarget",
    "Decide",
    "Enrolment",
    "EnrolmentConflict",
    "EnvelopeRef",
    "HqStore",
    "ItemRow",
    "LoggedRejection",
    "NewEnvelope",
    "PurgeRange",
    "ReadMark",
    "Rejection",
    "RetentionCounts",
    "RetentionCutoffs",
    "SchemaTooNew",
    "SealedEnvelope",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredEnvelope",
    "StreamSnapshot",
    "StreamState",
    "StreamUpdate",
    "UnsupportedDatabase",
    "open_storage",
    "parse_db",
    "redact",
    "sqlite_path",
]


class UnsupportedDatabase(ValueError):
    """`--db` names a scheme this HQ has no backend for, or is malformed."""


@dataclass(frozen=True, slots=True)
class DbTarget:
    """Where `--db` points: a SQLite file or a PostgreSQL URL (shown with its password
    redacted)."""

    path: Path | None = None
    url: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else redact(self.url or "")


def parse_db(db: str | Path | None, state_dir: Path) -> DbTarget:
    """Read `--db` (see module doc); raise `UnsupportedDatabase` for anything else."""
    if db is None or db == "":
        return DbTarget(path=state_dir / DB_NAME)
    if isinstance(db, Path):
        return DbTarget(path=db)
    if "://" not in db:
        return DbTarget(path=Path(db))
    parts = urlsplit(db)
    if parts.scheme in POSTGRES_SCHEMES:
        return DbTarget(url=db)
    if parts.scheme != "sqlite":
        raise UnsupportedDatabase(
            f"--db {parts.scheme}://… is not supported yet: give a SQLite file path, "
            "sqlite:///path or postgresql://user@host/dbname"
        )
    if parts.netloc or not db.startswith("sqlite:///") or len(db) == len("sqlite:///"):
        raise UnsupportedDatabase(
            f"--db {db!r}: write sqlite:///relative/path or sqlite:////absolute/path"
        )
    return DbTarget(path=Path(db[len("sqlite:///") :]))


def sqlite_path(db: str | Path | None, state_dir: Path) -> Path:
    """The SQLite file `--db` designates (default `<state-dir>/hq.db`); refuse other URLs."""
    target = parse_db(db, state_dir)
    if target.path is None:
        raise UnsupportedDatabase(f"--db {target}: not a SQLite database")
    return target.path


def open_storage(
    db: str | Path | None, state_dir: Path, *, clock: Callable[[], float] = time.time
) -> HqStore:
    """Open the backend `--db` names (see module doc); raises `StorageError` if it cannot.
    `clock` stamps rows (received_at, audit entries); tests inject one."""
    target = parse_db(db, state_dir)
    if target.path is not None:
        return SqliteStorage(target.path, clock=clock)
    from hq.storage.postgres import PostgresStorage  # psycopg only when asked for

    return PostgresStorage(target.url or "", clock=clock)
