"""What HQ needs from a database, as Protocols, and the records they exchange.

Why an interface: the reference receiver embeds SQLite, a production HQ runs PostgreSQL, and
both must keep the same promises (one test-suite runs against both). `Storage` is the ingest
tier; `CrmStore` is the reader tier (CRM tables, retention, audit log); `HqStore` is both.

Ingest: everything HQ decides is computed by `hq.ingest.decide`, a pure function from a
`StreamSnapshot` to a `StreamUpdate`; a backend only has to

1. load the snapshot of one `(terminal, stream)` and
2. apply the update, both inside ONE transaction that serializes writers of that stream
   (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock on the
   stream, so several `cumulus-hq serve` processes can share one database),

so `acked_through` moves in the same commit as the envelopes that justify it, and a crash
leaves either both or neither. Rules about chains, forks and purges live in `hq.ingest` only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
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
    enc_kid: str = ""  # the HQ key the payload is sealed to (clear header): key retirement


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
        """Stored envelopes (reader tier: export), optionally of one kind, `ts >= since_ts`;
        not the hash-only tips retention leaves (their body is gone)."""
        ...

    def rejections(self, terminal: str | None = None) -> list[LoggedRejection]: ...

    def ping(self) -> None:
        """Raise `StorageError` if the backend cannot answer a trivial query (health)."""
        ...

    def close(self) -> None: ...


# --- reader tier (CRM), retention, audit --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvelopeRef:
    """Where an envelope is stored: the ingest tier's primary key."""

    terminal: str
    stream: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """A stored purchase envelope the reader tier has not read yet (or could not, then)."""

    ref: EnvelopeRef
    enc_kid: str
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CrmItem:
    line: int
    gtin: str
    qty: int  # thousandths of a unit
    amount: int  # minor units


@dataclass(frozen=True, slots=True)
class CrmPurchase:
    """One purchase in the CRM tables. `card` is None once unlinked (after 5 years): then
    `source`, `enc_kid` and the consent details are gone too, and nothing ties the row to a
    household any more; what remains are the transaction facts kept for accounting."""

    event_id: str
    occurred_ms: int
    occurred_at: str
    store: str
    terminal: str
    receipt: str
    currency: str
    total: int
    items: tuple[CrmItem, ...]
    card: str | None = field(default=None, repr=False)
    source: EnvelopeRef | None = None
    enc_kid: str | None = None
    consent_decided_at: str | None = None
    consent_latency_ms: int | None = None


#: `ReadMark.state`: read into the CRM; sealed to a key the reader does not hold (retried
#: when it does); damaged; or older than the accounting period when read (nothing kept).
READ_STATES = ("read", "no-key", "unreadable", "expired")


@dataclass(frozen=True, slots=True)
class ReadMark:
    ref: EnvelopeRef
    state: str


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One line of a purchase, flattened for statistics (card None: unlinked)."""

    event_id: str
    store: str
    occurred_ms: int
    card: str | None = field(repr=False)
    gtin: str
    qty: int
    amount: int


@dataclass(frozen=True, slots=True)
class RetentionCutoffs:
    """What `apply_retention` removes, as instants (ms or s since the epoch, UTC).

    - purchases that occurred before `unlink_ms` lose their card link (and source envelope,
      key id and consent details);
    - purchases that occurred before `delete_ms` are deleted with their items;
    - envelopes sealed (`ts`) before `envelope_ts` are deleted, and so are rejection-log rows
      (their evidence is envelopes) logged before it.
    """

    unlink_ms: int
    delete_ms: int
    envelope_ts: int
    now: int


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    purchases_unlinked: int = 0
    purchases_deleted: int = 0
    items_deleted: int = 0
    households_deleted: int = 0
    envelopes_deleted: int = 0
    envelope_tips_emptied: int = 0
    envelopes_never_read: int = 0  # purchase envelopes deleted before the reader opened them
    rejections_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    @property
    def total(self) -> int:
        return sum(self.as_dict().values()) - self.envelopes_never_read


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: int
    action: str
    actor: str
    detail: str  # JSON text; never a full card number


class CrmStore(Protocol):
    """The reader tier's tables (households, purchases, items, stores), retention and the
    audit log. Blocking, used from one thread, like `Storage`."""

    def unread_envelopes(
        self, readable_kids: Collection[str], after: EnvelopeRef | None, limit: int
    ) -> list[SealedEnvelope]:
        """Purchase envelopes after `after` (key order) that carry no read mark, or carry
        `no-key` while their `enc_kid` is now in `readable_kids`; at most `limit`."""
        ...

    def save_read(self, purchases: Sequence[CrmPurchase], marks: Sequence[ReadMark]) -> int:
        """In one transaction: insert the purchases (idempotent by `event_id`) with their
        household, store and items, and set the read marks. Returns purchases inserted."""
        ...

    def card_purchases(self, card: str, since_ms: int, until_ms: int) -> list[CrmPurchase]:
        """The purchases linked to `card` that occurred in `[since_ms, until_ms]`."""
        ...

    def item_rows(self, since_ms: int, until_ms: int) -> Iterator[ItemRow]:
        """Every item line of purchases that occurred in `[since_ms, until_ms)`."""
        ...

    def apply_retention(self, cutoffs: RetentionCutoffs, *, dry_run: bool) -> RetentionCounts:
        """Unlink, delete and expire as `cutoffs` say, in one transaction; with `dry_run` the
        same statements run and are rolled back, so the counts are exactly what a run would
        do. Idempotent: a second run at the same instant counts zero."""
        ...

    def envelope_kids(self) -> dict[str, int]:
        """`enc_kid` → number of stored envelopes (with a body) sealed to it."""
        ...

    def audit(self, action: str, actor: str, detail: str) -> None:
        """Append one entry to the audit log (committed at once)."""
        ...

    def audit_log(self, action: str | None = None) -> list[AuditEntry]: ...


class HqStore(Storage, CrmStore, Protocol):
    """Everything one HQ database offers; both backends implement it."""
