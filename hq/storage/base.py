"""What the ingest tier needs from a database, as a Protocol, and the records it exchanges.

Why an interface: the reference receiver embeds SQLite, a production HQ will run PostgreSQL.
Everything HQ decides is computed by `hq.ingest.decide`, a pure function from a
`StreamSnapshot` to a `StreamUpdate`; a backend only has to

1. load the snapshot of one `(terminal, stream)` and
2. apply the update, both inside ONE transaction that serializes writers of that stream
   (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE` on the stream row),

so `acked_through` moves in the same commit as the envelopes that justify it, and a crash
leaves either both or neither. Rules about chains, forks and purges live in `hq.ingest` only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

#: SQLite and PostgreSQL integers are signed 64-bit; no terminal ever reaches this seq.
MAX_SEQ = (1 << 63) - 1


class StorageError(Exception):
    """The backend failed (I/O, lock, corruption); the transaction was rolled back."""


class EnrolmentConflict(StorageError):
    """The public key is already registered for another terminal (a key is one terminal's)."""


@dataclass(frozen=True, slots=True)
class Enrolment:
    terminal: str
    sig_kid: str
    new: bool  # False: this exact key was already registered for this terminal


@dataclass(frozen=True, slots=True)
class PurgeRange:
    """A range the terminal deleted unsent, explained by the purge envelope `purge_seq`."""

    purge_seq: int
    first_seq: int
    last_seq: int
    last_hash: bytes


@dataclass(frozen=True, slots=True)
class AheadPurge:
    """A purge envelope stored ahead of its turn: signature verified, `prev` not yet."""

    seq: int
    prev: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """The state of one stream that a batch can touch, read inside the write transaction.

    `hashes` holds the stored envelopes at the seqs the caller asked for, plus the one at
    `acked_through` (what the next envelope's `prev` must equal).
    """

    terminal: str
    stream: bytes
    acked_through: int
    hashes: Mapping[int, bytes]
    purges: tuple[PurgeRange, ...]
    ahead: Mapping[int, AheadPurge]


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    seq: int
    kind: str
    ts: int
    prev: bytes
    hash: bytes
    body: bytes
    chained: bool  # False only for a purge stored ahead of its turn


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused envelope: `code` is stable (see docs/hq.md), `detail` is for people.

    `evidence` keeps the envelope bytes only when they are proof of something (a fork or a
    broken chain, both signed by the terminal's key); unsigned junk is never stored.
    """

    seq: int
    code: str
    detail: str
    evidence: bytes | None = None
    alert: bool = False  # fork or broken chain: logged at ERROR, someone must look

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """Everything one batch changes in a stream; applied atomically by `Storage.ingest`."""

    acked_through: int
    new_envelopes: tuple[NewEnvelope, ...] = ()
    new_purges: tuple[PurgeRange, ...] = ()
    chained: tuple[int, ...] = ()  # ahead purges whose prev now checks out
    dropped: tuple[int, ...] = ()  # ahead purges whose prev did not: removed, logged
    rejections: tuple[Rejection, ...] = ()
    duplicates: tuple[int, ...] = ()  # byte-identical resends: acknowledged, not stored


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    terminal: str
    stream: bytes
    seq: int
    kind: str
    ts: int
    hash: bytes
    body: bytes = field(repr=False)
    received_at: int


@dataclass(frozen=True, slots=True)
class LoggedRejection:
    at: int
    terminal: str
    stream: bytes
    seq: int
    code: str
    detail: str
    evidence: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamState:
    terminal: str
    stream: bytes
    acked_through: int
    stored: int


Decide = Callable[[StreamSnapshot], StreamUpdate]


class Storage(Protocol):
    """A blocking store used from ONE thread (the server's storage executor)."""

    # --- terminal registry ---------------------------------------------------------------
    def enroll(self, terminal: str, public_key: bytes) -> Enrolment:
        """Register an Ed25519 public key (raw 32 bytes) for `terminal`; idempotent.

        A terminal may have several keys (rotation: envelopes signed before it still verify).
        """
        ...

    def terminal_keys(self, terminal: str) -> dict[str, bytes] | None:
        """`sig_kid` → raw public key of every registered key, or None if not enrolled."""
        ...

    # --- ingest ----------------------------------------------------------------------------
    def ingest(
        self, terminal: str, stream: bytes, wanted: Collection[int], decide: Decide
    ) -> StreamUpdate:
        """In one transaction: snapshot the stream (`hashes` for `wanted`), call `decide`,
        apply and log its update, commit (durably), return it. Raises `StorageError`."""
        ...

    # --- reading ---------------------------------------------------------------------------
    def acked_through(self, terminal: str, stream: bytes) -> int: ...

    def stored_seqs(self, terminal: str, stream: bytes) -> list[int]: ...

    def purges(self, terminal: str, stream: bytes) -> list[PurgeRange]: ...

    def streams(self, terminal: str | None = None) -> list[StreamState]: ...

    def envelopes(
        self, *, kind: str | None = None, since_ts: int | None = None
    ) -> Iterator[StoredEnvelope]:
        """Stored envelopes (reader tier: export), optionally of one kind, `ts >= since_ts`."""
        ...

    def rejections(self, terminal: str | None = None) -> list[LoggedRejection]: ...

    def ping(self) -> None:
        """Raise `StorageError` if the backend cannot answer a trivial query (health)."""
        ...

    def close(self) -> None: ...
