"""Self-checks of the independent envelope-v1 implementation (not of the product).

Why: independent_v1 is the yardstick the product is measured against, so it must itself be
anchored to things outside this project: RFC 9180's published test vector, cryptography's
own HPKE and cbor2 (both only as oracles here), and the committed vector files.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.interop import independent_v1 as iv
from tests.interop import make_vectors as mv

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope-v1"
NEGATIVE = json.loads((VECTORS / "negative.json").read_text())

# RFC 9180 Appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base
# mode) and its encryption with sequence number 0, transcribed from the RFC's values.
A2 = {
    name: bytes.fromhex(value)
    for name, value in {
        "info": "4f6465206f6e2061204772656369616e2055726e",
        "ikmE": "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
        "pkEm": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        "skEm": "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
        "ikmR": "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
        "pkRm": "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        "skRm": "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        "enc": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        "shared_secret": "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7",
        "key_schedule_context": "00431df6cd95e11ff49d7013563baf7f11588c75a6611ee2a4404a4930"
        "6ae4cfc5b69c5718a60cc5876c358d3f7fc31ddb598503f67be58ea1e798c0bb19eb9796",
        "secret": "5b9cd775e64b437a2335cf499361b2e0d5e444d5cb41a8a53336d8fe402282c6",
        "key": "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91",
        "base_nonce": "5c4d98150661b848853b547f",
        "exporter_secret": "a3b010d4994890e2c6968a36f64470d3c824c8f5029942feb11e7a74b2921922",
        "pt": "4265617574792069732074727574682c20747275746820626561757479",
        "aad": "436f756e742d30",
        "ct": "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
        "21993c62ce81883d2dd1b51a28",
    }.items()
}


def test_rfc9180_a2_derive_keypair() -> None:
    assert iv.derive_x25519_keypair(A2["ikmE"]) == (A2["skEm"], A2["pkEm"])
    assert iv.derive_x25519_keypair(A2["ikmR"]) == (A2["skRm"], A2["pkRm"])


def test_rfc9180_a2_key_schedule() -> None:
    shared_secret, enc = iv.dhkem_encap(A2["pkRm"], A2["skEm"])
    assert (shared_secret, enc) == (A2["shared_secret"], A2["enc"])
    ks = iv.key_schedule_base(shared_secret, A2["info"])
    for name in ("key_schedule_context", "secret", "key", "base_nonce", "exporter_secret"):
        assert ks[name] == A2[name], name


def test_rfc9180_a2_seal_and_open_sequence_0() -> None:
    sealed = iv.hpke_x25519_seal(A2["pkRm"], A2["pt"], A2["info"], A2["aad"], A2["skEm"])
    assert sealed == A2["enc"] + A2["ct"]
    assert iv.hpke_x25519_open(A2["skRm"], sealed, A2["info"], A2["aad"]) == A2["pt"]
    with pytest.raises(iv.IndependentDecryptError):
        iv.hpke_x25519_open(A2["skRm"], sealed, A2["info"], b"Count-1")


def test_hpke_agrees_with_cryptography_both_ways() -> None:
    """cryptography's HPKE (oracle only) opens ours, and we open its output."""
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    sk = x25519.X25519PrivateKey.from_private_bytes(mv.HQ_X25519_PRIVATE)
    ours = iv.hpke_encrypt(iv.SUITE_X25519, mv.HQ_PUBLIC[iv.SUITE_X25519], b"pt", b"info")
    assert suite.decrypt(ours, sk, info=b"info") == b"pt"
    theirs = suite.encrypt(b"pt", sk.public_key(), info=b"info")
    assert iv.hpke_decrypt(iv.SUITE_X25519, mv.HQ_X25519_PRIVATE, theirs, b"info") == b"pt"


# --------------------------------------------------------------------------- round trips

KIND_PAYLOADS = [
    ("purchase", mv.purchase(3, mv.TS0), None),
    ("consent-stats", mv.CONSENT_STATS, None),
    ("purge", {"reason": "max-age", "count": 4}, [2, 5, b"\x07" * 32]),
]


@pytest.mark.parametrize("suite", iv.SUITES)
@pytest.mark.parametrize(("kind", "payload", "purged"), KIND_PAYLOADS)
def test_seal_decode_verify_open(suite: str, kind: str, payload: Any, purged: Any) -> None:
    h = mv.header(7, kind, mv.TS0, b"\x01" * 32, purged=purged)
    env = iv.seal(h, payload, mv.TERMINAL_SEED, mv.HQ_PUBLIC[suite], suite)
    decoded = iv.decode(env)
    assert {k: v for k, v in decoded.items() if k not in ("ct", "sig")} == h
    iv.verify(env, mv.TERMINAL_PUBLIC)
    assert iv.open_payload(env, suite, mv.HQ_PRIVATE[suite]) == payload
    assert iv.envelope_hash(env) == hashlib.sha256(env).digest()


def test_seal_is_deterministic_with_injected_ephemeral_key() -> None:
    h, p = mv.header(1, "purchase", mv.TS0, bytes(32)), mv.purchase(1, mv.TS0)
    pub = mv.HQ_PUBLIC[iv.SUITE_X25519]
    first = iv.seal(h, p, mv.TERMINAL_SEED, pub, iv.SUITE_X25519, mv.EPH[0])
    assert first == iv.seal(h, p, mv.TERMINAL_SEED, pub, iv.SUITE_X25519, mv.EPH[0])
    assert first != iv.seal(h, p, mv.TERMINAL_SEED, pub, iv.SUITE_X25519)


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"stream": b"\x00" * 15},
        {"prev": b"\x00" * 33},
        {"terminal": "a/b"},
        {"kind": "purge"},  # without purged
        {"purged": [1, 1, b"\x00" * 32]},  # in a purchase
        {"sig_kid": "0000000000000000"},  # does not name the signing key
        {"seq": 0},
    ],
)
def test_seal_refuses_invalid_headers(change: dict[str, Any]) -> None:
    h = {**mv.header(1, "purchase", mv.TS0, bytes(32)), **change}
    with pytest.raises(iv.IndependentError):
        iv.seal(
            h,
            mv.purchase(1, mv.TS0),
            mv.TERMINAL_SEED,
            mv.HQ_PUBLIC[iv.SUITE_X25519],
            iv.SUITE_X25519,
        )


def test_sig_kid_is_first_8_bytes_of_sha256_hex() -> None:
    assert iv.sig_kid(bytes(32)) == "66687aadf862bd77"


# --------------------------------------------------------------------------- committed vectors


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((VECTORS / name).read_text()))


@pytest.mark.parametrize("name", sorted(mv.build_vectors()))
def test_committed_vectors_reproduce(name: str) -> None:
    """Deterministic files must equal a rebuild byte for byte; the hybrid one all but its ct."""
    built = mv.build_vectors()[name]
    on_disk = (VECTORS / name).read_text()
    if built["deterministic"]:
        assert on_disk == mv.dumps(built)
    else:
        old = json.loads(on_disk)
        for key, value in built.items():
            if key not in mv.RANDOM_FIELDS:
                assert old[key] == value, key


POSITIVE = ["purchase-x25519.json", "consent-stats-x25519.json", "purge-x25519.json",
            "purchase-mlkem768x25519.json"]  # fmt: skip


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_vectors_are_consistent(name: str) -> None:
    """Every field of a vector follows from its keys and the others, without make_vectors."""
    v = _load(name)
    env = bytes.fromhex(v["envelope_hex"])
    pub = base64.b64decode(v["terminal_public_key_b64"])
    priv = base64.b64decode(v["hq_private_key_b64"])
    assert iv.sig_kid(pub) == v["sig_kid"] == v["header"]["sig_kid"]
    assert iv.rejection_stage(env, pub, v["suite"], priv) is None
    m = iv.decode(env)
    assert mv.header_json(m) == v["header"]
    assert iv.info_for(m).hex() == v["info_cbor_hex"]
    assert iv.signed_bytes(m).hex() == v["signed_bytes_hex"]
    assert iv.envelope_hash(env).hex() == v["envelope_sha256_hex"]
    assert iv.open_payload(env, v["suite"], priv) == v["payload"]
    assert iv.encode(v["payload"]).hex() == v["payload_cbor_hex"]
    if v["deterministic"]:
        seed = bytes.fromhex(v["ephemeral_seed_hex"])
        assert m["ct"][:32] == iv.x25519_public(seed)


def test_chain_links() -> None:
    chain = _load("chain-x25519.json")
    pub = base64.b64decode(chain["terminal_public_key_b64"])
    priv = base64.b64decode(chain["hq_private_key_b64"])
    prev, hashes = bytes(32), {}
    for seq, entry in enumerate(chain["envelopes"], start=1):
        env = bytes.fromhex(entry["envelope_hex"])
        assert iv.rejection_stage(env, pub, chain["suite"], priv) is None
        m = iv.decode(env)
        assert (m["seq"], m["prev"], m["stream"]) == (seq, prev, mv.STREAM)
        assert iv.open_payload(env, chain["suite"], priv) == entry["payload"]
        prev = hashes[seq] = iv.envelope_hash(env)
        assert prev.hex() == entry["envelope_sha256_hex"]
    kinds = [e["header"]["kind"] for e in chain["envelopes"]]
    assert kinds == ["purchase", "purchase", "consent-stats", "purchase", "purge"]
    assert iv.decode(bytes.fromhex(chain["envelopes"][4]["envelope_hex"]))["purged"] == [
        2,
        3,
        hashes[3],
    ]


@pytest.mark.parametrize("case", NEGATIVE["cases"], ids=[c["name"] for c in NEGATIVE["cases"]])
def test_negative_rejected_at_stated_stage(case: dict[str, str]) -> None:
    env = bytes.fromhex(case["envelope_hex"])
    stage = iv.rejection_stage(env, mv.TERMINAL_PUBLIC, NEGATIVE["suite"], mv.HQ_X25519_PRIVATE)
    assert stage == case["expect"]


def test_vector_card_numbers_and_gtins_are_ean13() -> None:
    assert mv.CARD.startswith("2099")
    assert iv.ean13_valid(mv.CARD)
    assert all(iv.ean13_valid(g) for g in mv.GTINS)
    assert not iv.ean13_valid("2099000012341")


# --------------------------------------------------------------------------- CBOR codec

_ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
_leaves = _ints | st.binary(max_size=300) | st.text(max_size=40)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=30), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(_values)
def test_cbor_round_trip(value: Any) -> None:
    assert iv.decode_cbor(iv.encode(value)) == value


@settings(max_examples=300)
@given(_values)
def test_cbor_encoder_matches_cbor2_canonical(value: Any) -> None:
    assert iv.encode(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=100)
@given(_values)
def test_cbor_every_truncation_is_rejected(value: Any) -> None:
    data = iv.encode(value)
    for end in range(len(data)):
        with pytest.raises(iv.IndependentDecodeError):
            iv.decode_cbor(data[:end])


@pytest.mark.parametrize(
    ("hex_input", "reason"),
    [
        ("f93c00", "float"),  # half float 1.0
        ("fa3f800000", "float"),
        ("fb3ff0000000000000", "float"),
        ("f4", "simple"), ("f5", "simple"), ("f6", "simple"), ("f7", "simple"), ("f820", "simple"),
        ("c11a5f5e1000", "tag"), ("d818450102030405", "tag"),
        ("5f4101ff", "indefinite"), ("7f6161ff", "indefinite"),
        ("9f01ff", "indefinite"), ("bf616101ff", "indefinite"), ("ff", "break"),
        ("1817", "non-shortest"), ("1900ff", "non-shortest"), ("1a0000ffff", "non-shortest"),
        ("1b00000000ffffffff", "non-shortest"), ("3817", "non-shortest"),
        ("5800", "non-shortest"), ("780161", "non-shortest"), ("9800", "non-shortest"),
        ("b800", "non-shortest"),
        ("1c", "reserved"), ("1d", "reserved"), ("1e", "reserved"),
        ("a2616201616101", "not sorted"), ("a2626161016162", "not sorted"),
        ("a2616101616102", "duplicate"), ("a10101", "not a text string"),
        ("a1410101", "not a text string"),
        ("62c328", "UTF-8"), ("63eda080", "UTF-8"), ("62c0af", "UTF-8"),
        ("0100", "trailing"), ("", "truncated"), ("19", "truncated"), ("4201", "truncated"),
        ("9b7fffffffffffffff", "truncated"), ("bb7fffffffffffffff", "truncated"),
    ],
)  # fmt: skip
def test_cbor_decoder_rejects(hex_input: str, reason: str) -> None:
    with pytest.raises(iv.IndependentDecodeError, match=reason):
        iv.decode_cbor(bytes.fromhex(hex_input))


def test_cbor_decoder_bounds_nesting() -> None:
    with pytest.raises(iv.IndependentDecodeError, match="deep"):
        iv.decode_cbor(b"\x81" * 40 + b"\x00")


@pytest.mark.parametrize("value", [True, None, 1.5, {1: 2}, 2**64, -(2**64) - 1, "\ud800"])
def test_cbor_encoder_refuses_what_the_spec_forbids(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        iv.encode(value)
