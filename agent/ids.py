"""Identifiers and timestamps in the forms envelope-v1 asks for."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime


def uuid7(unix_ms: int | None = None) -> str:
    """A UUID version 7 (RFC 9562): time-ordered, so HQ's indexes stay append-mostly."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def rfc3339_ms(at: datetime | float) -> str:
    """`2026-11-29T10:11:12.123Z`: UTC with milliseconds, as the payload fields require."""
    dt = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
