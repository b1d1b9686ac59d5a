"""Interop: our envelope code against the committed vectors and the independent implementation.

The vectors were produced by `tests/interop/independent_v1.py`, written from the spec alone
(its own CBOR codec and a hand-built RFC 9180 HPKE). Ours must open theirs, reproduce their
deterministic bytes exactly, reject every negative case at the same stage, and theirs must
accept what we seal.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.envelope import (
    ZERO_HASH,
    DecodeError,
    DecryptError,
    EnvelopeError,
    Header,
    PayloadError,
    Purged,
    SignatureError,
    assemble,
    cbor,
    decode,
    envelope_hash,
    info_bytes,
    open_payload,
    seal,
    sig_kid,
    signed_bytes,
    verify,
)
from agent.envelope.suites import SUITE_NAMES, load_private_key, load_public_key
from tests.factories import hq_key_pair, purchase, random_card, random_gtin
from tests.interop import independent_v1 as theirs

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope-v1"
SINGLE = ["purchase-x25519", "consent-stats-x25519", "purge-x25519", "purchase-mlkem768x25519"]
STAGE = {
    DecodeError: "decode",
    SignatureError: "signature",
    DecryptError: "decrypt",
    PayloadError: "payload",
}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((VECTORS / f"{name}.json").read_text()))


def b64(s: str) -> bytes:
    return base64.b64decode(s)


def header_of(h: dict[str, Any]) -> Header:
    purged = None
    if "purged" in h:
        first, last, hash_hex = h["purged"]
        purged = Purged(first, last, bytes.fromhex(hash_hex))
    return Header(
        terminal=h["terminal"],
        stream=bytes.fromhex(h["stream_hex"]),
        seq=h["seq"],
        kind=h["kind"],
        ts=h["ts"],
        prev=bytes.fromhex(h["prev_hex"]),
        sig_kid=h["sig_kid"],
        enc_kid=h["enc_kid"],
        purged=purged,
        v=h["v"],
    )


def signer(vec: dict[str, Any]) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64(vec["terminal_signing_seed_b64"]))


@pytest.mark.parametrize("name", SINGLE)
def test_we_decode_verify_and_open_their_vectors(name: str) -> None:
    vec = load(name)
    body = bytes.fromhex(vec["envelope_hex"])
    env = decode(body)
    assert env.header == header_of(vec["header"])
    verify(env, b64(vec["terminal_public_key_b64"]))
    assert sig_kid(b64(vec["terminal_public_key_b64"])) == vec["sig_kid"]
    assert envelope_hash(body).hex() == vec["envelope_sha256_hex"]
    payload = open_payload(
        env, vec["suite"], load_private_key(vec["suite"], b64(vec["hq_private_key_b64"]))
    )
    assert payload.to_cbor() == vec["payload"]
    assert cbor.dumps(payload.to_cbor()).hex() == vec["payload_cbor_hex"]
    assert info_bytes(env.header).hex() == vec["info_cbor_hex"]
    assert signed_bytes(env.header, env.ct).hex() == vec["signed_bytes_hex"]


@pytest.mark.parametrize("name", [n for n in SINGLE if load(n)["deterministic"]])
def test_our_encoding_reproduces_their_bytes_exactly(name: str) -> None:
    """Any change to our encoding of the header, INFO or signature input fails here."""
    vec = load(name)
    env = decode(bytes.fromhex(vec["envelope_hex"]))
    again = assemble(header_of(vec["header"]), env.ct, signer(vec))
    assert again.hex() == vec["envelope_hex"]


def test_their_chain_verifies_link_by_link() -> None:
    vec = load("chain-x25519")
    priv = load_private_key(vec["suite"], b64(vec["hq_private_key_b64"]))
    prev = ZERO_HASH
    hashes: dict[int, bytes] = {}
    for item in vec["envelopes"]:
        env = decode(bytes.fromhex(item["envelope_hex"]))
        verify(env, b64(vec["terminal_public_key_b64"]))
        assert env.header.prev == prev
        assert open_payload(env, vec["suite"], priv).to_cbor() == item["payload"]
        prev = envelope_hash(env.encoded)
        hashes[env.header.seq] = prev
        if env.header.purged is not None:
            assert env.header.purged.last_hash == hashes[env.header.purged.last_seq]
    assert len(hashes) == 5


@pytest.mark.parametrize("case", load("negative")["cases"], ids=lambda c: c["name"])
def test_we_reject_each_negative_case_at_the_same_stage(case: dict[str, Any]) -> None:
    vec = load("negative")
    priv = load_private_key(vec["suite"], b64(vec["hq_private_key_b64"]))
    with pytest.raises(EnvelopeError) as info:
        env = decode(bytes.fromhex(case["envelope_hex"]))
        verify(env, b64(vec["terminal_public_key_b64"]))
        open_payload(env, vec["suite"], priv)
    assert STAGE[type(info.value)] == case["expect"], info.value


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_they_decode_verify_and_open_what_we_seal(suite: str) -> None:
    hq = hq_key_pair(suite)
    key = Ed25519PrivateKey.generate()
    rng = random.Random(5)
    prev = ZERO_HASH
    for seq in range(1, 4):
        h = Header(
            terminal="0042-07",
            stream=bytes(16),
            seq=seq,
            kind="purchase",
            ts=1_764_000_000 + seq,
            prev=prev,
            sig_kid=sig_kid(key.public_key()),
            enc_kid=hq.kid,
        )
        p = purchase(random_card(rng), [random_gtin(rng), random_gtin(rng)])
        body = seal(
            h, p, signing_key=key, suite_name=suite, hq_key=load_public_key(suite, hq.public_raw)
        )
        decoded = theirs.decode(body)
        assert decoded["seq"] == seq
        theirs.verify(body, key.public_key().public_bytes_raw())
        assert theirs.open_payload(body, suite, hq.private_raw) == p.to_cbor()
        assert theirs.envelope_hash(body) == envelope_hash(body)
        prev = envelope_hash(body)


_HQ = hq_key_pair()
_KEY = Ed25519PrivateKey.generate()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), seq=st.integers(1, 2**40), n_items=st.integers(0, 6))
def test_both_ways_agree_on_random_purchases(seed: int, seq: int, n_items: int) -> None:
    rng = random.Random(seed)
    p = purchase(random_card(rng), [random_gtin(rng) for _ in range(n_items)])
    h = Header(
        terminal="0042-07",
        stream=rng.randbytes(16),
        seq=seq,
        kind="purchase",
        ts=rng.randrange(2**32),
        prev=rng.randbytes(32) if seq > 1 else ZERO_HASH,
        sig_kid=sig_kid(_KEY.public_key()),
        enc_kid=_HQ.kid,
    )
    ours = seal(
        h,
        p,
        signing_key=_KEY,
        suite_name=_HQ.suite,
        hq_key=load_public_key(_HQ.suite, _HQ.public_raw),
    )
    assert theirs.open_payload(ours, _HQ.suite, _HQ.private_raw) == p.to_cbor()
    their_body = theirs.seal(
        {
            "v": 1,
            "terminal": h.terminal,
            "stream": h.stream,
            "seq": h.seq,
            "kind": h.kind,
            "ts": h.ts,
            "prev": h.prev,
            "sig_kid": h.sig_kid,
            "enc_kid": h.enc_kid,
        },
        p.to_cbor(),
        _KEY.private_bytes_raw(),
        _HQ.public_raw,
        _HQ.suite,
    )
    env = decode(their_body)
    verify(env, _KEY.public_key())
    assert env.header == h
    assert open_payload(env, _HQ.suite, load_private_key(_HQ.suite, _HQ.private_raw)) == p
