"""Per-reader state and counters, modelled on UnifiedPOS device statistics.

One `ReaderStats` per configured reader (serial or PC/SC), owned and updated by its driver,
read by ``readers watch``, ``diag`` and ``/metrics``. The driver updates it from the event
loop only, so there is no locking; readers of it take a `snapshot` (a plain dict, JSON-ready)
rather than holding on to the live object.

Fields (UnifiedPOS names in brackets where there is one):

- ``state``: `ReaderState` [State/HealthText] — connecting (first open not done yet),
  online (port open, reading), offline (device absent: unplugged, port gone; retrying),
  error (device there but unusable: permission, busy…; retrying) with ``error_text``.
- ``good_reads`` [GoodReadCount]: card reads delivered.
- ``rejects`` [FailedReadCount, by reason]: reason → count, reasons from
  `drivers.protocols.base.FRAMING_REJECTS` and `drivers.cards.CARD_REJECTS`.
- ``duplicates``: reads suppressed as a scanner double read (not failures).
- ``comm_errors`` [CommunicationErrorCount]: failed opens and lost connections.
- ``reconnects``: times the port came back after being lost.
- ``last_read_at``: UTC time of the last good read.
- ``bytes_in``: bytes received from the device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ReaderState(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    ERROR = "error"


@dataclass(slots=True)
class ReaderStats:
    """Live counters of one reader; see the module docstring for the meaning of each."""

    good_reads: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    comm_errors: int = 0
    reconnects: int = 0
    last_read_at: datetime | None = None
    state: ReaderState = ReaderState.CONNECTING
    error_text: str | None = None
    bytes_in: int = 0

    def count_reject(self, reason: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def count_good_read(self, at: datetime) -> None:
        self.good_reads += 1
        self.last_read_at = at

    def set_state(self, state: ReaderState, error_text: str | None = None) -> None:
        """Change state; ``error_text`` says why the reader is offline or in error."""
        self.state = state
        self.error_text = error_text

    @property
    def total_rejects(self) -> int:
        return sum(self.rejects.values())

    def snapshot(self) -> dict[str, object]:
        """A copy as plain JSON-ready values (state as its string, time as ISO-8601)."""
        return {
            "state": self.state.value,
            "error_text": self.error_text,
            "good_reads": self.good_reads,
            "rejects": dict(sorted(self.rejects.items())),
            "duplicates": self.duplicates,
            "comm_errors": self.comm_errors,
            "reconnects": self.reconnects,
            "last_read_at": (
                None
                if self.last_read_at is None
                else self.last_read_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            ),
            "bytes_in": self.bytes_in,
        }
