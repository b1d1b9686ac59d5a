"""HPKE suites of envelope-v1 and the byte layout of their keys.

The spec names suites by text; this module is the one place that maps a name to
`cryptography`'s `hpke.Suite` and parses key bytes for it, so the agent (public keys from
its config) and HQ (private keys from its key files) agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.hpke import (
    AEAD,
    KDF,
    KEM,
    MLKEM768X25519PrivateKey,
    MLKEM768X25519PublicKey,
    Suite,
)

from agent.envelope.errors import KeyFormatError

X25519_SUITE: Final = "x25519-sha256-chacha20poly1305"
HYBRID_SUITE: Final = "mlkem768x25519-sha256-chacha20poly1305"
SUITE_NAMES: Final = (X25519_SUITE, HYBRID_SUITE)

PublicKey = x25519.X25519PublicKey | MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | MLKEM768X25519PrivateKey

_MLKEM_PUB = 1184
_MLKEM_SEED = 64
_X25519 = 32


@dataclass(frozen=True, slots=True)
class SuiteSpec:
    """One named suite: its HPKE parameters and the sizes of its raw keys."""

    name: str
    hpke: Suite
    public_len: int
    private_len: int


SUITES: Final[dict[str, SuiteSpec]] = {
    X25519_SUITE: SuiteSpec(
        X25519_SUITE, Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305), 32, 32
    ),
    HYBRID_SUITE: SuiteSpec(
        HYBRID_SUITE,
        Suite(KEM.MLKEM768_X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305),
        _MLKEM_PUB + _X25519,
        _MLKEM_SEED + _X25519,
    ),
}


def suite(name: str) -> SuiteSpec:
    try:
        return SUITES[name]
    except KeyError:
        raise KeyFormatError(
            f"unknown HPKE suite {name!r} (known: {', '.join(SUITE_NAMES)})"
        ) from None


def load_public_key(suite_name: str, raw: bytes) -> PublicKey:
    """Parse the raw public key bytes of `suite_name` (as configured, base64-decoded)."""
    spec = suite(suite_name)
    if len(raw) != spec.public_len:
        raise KeyFormatError(
            f"{suite_name} public key must be {spec.public_len} bytes, got {len(raw)}"
        )
    try:
        if suite_name == X25519_SUITE:
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUB]),
            x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUB:]),
        )
    except ValueError as exc:
        raise KeyFormatError(f"{suite_name} public key is invalid: {exc}") from exc


def load_private_key(suite_name: str, raw: bytes) -> PrivateKey:
    """Parse raw private key bytes (X25519: 32; hybrid: 64-byte ML-KEM seed + 32)."""
    spec = suite(suite_name)
    if len(raw) != spec.private_len:
        raise KeyFormatError(
            f"{suite_name} private key must be {spec.private_len} bytes, got {len(raw)}"
        )
    try:
        if suite_name == X25519_SUITE:
            return x25519.X25519PrivateKey.from_private_bytes(raw)
        return MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED]),
            x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:]),
        )
    except ValueError as exc:
        raise KeyFormatError(f"{suite_name} private key is invalid: {exc}") from exc


def generate_private_key(suite_name: str) -> tuple[bytes, bytes]:
    """Make a new key pair for `suite_name`; return (raw private, raw public)."""
    suite(suite_name)
    xk = x25519.X25519PrivateKey.generate()
    x_priv = xk.private_bytes_raw()
    x_pub = xk.public_key().public_bytes_raw()
    if suite_name == X25519_SUITE:
        return x_priv, x_pub
    mk = mlkem.MLKEM768PrivateKey.generate()
    return mk.private_bytes_raw() + x_priv, mk.public_key().public_bytes_raw() + x_pub
