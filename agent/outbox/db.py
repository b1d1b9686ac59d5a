"""The outbox database file: how it is opened, locked and read for status.

Split from `store` so read-only tools (diag, outbox status) need nothing but this.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class OutboxError(Exception):
    """Base: the outbox could not do what was asked; nothing was half-done."""


class OutboxUnavailable(OutboxError):
    """The database cannot be written (disk full, I/O error, locked): recording is off."""


class OutboxLocked(OutboxUnavailable):
    """Another process (normally the daemon) is this stream's writer right now."""


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    stream: bytes
    next_seq: int
    waiting: int
    oldest_waiting_ts: int | None
    acked_through: int
    unsent_bytes: int
    dead_letters: int
    max_bytes: int


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open with the durability settings the guarantees depend on."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _writer_lock(path: Path) -> int:
    """Take the stream's writer lock (`<db>.lock`, flock): one sealing process at a time.

    The seq primary key already prevents a fork, but a second writer would make the first one
    fail its next commit; refusing up front gives the person a clear message instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxLocked(
            f"{path} is being written by another process (is cumulus-agent run active?)"
        ) from None
    return fd


def read_status(conn: sqlite3.Connection, max_bytes: int) -> OutboxStatus:
    """Status from any connection, read-only ones included (diagnostics)."""
    stream = bytes(conn.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()[0])
    last_seq, acked = conn.execute(
        "SELECT last_seq, acked_through FROM head WHERE one = 1"
    ).fetchone()
    waiting, oldest, newest, unsent = conn.execute(
        "SELECT COUNT(*), MIN(ts), MAX(seq), COALESCE(SUM(length(body)), 0) FROM envelopes"
    ).fetchone()
    last_seq = max(last_seq, newest or 0)
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    return OutboxStatus(stream, last_seq + 1, waiting, oldest, acked, unsent, dead, max_bytes)
