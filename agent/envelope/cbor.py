"""Deterministic CBOR (RFC 8949 §4.2.1) for envelope-v1: encode, and decode strictly.

Why strict: signatures and chain hashes are computed over the exact bytes, so two encodings
of one value would let a forger or a buggy peer produce envelopes that mean the same but hash
differently. The decoder therefore accepts a byte string only if re-encoding what it decoded
gives the very same bytes (this rejects non-shortest integers, indefinite lengths, unsorted or
duplicate map keys, trailing data) and if the value contains nothing outside the data model
of the spec (no floats, no tags, no simple values, only text-string map keys).
"""

from __future__ import annotations

from typing import Any

import cbor2

from agent.envelope.errors import DecodeError

#: Largest envelope we accept at all (the transport limit for a whole batch is 4 MiB).
MAX_ENCODED = 1 << 20

CborValue = int | str | bytes | list["CborValue"] | dict[str, "CborValue"]


def dumps(value: CborValue) -> bytes:
    """Encode deterministically (`canonical=True` is exactly §4.2.1 for our value space)."""
    return bytes(cbor2.dumps(value, canonical=True))


def dumps_ordered(value: CborValue) -> bytes:
    """Encode a value whose maps are already in deterministic key order (the model's
    `to_cbor()` outputs): the same bytes as `dumps`, without sorting on the hot path."""
    return bytes(cbor2.dumps(value))


def loads(data: bytes, *, what: str = "value") -> Any:
    """Decode `data` strictly; raise `DecodeError` naming the first problem found."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError(f"{what}: empty input")
    if len(data) > MAX_ENCODED:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds {MAX_ENCODED}")
    try:
        value = cbor2.loads(data)
    except cbor2.CBORDecodeEOF as exc:
        raise DecodeError(f"{what}: truncated CBOR") from exc
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"{what}: invalid CBOR ({exc})") from exc
    _check_model(value, what, depth=0)
    try:
        again = dumps(value)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
        raise DecodeError(f"{what}: cannot re-encode ({exc})") from exc
    if again != data:
        raise DecodeError(
            f"{what}: not deterministic CBOR (non-shortest form, indefinite length, "
            "unsorted or duplicate keys, or trailing bytes)"
        )
    return value


def _check_model(value: Any, what: str, depth: int) -> None:
    """Reject anything outside uint/nint/bstr/tstr/array/map-with-tstr-keys."""
    if depth > 16:
        raise DecodeError(f"{what}: nesting deeper than 16")
    if isinstance(value, bool) or value is None:
        raise DecodeError(f"{what}: simple values (true/false/null) are not allowed")
    if isinstance(value, int | str | bytes):
        return
    if isinstance(value, float):
        raise DecodeError(f"{what}: floats are not allowed")
    if isinstance(value, list):
        for item in value:
            _check_model(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"{what}: map keys must be text strings")
            _check_model(item, what, depth + 1)
        return
    # cbor2 turns tags into CBORTag or into Python objects (datetime, Decimal, UUID, ...);
    # undefined and other simple values come back as their own singleton types.
    raise DecodeError(f"{what}: {type(value).__name__} (a tag or simple value) is not allowed")
