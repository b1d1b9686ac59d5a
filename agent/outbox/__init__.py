"""The SQLite outbox: durable, encrypted-only storage of envelopes until HQ acknowledges."""

from agent.outbox.aio import AsyncOutbox
from agent.outbox.store import (
    DB_NAME,
    AckOutOfRange,
    Outbox,
    OutboxError,
    OutboxFull,
    OutboxLocked,
    OutboxStatus,
    OutboxUnavailable,
    Sealed,
    SealingKeys,
    StoredEnvelope,
    connect,
    read_status,
)

__all__ = [
    "DB_NAME",
    "AckOutOfRange",
    "AsyncOutbox",
    "Outbox",
    "OutboxError",
    "OutboxFull",
    "OutboxLocked",
    "OutboxStatus",
    "OutboxUnavailable",
    "Sealed",
    "SealingKeys",
    "StoredEnvelope",
    "connect",
    "read_status",
]
