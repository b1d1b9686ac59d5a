"""envelope-v1: seal/decode/verify/open round trips and strict decoding."""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.envelope import (
    ZERO_HASH,
    ConsentStatsPayload,
    DecodeError,
    DecryptError,
    EnvelopeError,
    Header,
    PurchasePayload,
    Purged,
    PurgePayload,
    SignatureError,
    decode,
    envelope_hash,
    open_payload,
    seal,
    sig_kid,
    verify,
)
from agent.envelope.suites import HYBRID_SUITE, SUITE_NAMES, X25519_SUITE, load_private_key
from agent.envelope.suites import load_public_key as load_pub
from tests.factories import hq_key_pair, purchase
from tests.fuzzing import scaled

SIGNER = Ed25519PrivateKey.generate()
KID = sig_kid(SIGNER.public_key())
STREAM = bytes(range(16))


def header(
    seq: int = 1, kind: str = "purchase", prev: bytes = ZERO_HASH, purged: Purged | None = None
) -> Header:
    return Header(
        terminal="0042-07",
        stream=STREAM,
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        ts=1_764_000_000,
        prev=prev,
        sig_kid=KID,
        enc_kid="hq-2026a",
        purged=purged,
    )


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_seal_then_decode_verify_open_round_trips(suite: str) -> None:
    hq = hq_key_pair(suite)
    payload = purchase("2099123456786", ["7612345678900", "4006381333931"])
    body = seal(
        header(),
        payload,
        signing_key=SIGNER,
        suite_name=suite,
        hq_key=load_pub(suite, hq.public_raw),
    )
    env = decode(body)
    verify(env, SIGNER.public_key())
    assert env.header == header()
    assert open_payload(env, suite, load_private_key(suite, hq.private_raw)) == payload


def test_sealed_bytes_do_not_contain_the_card_or_gtins() -> None:
    hq = hq_key_pair()
    body = seal(
        header(),
        purchase("2099123456786", ["7612345678900"]),
        signing_key=SIGNER,
        suite_name=X25519_SUITE,
        hq_key=load_pub(X25519_SUITE, hq.public_raw),
    )
    assert b"2099123456786" not in body
    assert b"7612345678900" not in body


def test_all_payload_kinds_round_trip() -> None:
    hq = hq_key_pair()
    pub, priv = (
        load_pub(X25519_SUITE, hq.public_raw),
        load_private_key(X25519_SUITE, hq.private_raw),
    )
    cases = [
        (header(2, "consent-stats", os.urandom(32)), ConsentStatsPayload("2026-11-28", 3, 5, 1)),
        (
            header(9, "purge", os.urandom(32), Purged(2, 7, os.urandom(32))),
            PurgePayload("max-age", 6),
        ),
    ]
    for h, p in cases:
        env = decode(seal(h, p, signing_key=SIGNER, suite_name=X25519_SUITE, hq_key=pub))
        assert open_payload(env, X25519_SUITE, priv) == p
        assert env.header.purged == h.purged


def test_a_flipped_bit_anywhere_is_refused() -> None:
    hq = hq_key_pair()
    body = seal(
        header(),
        purchase("2099123456786", ["7612345678900"]),
        signing_key=SIGNER,
        suite_name=X25519_SUITE,
        hq_key=load_pub(X25519_SUITE, hq.public_raw),
    )
    for pos in range(0, len(body), 7):
        tampered = bytearray(body)
        tampered[pos] ^= 0x04
        with pytest.raises(EnvelopeError):
            verify(decode(bytes(tampered)), SIGNER.public_key())


def test_ciphertext_moved_to_another_envelope_does_not_decrypt() -> None:
    hq = hq_key_pair()
    pub = load_pub(X25519_SUITE, hq.public_raw)
    first = decode(
        seal(
            header(1),
            purchase("2099123456786", ["7612345678900"]),
            signing_key=SIGNER,
            suite_name=X25519_SUITE,
            hq_key=pub,
        )
    )
    from agent.envelope import assemble

    moved = decode(assemble(header(2, prev=envelope_hash(first.encoded)), first.ct, SIGNER))
    verify(moved, SIGNER.public_key())  # the thief re-signed it: signature is fine
    with pytest.raises(DecryptError):
        open_payload(moved, X25519_SUITE, load_private_key(X25519_SUITE, hq.private_raw))


def test_wrong_signing_key_is_a_signature_error() -> None:
    hq = hq_key_pair()
    body = seal(
        header(),
        purchase("2099123456786", []),
        signing_key=SIGNER,
        suite_name=X25519_SUITE,
        hq_key=load_pub(X25519_SUITE, hq.public_raw),
    )
    with pytest.raises(SignatureError):
        verify(decode(body), Ed25519PrivateKey.generate().public_key())


def _valid_map() -> dict[str, object]:
    hq = hq_key_pair()
    body = seal(
        header(),
        purchase("2099123456786", []),
        signing_key=SIGNER,
        suite_name=X25519_SUITE,
        hq_key=load_pub(X25519_SUITE, hq.public_raw),
    )
    return dict(cbor2.loads(body))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: m.update(extra=1), "unknown key 'extra'"),
        (lambda m: m.pop("enc_kid"), "missing key 'enc_kid'"),
        (lambda m: m.update(stream=b"x" * 15), "stream: expected 16 bytes"),
        (lambda m: m.update(prev=b"x" * 31), "prev: expected 32 bytes"),
        (lambda m: m.update(sig=b"x" * 63), "sig: expected 64 bytes"),
        (lambda m: m.update(v=2), "unsupported version"),
        (lambda m: m.update(seq="1"), "seq: expected an unsigned integer"),
        (lambda m: m.update(seq=0), "seq: must be >= 1"),
        (lambda m: m.update(kind="refund"), "unknown kind"),
        (lambda m: m.update(terminal="a b"), "terminal"),
        (lambda m: m.update(purged=[1, 1, b"x" * 32]), "purged: present exactly when"),
        (lambda m: m.update(ts=1.5), "floats are not allowed"),
        (lambda m: m.update(ts=cbor2.CBORTag(1, 5)), "not allowed"),
        (lambda m: m.update(ts=None), "simple values"),
    ],
)
def test_decode_rejects_with_a_reason(mutate: object, fragment: str) -> None:
    m = _valid_map()
    mutate(m)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=fragment.replace("(", r"\(")):
        decode(cbor2.dumps(m, canonical=True))


def test_decode_rejects_non_deterministic_encodings() -> None:
    m = _valid_map()
    canonical = cbor2.dumps(m, canonical=True)
    decode(canonical)
    with pytest.raises(DecodeError, match="not deterministic"):
        decode(cbor2.dumps(dict(reversed(list(m.items())))))  # keys unsorted
    with pytest.raises(DecodeError, match="not deterministic"):
        decode(canonical + b"\x00")  # trailing byte
    # seq 1 encoded as a 2-byte integer instead of the shortest form
    short = cbor2.dumps({"seq": 1}, canonical=True)[1:]
    long = b"\x63seq\x19\x00\x01"
    assert short == b"\x63seq\x01"
    with pytest.raises(DecodeError, match="not deterministic"):
        decode(canonical.replace(short, long, 1))
    with pytest.raises(DecodeError, match="truncated"):
        decode(canonical[:-5])


@settings(max_examples=scaled(300))
@given(st.binary(max_size=600))
def test_decoding_arbitrary_bytes_only_ever_raises_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@settings(max_examples=scaled(200))
@given(st.data())
def test_decoding_mutated_envelopes_only_ever_raises_envelope_errors(data: st.DataObject) -> None:
    body = bytearray(_BODY)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        verify(decode(bytes(body)), SIGNER.public_key())
    except EnvelopeError:
        return
    assert bytes(body) == _BODY  # only the unmodified envelope may verify


_BODY = seal(
    header(),
    purchase("2099123456786", ["7612345678900"]),
    signing_key=SIGNER,
    suite_name=X25519_SUITE,
    hq_key=load_pub(X25519_SUITE, hq_key_pair().public_raw),
)


def test_purchase_payload_rejects_unknown_keys_and_bad_cards() -> None:
    from agent.envelope import PayloadError

    raw = purchase("2099123456786", ["7612345678900"]).to_cbor()
    PurchasePayload.from_cbor(raw)
    with pytest.raises(PayloadError, match="unknown key 'note'"):
        PurchasePayload.from_cbor({**raw, "note": "x"})
    with pytest.raises(PayloadError, match="card"):
        PurchasePayload.from_cbor({**raw, "card": "20991234"})


def test_hybrid_suite_key_sizes_are_enforced() -> None:
    from agent.envelope import KeyFormatError

    with pytest.raises(KeyFormatError, match="1216 bytes"):
        load_pub(HYBRID_SUITE, b"\x01" * 32)


@settings(max_examples=scaled(100))
@given(
    seed=st.integers(0, 2**32),
    n_items=st.integers(0, 5),
    purged=st.booleans(),
    seq=st.integers(2, 2**63),
)
def test_model_maps_are_built_in_deterministic_order(
    seed: int, n_items: int, purged: bool, seq: int
) -> None:
    """Sealing skips re-sorting (`dumps_ordered`); this holds it equal to canonical CBOR."""
    import random

    from agent.envelope import cbor
    from tests.factories import random_card, random_gtin

    rng = random.Random(seed)
    p = purchase(random_card(rng), [random_gtin(rng) for _ in range(n_items)])
    values = [
        p.to_cbor(),
        ConsentStatsPayload("2026-11-28", seed % 7, seed % 5, seed % 3).to_cbor(),
        PurgePayload("max-age", seed).to_cbor(),
    ]
    h = header(
        seq,
        "purge" if purged else "purchase",
        os.urandom(32),
        Purged(1, seq - 1, os.urandom(32)) if purged else None,
    )
    values += [h.to_cbor(os.urandom(50)), h.to_cbor(os.urandom(50), os.urandom(64)), h.info()]
    for v in values:
        assert cbor.dumps_ordered(v) == cbor.dumps(v)
