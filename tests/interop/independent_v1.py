"""An independent, test-only implementation of envelope-v1 (shared/spec/envelope-v1.md).

Why this exists: the product's envelope code is checked against a second implementation
written from the spec alone, so that a misreading of the spec shows up as a disagreement
instead of being baked into both the sealer and its tests. To keep the two honest, this
module deliberately shares no code path with the obvious ones:

* CBOR is a hand-written deterministic encoder and strict decoder (no cbor2);
* HPKE base mode for the mandatory suite (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  ChaCha20-Poly1305) is built here from RFC 9180 out of low-level primitives (X25519,
  HMAC-SHA256, ChaCha20Poly1305), not from ``cryptography.hazmat.primitives.hpke``.

NOT independent: the optional hybrid suite ``mlkem768x25519-sha256-chacha20poly1305`` uses
``cryptography``'s ``hpke.Suite`` (writing ML-KEM by hand is out of scope), so for that suite
only the envelope framing around the HPKE call is cross-checked.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

SUITE_X25519 = "x25519-sha256-chacha20poly1305"
SUITE_HYBRID = "mlkem768x25519-sha256-chacha20poly1305"
SUITES = (SUITE_X25519, SUITE_HYBRID)
SIG_DOMAIN = b"cumulus-edge/v1 envelope\x00"
KINDS = ("purchase", "consent-stats", "purge")
HEADER_KEYS = frozenset(
    {"v", "terminal", "stream", "seq", "kind", "ts", "prev", "sig_kid", "enc_kid", "ct", "sig"}
)
MAX_DEPTH = 16  # envelopes nest 3 deep; a bound keeps hostile input from exhausting the stack


class IndependentError(Exception):
    """Base of every rejection raised here; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IndependentDecodeError(IndependentError):
    """The envelope bytes are not strict deterministic CBOR, or the header is malformed."""


class IndependentVerifyError(IndependentError):
    """The signature (or the key id it claims) does not check out."""


class IndependentDecryptError(IndependentError):
    """HPKE open failed: wrong key, tampered ``ct``, or INFO differs (``ct`` was moved)."""


class IndependentPayloadError(IndependentDecodeError):
    """The decrypted payload is not strict CBOR or does not match its kind's schema."""


# --------------------------------------------------------------------------- CBOR


def _head(major: int, arg: int) -> bytes:
    """Initial byte plus argument in the shortest form (RFC 8949 §4.2.1)."""
    if arg < 0 or arg >= 1 << 64:
        raise ValueError(f"CBOR argument out of range: {arg}")
    if arg < 24:
        return bytes([major << 5 | arg])
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * width):
            return bytes([major << 5 | ai]) + arg.to_bytes(width, "big")
    raise AssertionError("unreachable")


def encode(obj: Any) -> bytes:
    """Deterministic CBOR of int, bytes, str, list/tuple and dict with text keys.

    Anything else (bool, None, float, ...) is refused: the spec allows none of them, and an
    encoder that quietly accepted them would produce vectors no strict decoder can read.
    """
    if isinstance(obj, bool):
        raise TypeError("bool is not allowed in envelope-v1")
    if isinstance(obj, int):
        return _head(0, obj) if obj >= 0 else _head(1, -1 - obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        return _head(2, len(raw)) + raw
    if isinstance(obj, str):
        raw = obj.encode("utf-8")  # lone surrogates raise UnicodeEncodeError: not valid text
        return _head(3, len(raw)) + raw
    if isinstance(obj, list | tuple):
        return _head(4, len(obj)) + b"".join(encode(item) for item in obj)
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("map keys must be text strings")
        pairs = sorted((encode(k), encode(v)) for k, v in obj.items())
        return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    raise TypeError(f"type not allowed in envelope-v1: {type(obj).__name__}")


class _Reader:
    """Cursor over the input; every method raises IndependentDecodeError, never IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise IndependentDecodeError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def head(self) -> tuple[int, int]:
        initial = self.take(1)[0]
        major, ai = initial >> 5, initial & 0x1F
        if major == 7:
            kind = "float" if ai in (25, 26, 27) else "break" if ai == 31 else "simple value"
            raise IndependentDecodeError(f"{kind} not allowed")
        if major == 6:
            raise IndependentDecodeError("tag not allowed")
        if ai < 24:
            return major, ai
        if ai == 31:
            raise IndependentDecodeError("indefinite length not allowed")
        if ai > 27:
            raise IndependentDecodeError(f"reserved additional information {ai}")
        width = 1 << (ai - 24)
        arg = int.from_bytes(self.take(width), "big")
        if arg < (24 if width == 1 else 1 << (4 * width)):
            raise IndependentDecodeError("non-shortest integer or length")
        return major, arg

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise IndependentDecodeError("nesting too deep")
        major, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(arg)
        if major == 3:
            try:
                return self.take(arg).decode("utf-8")
            except UnicodeDecodeError:
                raise IndependentDecodeError("invalid UTF-8 in text string") from None
        remaining = len(self.data) - self.pos
        if major == 4:
            if arg > remaining:  # each item takes at least one byte
                raise IndependentDecodeError("truncated")
            return [self.item(depth + 1) for _ in range(arg)]
        if arg * 2 > remaining:
            raise IndependentDecodeError("truncated")
        out: dict[str, Any] = {}
        previous: bytes | None = None
        for _ in range(arg):
            start = self.pos
            key = self.item(depth + 1)
            key_bytes = self.data[start : self.pos]
            if not isinstance(key, str):
                raise IndependentDecodeError("map key is not a text string")
            if previous is not None and key_bytes == previous:
                raise IndependentDecodeError(f"duplicate map key {key!r}")
            if previous is not None and key_bytes < previous:
                raise IndependentDecodeError(f"map keys not sorted at {key!r}")
            previous = key_bytes
            out[key] = self.item(depth + 1)
        return out


def decode_cbor(data: bytes) -> Any:
    """Strictly decode one deterministic CBOR item that must fill ``data`` exactly."""
    reader = _Reader(bytes(data))
    value = reader.item(0)
    if reader.pos != len(reader.data):
        raise IndependentDecodeError("trailing bytes")
    return value


# --------------------------------------------------------------------------- HPKE (RFC 9180)

_KEM_ID, _KDF_ID, _AEAD_ID = 0x0020, 0x0001, 0x0003
_KEM_SUITE_ID = b"KEM" + _KEM_ID.to_bytes(2, "big")
_HPKE_SUITE_ID = (
    b"HPKE" + _KEM_ID.to_bytes(2, "big") + _KDF_ID.to_bytes(2, "big") + _AEAD_ID.to_bytes(2, "big")
)
_NH, _NK, _NN = 32, 32, 12


def _extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869): an empty salt means HashLen zero bytes."""
    return hmac.new(salt or bytes(_NH), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869), written out so no HKDF class of the obvious path is reused."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return _expand(prk, labeled_info, length)


def x25519_public(private: bytes) -> bytes:
    """Raw 32-byte X25519 public key of a raw 32-byte private key."""
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def derive_x25519_keypair(ikm: bytes) -> tuple[bytes, bytes]:
    """DeriveKeyPair of DHKEM(X25519) (RFC 9180 §7.1.3): (sk, pk) from input keying material."""
    dkp_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    sk = _labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", 32)
    return sk, x25519_public(sk)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        shared = x25519.X25519PrivateKey.from_private_bytes(private).exchange(
            x25519.X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # all-zero output (small-order point): RFC 9180 §7.1.4
        raise IndependentDecryptError(f"X25519 failed: {exc}") from None
    if shared == bytes(32):
        raise IndependentDecryptError("X25519 output is all zero")
    return shared


def _kem_shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", enc + pk_r, _NH)


def dhkem_encap(pk_r: bytes, sk_e: bytes) -> tuple[bytes, bytes]:
    """Encap with an injected ephemeral private key: returns (shared_secret, enc)."""
    enc = x25519_public(sk_e)
    return _kem_shared_secret(_dh(sk_e, pk_r), enc, pk_r), enc


def key_schedule_base(shared_secret: bytes, info: bytes) -> dict[str, bytes]:
    """KeySchedule for mode_base (empty psk, psk_id); returns every RFC-published value."""
    psk_id_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(_HPKE_SUITE_ID, shared_secret, b"secret", b"")
    return {
        "key_schedule_context": context,
        "secret": secret,
        "key": _labeled_expand(_HPKE_SUITE_ID, secret, b"key", context, _NK),
        "base_nonce": _labeled_expand(_HPKE_SUITE_ID, secret, b"base_nonce", context, _NN),
        "exporter_secret": _labeled_expand(_HPKE_SUITE_ID, secret, b"exp", context, _NH),
    }


def hpke_x25519_seal(
    pk_r: bytes, plaintext: bytes, info: bytes, aad: bytes = b"", sk_e: bytes | None = None
) -> bytes:
    """Single-shot base-mode seal (sequence number 0, so nonce = base_nonce): enc || ct."""
    if sk_e is None:
        sk_e = x25519.X25519PrivateKey.generate().private_bytes_raw()
    shared_secret, enc = dhkem_encap(pk_r, sk_e)
    ks = key_schedule_base(shared_secret, info)
    return enc + ChaCha20Poly1305(ks["key"]).encrypt(ks["base_nonce"], plaintext, aad)


def hpke_x25519_open(sk_r: bytes, enc_ct: bytes, info: bytes, aad: bytes = b"") -> bytes:
    """Single-shot base-mode open of ``enc || ct``; IndependentDecryptError on any failure."""
    if len(enc_ct) < 32 + 16:
        raise IndependentDecryptError("ct shorter than enc plus tag")
    enc, ct = enc_ct[:32], enc_ct[32:]
    shared_secret = _kem_shared_secret(_dh(sk_r, enc), enc, x25519_public(sk_r))
    ks = key_schedule_base(shared_secret, info)
    try:
        return ChaCha20Poly1305(ks["key"]).decrypt(ks["base_nonce"], ct, aad)
    except InvalidTag:
        raise IndependentDecryptError("AEAD open failed") from None


# The NOT independent part: cryptography's own HPKE for the ML-KEM-768 + X25519 suite.
_HYBRID = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def hybrid_public(private: bytes) -> bytes:
    """1184-byte ML-KEM-768 public key || 32-byte X25519 public, from seed(64) || x25519(32)."""
    if len(private) != 96:
        raise ValueError("hybrid private key must be 64 + 32 bytes")
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]).public_key().public_bytes_raw()
    return ml + x25519_public(private[64:])


def hpke_encrypt(
    suite: str, hq_public: bytes, plaintext: bytes, info: bytes, eph_seed: bytes | None = None
) -> bytes:
    """HPKE base single shot for either suite, empty AAD, returning ``enc || ciphertext``."""
    if suite == SUITE_X25519:
        if len(hq_public) != 32:
            raise ValueError("X25519 public key must be 32 bytes")
        return hpke_x25519_seal(hq_public, plaintext, info, b"", eph_seed)
    if suite != SUITE_HYBRID:
        raise ValueError(f"unknown suite {suite!r}")
    if eph_seed is not None:
        raise ValueError("the hybrid suite cannot take an injected ephemeral key")
    if len(hq_public) != 1184 + 32:
        raise ValueError("hybrid public key must be 1184 + 32 bytes")
    key = hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(hq_public[:1184]),
        x25519.X25519PublicKey.from_public_bytes(hq_public[1184:]),
    )
    return bytes(_HYBRID.encrypt(plaintext, key, info=info))


def hpke_decrypt(suite: str, hq_private: bytes, enc_ct: bytes, info: bytes) -> bytes:
    """Inverse of hpke_encrypt; IndependentDecryptError whenever the payload does not open."""
    if suite == SUITE_X25519:
        return hpke_x25519_open(hq_private, enc_ct, info)
    if suite != SUITE_HYBRID:
        raise ValueError(f"unknown suite {suite!r}")
    key = hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(hq_private[:64]),
        x25519.X25519PrivateKey.from_private_bytes(hq_private[64:]),
    )
    try:
        return bytes(_HYBRID.decrypt(enc_ct, key, info=info))
    except (InvalidTag, ValueError) as exc:
        raise IndependentDecryptError(f"hybrid HPKE open failed: {exc!r}") from None


# --------------------------------------------------------------------------- envelope

_TERMINAL = re.compile(r"[A-Za-z0-9._-]{1,64}")  # used with fullmatch: "$" would allow "\n"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_bstr(x: Any, length: int | None = None) -> bool:
    return isinstance(x, bytes) and (length is None or len(x) == length)


def ean13_valid(digits: str) -> bool:
    """True for 13 ASCII digits whose last is the EAN-13 check digit of the first 12."""
    if not re.fullmatch(r"[0-9]{13}", digits):
        return False
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


def _check_header(m: Any, error: type[IndependentError] = IndependentDecodeError) -> None:
    """Header rules of the spec's envelope table, including the purged/kind coupling."""
    if not isinstance(m, dict):
        raise error("envelope is not a map")
    keys = set(m)
    extra = keys - HEADER_KEYS - {"purged"}
    missing = HEADER_KEYS - keys
    if extra or missing:
        raise error(f"header keys: unknown {sorted(extra)}, missing {sorted(missing)}")
    checks = {
        "v": m["v"] == 1 and _is_uint(m["v"]),
        "terminal": isinstance(m["terminal"], str) and _TERMINAL.fullmatch(m["terminal"]),
        "stream": _is_bstr(m["stream"], 16),
        "seq": _is_uint(m["seq"]) and m["seq"] >= 1,
        "kind": isinstance(m["kind"], str) and m["kind"] in KINDS,
        "ts": _is_uint(m["ts"]),
        "prev": _is_bstr(m["prev"], 32),
        "sig_kid": isinstance(m["sig_kid"], str),
        "enc_kid": isinstance(m["enc_kid"], str),
        "ct": _is_bstr(m["ct"]),
        "sig": _is_bstr(m["sig"], 64),
    }
    for key, ok in checks.items():
        if not ok:
            raise error(f"header {key} invalid: {m[key]!r:.80}")
    if (m["kind"] == "purge") != ("purged" in m):
        raise error("purged is required in purge envelopes and allowed nowhere else")
    p = m.get("purged")  # [first, last, last_hash], first <= last < seq: the range precedes it
    ok = isinstance(p, list) and len(p) == 3 and all(map(_is_uint, p[:2])) and _is_bstr(p[2], 32)
    if p is not None and not (ok and 1 <= p[0] <= p[1] < m["seq"]):
        raise error(f"purged invalid: {p!r:.120}")


def info_for(header: dict[str, Any]) -> bytes:
    """HPKE info: deterministic CBOR of [v, terminal, stream, seq, kind, enc_kid]."""
    return encode([header[k] for k in ("v", "terminal", "stream", "seq", "kind", "enc_kid")])


def sig_kid(ed25519_public: bytes) -> str:
    """Lowercase hex of the first 8 bytes of SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(ed25519_public).digest()[:8].hex()


def signing_public(signing_seed: bytes) -> bytes:
    """Raw Ed25519 public key of a 32-byte seed."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(signing_seed)
    return key.public_key().public_bytes_raw()


def signed_bytes(envelope_map: dict[str, Any]) -> bytes:
    """Domain prefix || E, where E is the deterministic CBOR of the map without ``sig``."""
    return SIG_DOMAIN + encode({k: v for k, v in envelope_map.items() if k != "sig"})


def sign_map(envelope_map: dict[str, Any], signing_seed: bytes) -> bytes:
    """Sign and encode a map as is, with no validation: vectors need malformed ones too."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(signing_seed)
    body = {k: v for k, v in envelope_map.items() if k != "sig"}
    return encode({**body, "sig": key.sign(signed_bytes(body))})


def seal(
    header: dict[str, Any],
    payload: dict[str, Any],
    signing_seed: bytes,
    hq_public: bytes,
    suite: str,
    eph_seed: bytes | None = None,
) -> bytes:
    """Encrypt ``payload`` into a signed envelope; refuses anything the spec does not allow.

    ``eph_seed`` is the raw X25519 ephemeral private key (mandatory suite only), so that
    vectors are reproducible; the hybrid suite raises ValueError if it is given.
    """
    probe = {**header, "ct": b"", "sig": bytes(64)}
    _check_header(probe, IndependentError)
    if header["sig_kid"] != sig_kid(signing_public(signing_seed)):
        raise IndependentError("header sig_kid does not name the signing key")
    _check_payload(header, payload, IndependentError)
    ct = hpke_encrypt(suite, hq_public, encode(payload), info_for(header), eph_seed)
    envelope = sign_map({**header, "ct": ct}, signing_seed)
    decode(envelope)  # what we hand out must pass our own strict reader
    return envelope


def decode(envelope: bytes) -> dict[str, Any]:
    """Strict CBOR decode plus header validation; IndependentDecodeError otherwise."""
    m = decode_cbor(envelope)
    _check_header(m)
    return dict(m)


def verify(envelope: bytes, ed25519_public: bytes) -> None:
    """Decode strictly, check sig_kid names this key, and verify the Ed25519 signature.

    Raises IndependentDecodeError for malformed input (before any signature work) and
    IndependentVerifyError for a key id mismatch or a bad signature.
    """
    m = decode(envelope)
    if m["sig_kid"] != sig_kid(ed25519_public):
        raise IndependentVerifyError("sig_kid does not match the given public key")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(ed25519_public).verify(m["sig"], signed_bytes(m))
    except InvalidSignature:
        raise IndependentVerifyError("Ed25519 signature does not verify") from None


def envelope_hash(envelope: bytes) -> bytes:
    """SHA-256 of the complete encoded envelope, sig included: what ``prev`` chains to."""
    return hashlib.sha256(envelope).digest()


def _check_payload(
    header: dict[str, Any], p: Any, error: type[IndependentError] = IndependentPayloadError
) -> None:
    """Exact key sets and types of the spec's payload tables for the header's kind."""

    def need(ok: Any, what: str) -> None:
        if not ok:
            raise error(f"{header['kind']} payload: {what}")

    def exact(d: Any, keys: set[str], what: str) -> None:
        need(isinstance(d, dict), f"{what} is not a map")
        need(set(d) == keys, f"{what} keys {sorted(d)} != {sorted(keys)}")

    kind = header["kind"]
    if kind == "consent-stats":
        exact(p, {"day", "record", "skip", "timeout"}, "payload")
        need(isinstance(p["day"], str) and _DAY.fullmatch(p["day"]), "day")
        try:
            datetime.date.fromisoformat(p["day"])
        except ValueError:
            need(False, "day is not a calendar date")
        need(all(_is_uint(p[k]) for k in ("record", "skip", "timeout")), "counters")
    elif kind == "purge":
        exact(p, {"reason", "count"}, "payload")
        need(isinstance(p["reason"], str), "reason")
        first, last = header["purged"][0], header["purged"][1]
        need(_is_uint(p["count"]) and p["count"] == last - first + 1, "count vs purged range")
    else:
        purchase_keys = {"event_id", "occurred_at", "store", "terminal", "card", "receipt"}
        exact(p, purchase_keys | {"currency", "total", "items", "consent"}, "payload")
        need(isinstance(p["event_id"], str) and _UUID.fullmatch(p["event_id"]), "event_id")
        need(isinstance(p["occurred_at"], str) and _RFC3339.fullmatch(p["occurred_at"]), "at")
        need(all(isinstance(p[k], str) for k in ("store", "terminal", "receipt")), "texts")
        need(isinstance(p["card"], str) and ean13_valid(p["card"]), "card")
        need(isinstance(p["currency"], str) and re.fullmatch("[A-Z]{3}", p["currency"]), "currency")
        need(isinstance(p["total"], int), "total")
        need(isinstance(p["items"], list), "items")
        for item in p["items"]:
            exact(item, {"gtin", "qty", "amount"}, "item")
            need(isinstance(item["gtin"], str), "gtin")
            need(isinstance(item["qty"], int) and isinstance(item["amount"], int), "qty/amount")
        c = p["consent"]
        exact(c, {"decision", "decided_at", "by", "latency_ms"}, "consent")
        need(c["decision"] == "record" and c["by"] == "cashier", "consent decision/by")
        need(isinstance(c["decided_at"], str) and _is_uint(c["latency_ms"]), "consent types")


def open_payload(envelope: bytes, suite: str, hq_private: bytes) -> dict[str, Any]:
    """Decrypt with INFO rebuilt from the header, then strictly decode and check the payload.

    Does not verify the signature (the reader tier may get envelopes the ingest tier
    already verified); call verify() first where that matters.
    """
    m = decode(envelope)
    plaintext = hpke_decrypt(suite, hq_private, m["ct"], info_for(m))
    try:
        payload = decode_cbor(plaintext)
    except IndependentDecodeError as exc:
        raise IndependentPayloadError(f"payload CBOR: {exc.reason}") from None
    _check_payload(m, payload)
    return dict(payload)


def rejection_stage(
    envelope: bytes, ed25519_public: bytes, suite: str, hq_private: bytes
) -> str | None:
    """First stage that rejects: "decode", "signature", "decrypt", "payload"; None if all pass."""
    try:
        decode(envelope)
    except IndependentDecodeError:
        return "decode"
    try:
        verify(envelope, ed25519_public)
    except IndependentVerifyError:
        return "signature"
    try:
        open_payload(envelope, suite, hq_private)
    except IndependentDecryptError:
        return "decrypt"
    except IndependentPayloadError:
        return "payload"
    return None
