"""The signed keyset of `GET /v1/keys`: which HQ keys terminals may seal to, and which now.

Why signed, not just served over TLS: a terminal's config pins one HQ *signing* public key;
whoever can answer on HQ's address (a proxy, a mis-issued certificate, a compromised ingest
host) still cannot make terminals encrypt to a key of their own. The ingest tier only serves
the bytes; the signing key stays with the reader tier (`cumulus-hq keys sign-keyset`).

Format (docs/hq.md, "Keyset"): a deterministic CBOR map, the same data model as envelopes,

    {v: 1, seq: uint, issued: uint, expires: uint, current: tstr,
     keys: [{kid: tstr, suite: tstr, pub: bstr}, ...], signer: tstr, sig: bstr(64)}

`sig = Ed25519.sign(b"cumulus-edge/v1 keyset\\x00" || E)`, E the deterministic encoding of
the map without `sig`; `signer` is the signing key's id (lowercase hex of the first 8 bytes
of SHA-256 over its raw public key, as `sig_kid`).

`verify_keyset` is pure (bytes, pinned key, time in; a `Keyset` or `KeysetError` out). This
module lives with the envelope code because both sides speak it: HQ signs, terminals verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.envelope import cbor
from agent.envelope.codec import sig_kid
from agent.envelope.errors import DecodeError, KeyFormatError
from agent.envelope.model import KID_RE
from agent.envelope.suites import load_public_key

KEYSET_DOMAIN: Final = b"cumulus-edge/v1 keyset\x00"
KEYSET_VERSION: Final = 1
_FIELDS: Final = frozenset({"v", "seq", "issued", "expires", "current", "keys", "signer", "sig"})
_KEY_FIELDS: Final = frozenset({"kid", "suite", "pub"})
MAX_KEYS: Final = 16


class KeysetError(Exception):
    """The keyset must not be used (malformed, wrong signer, bad signature, expired, rolled
    back); the terminal keeps the keyset it has and alerts."""


@dataclass(frozen=True, slots=True)
class KeysetKey:
    kid: str
    suite: str
    public_raw: bytes


@dataclass(frozen=True, slots=True)
class Keyset:
    seq: int
    issued: int
    expires: int
    current: str
    keys: tuple[KeysetKey, ...]
    signer: str

    def key(self, kid: str) -> KeysetKey:
        return next(k for k in self.keys if k.kid == kid)

    @property
    def current_key(self) -> KeysetKey:
        return self.key(self.current)

    def to_cbor(self) -> dict[str, Any]:
        """The map without `sig` (what is signed)."""
        return {
            "v": KEYSET_VERSION,
            "seq": self.seq,
            "issued": self.issued,
            "expires": self.expires,
            "current": self.current,
            "keys": [{"kid": k.kid, "suite": k.suite, "pub": k.public_raw} for k in self.keys],
            "signer": self.signer,
        }


def signer_id(public_key: Ed25519PublicKey | bytes) -> str:
    """The signing key's id: the same rule as a terminal's `sig_kid`."""
    return sig_kid(public_key)


def signed_bytes(keyset: Keyset) -> bytes:
    return KEYSET_DOMAIN + cbor.dumps(keyset.to_cbor())


def sign_keyset(keyset: Keyset, signing_key: Ed25519PrivateKey) -> bytes:
    """The exact bytes to publish: the map with `sig`, deterministically encoded."""
    if keyset.signer != signer_id(signing_key.public_key()):
        raise ValueError("keyset.signer is not the id of the signing key")
    _check_content(keyset)
    body = keyset.to_cbor()
    body["sig"] = signing_key.sign(signed_bytes(keyset))
    return cbor.dumps(body)


def _uint(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeysetError(f"keyset.{key}: expected an unsigned integer")
    return value


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not KID_RE.fullmatch(value):
        raise KeysetError(f"keyset.{key}: expected a key id")
    return value


def _parse_keys(value: Any) -> tuple[KeysetKey, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_KEYS:
        raise KeysetError(f"keyset.keys: expected an array of 1..{MAX_KEYS} keys")
    keys = []
    for n, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != _KEY_FIELDS:
            raise KeysetError(f"keyset.keys[{n}]: expected exactly {{kid, suite, pub}}")
        kid, suite_name, pub = _text(item, "kid"), item["suite"], item["pub"]
        if not isinstance(suite_name, str) or not isinstance(pub, bytes):
            raise KeysetError(f"keyset.keys[{n}]: suite is text, pub is bytes")
        keys.append(KeysetKey(kid, suite_name, pub))
    return tuple(keys)


def _check_content(keyset: Keyset) -> None:
    kids = [k.kid for k in keyset.keys]
    if len(set(kids)) != len(kids):
        raise KeysetError("keyset.keys: a kid appears twice")
    if kids != sorted(kids):
        raise KeysetError("keyset.keys: must be sorted by kid")
    if keyset.current not in kids:
        raise KeysetError(f"keyset.current {keyset.current!r} is not among keyset.keys")
    if keyset.expires <= keyset.issued:
        raise KeysetError("keyset.expires must be after keyset.issued")
    for k in keyset.keys:
        try:
            load_public_key(k.suite, k.public_raw)
        except KeyFormatError as exc:
            raise KeysetError(f"keyset key {k.kid!r}: {exc}") from None


def verify_keyset(
    data: bytes,
    pinned_public_key: Ed25519PublicKey | bytes,
    *,
    now: int,
    min_seq: int = 0,
) -> Keyset:
    """Check a keyset as fetched and return it, or raise `KeysetError`.

    Checks, in order: strict deterministic CBOR; exactly the fields above, `v == 1`;
    `signer` is the pinned key's id; the signature verifies with the pinned key; every key
    parses for its suite, kids unique and sorted, `current` among them; `issued < expires`
    and `now < expires` (a stale keyset is refused: a withheld rotation cannot last);
    `seq >= min_seq` (the highest seq the terminal accepted before: no rollback).
    """
    pinned = (
        pinned_public_key
        if isinstance(pinned_public_key, Ed25519PublicKey)
        else Ed25519PublicKey.from_public_bytes(pinned_public_key)
    )
    try:
        raw = cbor.loads(data, what="keyset")
    except DecodeError as exc:
        raise KeysetError(str(exc)) from None
    if not isinstance(raw, dict) or set(raw) != _FIELDS:
        raise KeysetError(f"keyset: expected exactly the fields {sorted(_FIELDS)}")
    if _uint(raw, "v") != KEYSET_VERSION:
        raise KeysetError(f"keyset.v: unsupported version {raw['v']}")
    signer = _text(raw, "signer")
    if signer != signer_id(pinned):
        raise KeysetError(
            f"keyset signed by {signer}, but the pinned HQ signing key is {signer_id(pinned)}"
        )
    sig = raw["sig"]
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise KeysetError("keyset.sig: expected 64 bytes")
    keyset = Keyset(
        seq=_uint(raw, "seq"),
        issued=_uint(raw, "issued"),
        expires=_uint(raw, "expires"),
        current=_text(raw, "current"),
        keys=_parse_keys(raw["keys"]),
        signer=signer,
    )
    try:
        pinned.verify(sig, signed_bytes(keyset))
    except InvalidSignature:
        raise KeysetError("keyset signature does not verify with the pinned key") from None
    _check_content(keyset)
    if now >= keyset.expires:
        raise KeysetError(f"keyset seq {keyset.seq} expired at {keyset.expires} (now {now})")
    if keyset.seq < min_seq:
        raise KeysetError(f"keyset seq {keyset.seq} is older than seq {min_seq} already held")
    return keyset
