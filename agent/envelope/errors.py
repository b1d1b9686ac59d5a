"""Why an envelope was refused, as specific types the ingest tier can turn into reasons.

Each error carries a short text a person can act on; `reason` is that text. The type says at
which stage the envelope failed, which is what HQ reports back to the terminal.
"""

from __future__ import annotations


class EnvelopeError(Exception):
    """Base of every envelope refusal."""

    stage = "envelope"

    @property
    def reason(self) -> str:
        return str(self)


class DecodeError(EnvelopeError):
    """The bytes are not a well-formed envelope-v1 structure (CBOR, keys, types, lengths)."""

    stage = "decode"


class SignatureError(EnvelopeError):
    """The Ed25519 signature does not verify with the given key."""

    stage = "signature"


class DecryptError(EnvelopeError):
    """HPKE open failed: wrong key, tampered ciphertext, or ciphertext moved to another header."""

    stage = "decrypt"


class PayloadError(EnvelopeError):
    """The decrypted payload is not a valid payload for the envelope's kind."""

    stage = "payload"


class KeyFormatError(ValueError):
    """A configured or stored key has the wrong encoding or length for its algorithm."""
