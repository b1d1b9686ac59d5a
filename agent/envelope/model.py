"""The envelope-v1 data model: header, envelope and the three payload kinds.

Objects are frozen and validated when built, so a value that exists is a value the spec
allows (h11's habit). `to_cbor()` gives the map that is encoded; `from_cbor()` is the strict
inverse used by decoders: a missing, unknown or mistyped key is a `DecodeError` (header) or
`PayloadError` (payload) naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.envelope.errors import DecodeError, EnvelopeError, PayloadError

VERSION = 1
KINDS = ("purchase", "consent-stats", "purge")
Kind = Literal["purchase", "consent-stats", "purge"]
TERMINAL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
UINT_MAX = (1 << 64) - 1
ZERO_HASH = bytes(32)
RFC3339_MS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
GTIN_RE = re.compile(r"\d{8}|\d{12}|\d{13}|\d{14}")
CARD_RE = re.compile(r"\d{13}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
KID_RE = re.compile(r"[\x21-\x7e]{1,64}")

HEADER_KEYS = frozenset(
    {"v", "terminal", "stream", "seq", "kind", "ts", "prev", "sig_kid", "enc_kid", "ct", "sig"}
)
OPTIONAL_HEADER_KEYS = frozenset({"purged"})


class _Fields:
    """Typed access to a decoded CBOR map, raising `error` with the key's name."""

    def __init__(self, raw: Any, what: str, error: type[EnvelopeError]) -> None:
        if not isinstance(raw, dict):
            raise error(f"{what}: expected a map, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.what = what
        self.error = error

    def keys_exactly(
        self, required: frozenset[str], optional: frozenset[str] = frozenset()
    ) -> None:
        keys = set(self.raw)
        unknown = sorted(keys - required - optional)
        if unknown:
            raise self.error(f"{self.what}: unknown key {unknown[0]!r}")
        missing = sorted(required - keys)
        if missing:
            raise self.error(f"{self.what}: missing key {missing[0]!r}")

    def fail(self, key: str, problem: str) -> EnvelopeError:
        return self.error(f"{self.what}.{key}: {problem}")

    def uint(self, key: str, maximum: int = UINT_MAX) -> int:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an unsigned integer, got {type(value).__name__}")
        if not 0 <= value <= maximum:
            raise self.fail(key, f"{value} out of range 0..{maximum}")
        return value

    def int_(self, key: str) -> int:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {type(value).__name__}")
        if not -(1 << 63) <= value <= UINT_MAX:
            raise self.fail(key, "out of range")
        return value

    def text(self, key: str, pattern: re.Pattern[str] | None = None, max_len: int = 256) -> str:
        value = self.raw[key]
        if not isinstance(value, str):
            raise self.fail(key, f"expected a text string, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.fail(key, f"longer than {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{value!r} does not match {pattern.pattern}")
        return value

    def bytes_(self, key: str, length: int | None = None) -> bytes:
        value = self.raw[key]
        if not isinstance(value, bytes):
            raise self.fail(key, f"expected a byte string, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(key, f"expected {length} bytes, got {len(value)}")
        return value

    def array(self, key: str, max_len: int) -> list[Any]:
        value = self.raw[key]
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.fail(key, f"more than {max_len} elements")
        return value


def _check(ok: bool, error: Callable[[str], EnvelopeError], message: str) -> None:
    if not ok:
        raise error(message)


@dataclass(frozen=True, slots=True)
class Purged:
    """The `purged` header of a purge envelope: a contiguous range and its last hash."""

    first_seq: int
    last_seq: int
    last_hash: bytes

    def __post_init__(self) -> None:
        _check(
            1 <= self.first_seq <= self.last_seq <= UINT_MAX,
            DecodeError,
            "purged: need 1 <= first_seq <= last_seq",
        )
        _check(len(self.last_hash) == 32, DecodeError, "purged: last_hash must be 32 bytes")

    def to_cbor(self) -> list[Any]:
        return [self.first_seq, self.last_seq, self.last_hash]


@dataclass(frozen=True, slots=True)
class Header:
    """Everything of an envelope but `ct` and `sig`: what is known before sealing.

    Every `to_cbor()` in this module lists its keys in deterministic order (shorter keys
    first, then bytewise), so sealing can encode without re-sorting; a test holds this.
    """

    terminal: str
    stream: bytes
    seq: int
    kind: Kind
    ts: int
    prev: bytes
    sig_kid: str
    enc_kid: str
    purged: Purged | None = None
    v: int = VERSION

    def __post_init__(self) -> None:
        _check(self.v == VERSION, DecodeError, f"v: unsupported version {self.v}")
        _check(
            bool(TERMINAL_RE.fullmatch(self.terminal)),
            DecodeError,
            f"terminal: {self.terminal!r} is not a valid terminal id",
        )
        _check(len(self.stream) == 16, DecodeError, "stream: expected 16 bytes")
        _check(1 <= self.seq <= UINT_MAX, DecodeError, "seq: must be >= 1")
        _check(self.kind in KINDS, DecodeError, f"kind: unknown kind {self.kind!r}")
        _check(0 <= self.ts <= UINT_MAX, DecodeError, "ts: out of range")
        _check(len(self.prev) == 32, DecodeError, "prev: expected 32 bytes")
        _check(bool(KID_RE.fullmatch(self.sig_kid)), DecodeError, "sig_kid: invalid")
        _check(bool(KID_RE.fullmatch(self.enc_kid)), DecodeError, "enc_kid: invalid")
        _check(
            (self.kind == "purge") == (self.purged is not None),
            DecodeError,
            "purged: present exactly when kind is 'purge'",
        )
        if self.purged is not None:
            _check(
                self.purged.last_seq < self.seq,
                DecodeError,
                "purged: the range must lie before the purge envelope's own seq",
            )

    def info(self) -> list[Any]:
        """HPKE info: binds the ciphertext to this envelope's identity."""
        return [self.v, self.terminal, self.stream, self.seq, self.kind, self.enc_kid]

    def to_cbor(self, ct: bytes, sig: bytes | None = None) -> dict[str, Any]:
        """The envelope map, keys already in deterministic order (see `cbor.dumps_ordered`)."""
        m: dict[str, Any] = {"v": self.v, "ct": ct, "ts": self.ts, "seq": self.seq}
        if sig is not None:
            m["sig"] = sig
        m["kind"] = self.kind
        m["prev"] = self.prev
        if self.purged is not None:
            m["purged"] = self.purged.to_cbor()
        m["stream"] = self.stream
        m["enc_kid"] = self.enc_kid
        m["sig_kid"] = self.sig_kid
        m["terminal"] = self.terminal
        return m


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope, with the exact bytes it came from (hashes are over those)."""

    header: Header
    ct: bytes
    sig: bytes
    encoded: bytes = field(repr=False)

    @classmethod
    def from_cbor(cls, raw: Any, encoded: bytes) -> Envelope:
        f = _Fields(raw, "envelope", DecodeError)
        f.keys_exactly(HEADER_KEYS, OPTIONAL_HEADER_KEYS)
        v = f.uint("v")
        if v != VERSION:
            raise DecodeError(f"envelope.v: unsupported version {v}")
        kind = f.text("kind", max_len=32)
        if kind not in KINDS:
            raise DecodeError(f"envelope.kind: unknown kind {kind!r}")
        purged = None
        if "purged" in f.raw:
            arr = f.array("purged", 3)
            if len(arr) != 3:
                raise DecodeError("envelope.purged: expected [first_seq, last_seq, last_hash]")
            pf = _Fields(
                dict(zip(("first_seq", "last_seq", "last_hash"), arr, strict=True)),
                "envelope.purged",
                DecodeError,
            )
            purged = Purged(pf.uint("first_seq"), pf.uint("last_seq"), pf.bytes_("last_hash", 32))
        header = Header(
            terminal=f.text("terminal", TERMINAL_RE, 64),
            stream=f.bytes_("stream", 16),
            seq=f.uint("seq"),
            kind=kind,  # type: ignore[arg-type]  # checked against KINDS above
            ts=f.uint("ts"),
            prev=f.bytes_("prev", 32),
            sig_kid=f.text("sig_kid", KID_RE, 64),
            enc_kid=f.text("enc_kid", KID_RE, 64),
            purged=purged,
        )
        return cls(header=header, ct=f.bytes_("ct"), sig=f.bytes_("sig", 64), encoded=encoded)


def _ean13_ok(digits: str) -> bool:
    """EAN-13 check digit (weights 1,3 from the left); the prefix rule is the terminal's."""
    return sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(digits)) % 10 == 0


# --- payloads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    gtin: str
    qty: int  # thousandths of a unit
    amount: int  # minor units

    def to_cbor(self) -> dict[str, Any]:
        return {"qty": self.qty, "gtin": self.gtin, "amount": self.amount}


@dataclass(frozen=True, slots=True)
class Consent:
    decided_at: str
    latency_ms: int
    decision: str = "record"
    by: str = "cashier"

    def __post_init__(self) -> None:
        _check(
            self.decision == "record",
            PayloadError,
            "consent.decision: only 'record' is ever sealed",
        )

    def to_cbor(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "decision": self.decision,
            "decided_at": self.decided_at,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True, slots=True)
class PurchasePayload:
    event_id: str
    occurred_at: str
    store: str
    terminal: str
    card: str
    receipt: str
    currency: str
    total: int
    items: tuple[Item, ...]
    consent: Consent

    kind: Kind = field(default="purchase", init=False)

    def __post_init__(self) -> None:
        _check(
            bool(CARD_RE.fullmatch(self.card)) and _ean13_ok(self.card),
            PayloadError,
            "card: expected 13 digits with a valid EAN-13 check digit",
        )
        _check(
            bool(RFC3339_MS_RE.fullmatch(self.occurred_at)),
            PayloadError,
            "occurred_at: expected RFC 3339 UTC with milliseconds",
        )
        _check(bool(CURRENCY_RE.fullmatch(self.currency)), PayloadError, "currency: ISO 4217")

    def to_cbor(self) -> dict[str, Any]:
        return {
            "card": self.card,
            "items": [i.to_cbor() for i in self.items],
            "store": self.store,
            "total": self.total,
            "consent": self.consent.to_cbor(),
            "receipt": self.receipt,
            "currency": self.currency,
            "event_id": self.event_id,
            "terminal": self.terminal,
            "occurred_at": self.occurred_at,
        }

    @classmethod
    def from_cbor(cls, raw: Any) -> PurchasePayload:
        f = _Fields(raw, "purchase", PayloadError)
        f.keys_exactly(
            frozenset(
                {
                    "event_id",
                    "occurred_at",
                    "store",
                    "terminal",
                    "card",
                    "receipt",
                    "currency",
                    "total",
                    "items",
                    "consent",
                }
            )
        )
        items = []
        for n, it in enumerate(f.array("items", 10_000)):
            fi = _Fields(it, f"purchase.items[{n}]", PayloadError)
            fi.keys_exactly(frozenset({"gtin", "qty", "amount"}))
            items.append(Item(fi.text("gtin", GTIN_RE), fi.int_("qty"), fi.int_("amount")))
        fc = _Fields(f.raw["consent"], "purchase.consent", PayloadError)
        fc.keys_exactly(frozenset({"decision", "decided_at", "by", "latency_ms"}))
        consent = Consent(
            decision=fc.text("decision"),
            decided_at=fc.text("decided_at", RFC3339_MS_RE),
            by=fc.text("by"),
            latency_ms=fc.uint("latency_ms"),
        )
        return cls(
            event_id=f.text("event_id"),
            occurred_at=f.text("occurred_at", RFC3339_MS_RE),
            store=f.text("store"),
            terminal=f.text("terminal"),
            card=f.text("card", CARD_RE),
            receipt=f.text("receipt"),
            currency=f.text("currency", CURRENCY_RE),
            total=f.int_("total"),
            items=tuple(items),
            consent=consent,
        )


@dataclass(frozen=True, slots=True)
class ConsentStatsPayload:
    day: str
    record: int
    skip: int
    timeout: int

    kind: Kind = field(default="consent-stats", init=False)

    def to_cbor(self) -> dict[str, Any]:
        return {"day": self.day, "skip": self.skip, "record": self.record, "timeout": self.timeout}

    @classmethod
    def from_cbor(cls, raw: Any) -> ConsentStatsPayload:
        f = _Fields(raw, "consent-stats", PayloadError)
        f.keys_exactly(frozenset({"day", "record", "skip", "timeout"}))
        return cls(f.text("day", DAY_RE), f.uint("record"), f.uint("skip"), f.uint("timeout"))


@dataclass(frozen=True, slots=True)
class PurgePayload:
    reason: str
    count: int

    kind: Kind = field(default="purge", init=False)

    def to_cbor(self) -> dict[str, Any]:
        return {"count": self.count, "reason": self.reason}

    @classmethod
    def from_cbor(cls, raw: Any) -> PurgePayload:
        f = _Fields(raw, "purge", PayloadError)
        f.keys_exactly(frozenset({"reason", "count"}))
        return cls(f.text("reason"), f.uint("count"))


Payload = PurchasePayload | ConsentStatsPayload | PurgePayload

PAYLOAD_TYPES: Mapping[str, type[PurchasePayload] | type[ConsentStatsPayload] | type[PurgePayload]]
PAYLOAD_TYPES = {
    "purchase": PurchasePayload,
    "consent-stats": ConsentStatsPayload,
    "purge": PurgePayload,
}
