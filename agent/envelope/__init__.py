"""envelope-v1: the only owner of the wire format (see docs and ../shared/spec/envelope-v1.md).

HQ imports this package and nothing else from `agent`.
"""

from agent.envelope.codec import (
    SIGNING_DOMAIN,
    assemble,
    decode,
    encrypt_payload,
    envelope_hash,
    info_bytes,
    open_payload,
    seal,
    sig_kid,
    signed_bytes,
    verify,
)
from agent.envelope.errors import (
    DecodeError,
    DecryptError,
    EnvelopeError,
    KeyFormatError,
    PayloadError,
    SignatureError,
)
from agent.envelope.model import (
    ZERO_HASH,
    Consent,
    ConsentStatsPayload,
    Envelope,
    Header,
    Item,
    Payload,
    PurchasePayload,
    Purged,
    PurgePayload,
)

__all__ = [
    "SIGNING_DOMAIN",
    "ZERO_HASH",
    "Consent",
    "ConsentStatsPayload",
    "DecodeError",
    "DecryptError",
    "Envelope",
    "EnvelopeError",
    "Header",
    "Item",
    "KeyFormatError",
    "Payload",
    "PayloadError",
    "PurchasePayload",
    "PurgePayload",
    "Purged",
    "SignatureError",
    "assemble",
    "decode",
    "encrypt_payload",
    "envelope_hash",
    "info_bytes",
    "open_payload",
    "seal",
    "sig_kid",
    "signed_bytes",
    "verify",
]
