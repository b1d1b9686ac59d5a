"""Where HQ keeps the terminal registry, envelopes, stream state and the rejection log.

`open_storage(db, state_dir)` picks the backend from `--db`: nothing → `<state-dir>/hq.db`;
a path or `sqlite:///path` → SQLite (SQLAlchemy's spelling: `sqlite:///rel.db` is relative,
`sqlite:////var/lib/hq.db` absolute). Other schemes (`postgresql://`) are refused with a
clear message until their backend exists.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from hq.storage.base import (
    MAX_SEQ,
    AheadPurge,
    Decide,
    Enrolment,
    EnrolmentConflict,
    LoggedRejection,
    NewEnvelope,
    PurgeRange,
    Rejection,
    Storage,
    StorageError,
    StoredEnvelope,
    StreamSnapshot,
    StreamState,
    StreamUpdate,
)
from hq.storage.sqlite import DB_NAME, SchemaTooNew, SqliteStorage

__all__ = [
    "DB_NAME",
    "MAX_SEQ",
    "AheadPurge",
    "Decide",
    "Enrolment",
    "EnrolmentConflict",
    "LoggedRejection",
    "NewEnvelope",
    "PurgeRange",
    "Rejection",
    "SchemaTooNew",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredEnvelope",
    "StreamSnapshot",
    "StreamState",
    "StreamUpdate",
    "UnsupportedDatabase",
    "open_storage",
    "sqlite_path",
]


class UnsupportedDatabase(ValueError):
    """`--db` names a scheme this HQ has no backend for (yet)."""


def sqlite_path(db: str | Path | None, state_dir: Path) -> Path:
    """The SQLite file `--db` designates (default `<state-dir>/hq.db`); refuse other schemes."""
    if db is None or db == "":
        return state_dir / DB_NAME
    if isinstance(db, Path):
        return db
    if "://" not in db:
        return Path(db)
    parts = urlsplit(db)
    if parts.scheme != "sqlite":
        raise UnsupportedDatabase(
            f"--db {parts.scheme}://… is not supported yet: this HQ stores in SQLite only "
            "(give a file path or sqlite:///path; a PostgreSQL backend is planned)"
        )
    if parts.netloc or not db.startswith("sqlite:///") or len(db) == len("sqlite:///"):
        raise UnsupportedDatabase(
            f"--db {db!r}: write sqlite:///relative/path or sqlite:////absolute/path"
        )
    return Path(db[len("sqlite:///") :])


def open_storage(db: str | Path | None, state_dir: Path) -> Storage:
    """Open the backend `--db` names (see module doc); raises `StorageError` if it cannot."""
    return SqliteStorage(sqlite_path(db, state_dir))
