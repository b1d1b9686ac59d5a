"""HQ's side of the signed keyset: the wire format lives in `agent.envelope.keyset` (both
sides speak it: HQ signs, terminals verify); this module only re-exports it for hq/."""

from agent.envelope.keyset import (
    KEYSET_DOMAIN,
    KEYSET_VERSION,
    MAX_KEYS,
    Keyset,
    KeysetError,
    KeysetKey,
    sign_keyset,
    signed_bytes,
    signer_id,
    verify_keyset,
)

__all__ = [
    "KEYSET_DOMAIN",
    "KEYSET_VERSION",
    "MAX_KEYS",
    "Keyset",
    "KeysetError",
    "KeysetKey",
    "sign_keyset",
    "signed_bytes",
    "signer_id",
    "verify_keyset",
]
