"""Seal, decode, verify and open envelope-v1: the only code that makes or reads the bytes.

Order of operations on the way out (`seal`): encode the payload, HPKE-encrypt it to HQ with
INFO bound to the header's identity, encode the header map with `ct`, sign
`DOMAIN || E`, then encode the map again with `sig`. On the way in the ingest tier needs only
`decode` + `verify` (no key to any payload); the reader tier adds `open_payload`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.envelope import cbor
from agent.envelope.errors import (
    DecodeError,
    DecryptError,
    KeyFormatError,
    PayloadError,
    SignatureError,
)
from agent.envelope.model import PAYLOAD_TYPES, Envelope, Header, Payload, PurgePayload
from agent.envelope.suites import PrivateKey, PublicKey, suite

SIGNING_DOMAIN = b"cumulus-edge/v1 envelope\x00"


def sig_kid(public_key: Ed25519PublicKey | bytes) -> str:
    """Lowercase hex of the first 8 bytes of SHA-256 over the raw 32-byte public key."""
    raw = public_key if isinstance(public_key, bytes) else public_key.public_bytes_raw()
    if len(raw) != 32:
        raise KeyFormatError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return hashlib.sha256(raw).digest()[:8].hex()


def envelope_hash(encoded: bytes) -> bytes:
    """SHA-256 of the complete encoded envelope (with `sig`): what `prev` chains on."""
    return hashlib.sha256(encoded).digest()


def info_bytes(header: Header) -> bytes:
    return cbor.dumps_ordered(header.info())


def signed_bytes(header: Header, ct: bytes) -> bytes:
    """`DOMAIN || E`, E being the deterministic map without `sig`."""
    return SIGNING_DOMAIN + cbor.dumps_ordered(header.to_cbor(ct))


def assemble(header: Header, ct: bytes, signing_key: Ed25519PrivateKey) -> bytes:
    """Sign a header and ciphertext and return the encoded envelope.

    Split from `seal` so test vectors with a fixed `ct` reproduce byte for byte
    (Ed25519 is deterministic; HPKE is not).
    """
    sig = signing_key.sign(signed_bytes(header, ct))
    return cbor.dumps_ordered(header.to_cbor(ct, sig))


def encrypt_payload(header: Header, payload: Payload, suite_name: str, hq_key: PublicKey) -> bytes:
    if payload.kind != header.kind:
        raise ValueError(f"payload kind {payload.kind!r} does not match header {header.kind!r}")
    plaintext = cbor.dumps_ordered(payload.to_cbor())
    return suite(suite_name).hpke.encrypt(plaintext, hq_key, info=info_bytes(header))


def seal(
    header: Header,
    payload: Payload,
    *,
    signing_key: Ed25519PrivateKey,
    suite_name: str,
    hq_key: PublicKey,
) -> bytes:
    """Encrypt `payload` to HQ, sign, and return the exact envelope bytes to store and send."""
    return assemble(header, encrypt_payload(header, payload, suite_name, hq_key), signing_key)


def decode(encoded: bytes) -> Envelope:
    """Strictly decode envelope bytes (structure only: no key needed, nothing verified)."""
    raw = cbor.loads(encoded, what="envelope")
    return Envelope.from_cbor(raw, bytes(encoded))


def verify(envelope: Envelope, public_key: Ed25519PublicKey | bytes) -> None:
    """Check the signature; raise `SignatureError` if it does not verify."""
    if isinstance(public_key, bytes):
        try:
            public_key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise SignatureError(f"invalid Ed25519 public key: {exc}") from exc
    try:
        public_key.verify(envelope.sig, signed_bytes(envelope.header, envelope.ct))
    except InvalidSignature:
        raise SignatureError(
            f"signature does not verify (seq {envelope.header.seq}, "
            f"sig_kid {envelope.header.sig_kid})"
        ) from None


def open_payload(envelope: Envelope, suite_name: str, hq_private: PrivateKey) -> Payload:
    """Decrypt and strictly decode the payload (reader tier only)."""
    try:
        plaintext = suite(suite_name).hpke.decrypt(
            envelope.ct, hq_private, info=info_bytes(envelope.header)
        )
    except (InvalidTag, ValueError) as exc:
        raise DecryptError(
            f"payload does not decrypt with key {envelope.header.enc_kid!r} "
            "(wrong key, tampered, or moved from another envelope)"
        ) from exc
    try:
        raw: Any = cbor.loads(plaintext, what="payload")
    except DecodeError as exc:
        raise PayloadError(str(exc)) from None
    payload = PAYLOAD_TYPES[envelope.header.kind].from_cbor(raw)
    purged = envelope.header.purged
    if isinstance(payload, PurgePayload) and purged is not None:
        span = purged.last_seq - purged.first_seq + 1
        if payload.count != span:
            raise PayloadError(f"purge.count: {payload.count} but the range holds {span} seqs")
    return payload
