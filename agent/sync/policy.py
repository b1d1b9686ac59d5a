"""Sync policy, sans-I/O: what to send next, how long to wait, what an answer means.

No sockets, no database, no clock of its own: the client feeds it what the outbox holds and
what HQ answered, and asks it what to do. That keeps every rule of exactly-once delivery
testable in microseconds, with an injected clock and random source.

Rules (envelope-v1 "Transport"):
- A batch is one terminal and stream, ascending seq, at most 1,000 envelopes and 4 MiB.
- A `purge` envelope goes first, alone, before anything after its range (HQ accepts it ahead
  of its turn); each purge is sent alone once per process, then in normal order again.
- Backoff is "full jitter": uniform(0, min(cap, base * 2**failures)), cap 60 s; an HQ
  `Retry-After` is a floor on the wait (bounded by `max_retry_after`, an HQ bug must not stall
  a terminal for a day).
- `acked_through` may only grow, and never past the last seq we made; envelopes up to it are
  deleted, exactly those.
- HQ rejecting the envelope right after `acked_through` blocks the stream for good (nothing
  after a gap is acknowledged), so that one is dead-lettered and bridged by a purge envelope;
  rejections further on are only retried, since they are usually the gap's echo.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

MAX_BATCH = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
CBOR_OVERHEAD = 5 + 5  # array head + a bstr head per element, generous


class Pending(Protocol):
    """What the policy needs to know of a stored envelope."""

    @property
    def seq(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @property
    def body(self) -> bytes: ...


P = TypeVar("P", bound=Pending)


@dataclass(frozen=True, slots=True)
class Rejection:
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Answer:
    """HQ's 200 answer, already decoded and checked for shape by the client."""

    acked_through: int
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do after an answer: ack, dead-letter (and bridge), and whether to go on."""

    ack_through: int | None
    dead_letter: tuple[Rejection, ...]
    retry_later: tuple[Rejection, ...]
    progress: bool


@dataclass
class SyncPolicy:
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_retry_after: float = 600.0
    max_batch: int = MAX_BATCH
    max_batch_bytes: int = MAX_BATCH_BYTES
    failures: int = 0
    not_before: float = 0.0
    acked_through: int = 0
    purges_sent: set[int] = field(default_factory=set)

    # --- what to send -----------------------------------------------------------------------

    def next_batch(self, pending: Sequence[P], purges: Sequence[P] = ()) -> list[P]:
        """The next batch to POST, or [] when there is nothing to send.

        `pending` is the oldest unacknowledged envelopes in seq order; `purges` every unsent
        purge envelope (they sit at the tail of the queue and may be beyond `pending`).
        """
        for p in purges:
            if p.seq not in self.purges_sent and p.seq > self.acked_through:
                return [p]
        batch: list[P] = []
        size = CBOR_OVERHEAD
        for env in pending:
            if env.seq <= self.acked_through:
                continue
            if batch and env.seq != batch[-1].seq + 1:
                break  # a hole in our own queue (dead letter): the next batch starts after it
            cost = len(env.body) + CBOR_OVERHEAD
            if len(batch) >= self.max_batch or (batch and size + cost > self.max_batch_bytes):
                break
            batch.append(env)
            size += cost
        return batch

    def sent(self, batch: Sequence[Pending]) -> None:
        """Note a batch HQ answered 200 for (purges are then not sent alone again)."""
        if len(batch) == 1 and batch[0].kind == "purge":
            self.purges_sent.add(batch[0].seq)

    # --- answers ----------------------------------------------------------------------------

    def on_answer(self, batch: Sequence[Pending], answer: Answer, last_seq: int) -> Outcome:
        """Apply a 200 answer. Raises `ValueError` for an answer that cannot be true."""
        if answer.acked_through > last_seq:
            raise ValueError(
                f"HQ acknowledged through seq {answer.acked_through} but this stream has only "
                f"made {last_seq}: another terminal may share this stream (cloned image?)"
            )
        self.failures = 0
        self.not_before = 0.0
        self.sent(batch)
        ack: int | None = None
        progress = False
        if answer.acked_through > self.acked_through:
            self.acked_through = ack = answer.acked_through
            progress = True
        blocking = self.acked_through + 1
        dead = tuple(r for r in answer.rejected if r.seq == blocking)
        later = tuple(r for r in answer.rejected if r.seq != blocking)
        if dead:
            progress = True
        return Outcome(ack, dead, later, progress)

    def on_failure(self, retry_after: float | None = None) -> float:
        """A failed attempt (network, timeout, 5xx, 429/503): return seconds to wait."""
        self.failures += 1
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(self.failures, 30)))
        delay = self.rng.uniform(0.0, ceiling)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        self.not_before = self.clock() + delay
        return delay

    def shrink(self) -> None:
        """HQ said 413: halve the batch limits (never below one envelope)."""
        self.max_batch = max(1, self.max_batch // 2)
        self.max_batch_bytes = max(64 * 1024, self.max_batch_bytes // 2)

    def wait_time(self) -> float:
        return max(0.0, self.not_before - self.clock())

    def resume(self, hq_acked_through: int, last_seq: int) -> int | None:
        """At start: HQ's view of the stream. Return the seq to ack locally, if any."""
        if hq_acked_through > last_seq:
            raise ValueError(
                f"HQ holds this stream through seq {hq_acked_through} but it has only made "
                f"{last_seq}: restored from an old backup, or a cloned terminal"
            )
        if hq_acked_through > self.acked_through:
            self.acked_through = hq_acked_through
            return hq_acked_through
        return None


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """`Retry-After` is delta-seconds or an HTTP date; return seconds, or None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)
