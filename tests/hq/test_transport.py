"""The body rules of POST /v1/envelopes, sans-I/O: tables of (bytes, outcome)."""

from __future__ import annotations

import gzip
import zlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hq.errors import Malformed, Refused, TooLarge, UnsupportedMedia
from hq.transport import (
    MAX_BODY,
    MAX_ENVELOPES,
    check_content_type,
    gunzip_limited,
    is_gzipped,
    parse_batch,
)


@pytest.mark.parametrize(
    ("body", "elements"),
    [
        (bytes.fromhex("8141ff"), [b"\xff"]),
        (bytes.fromhex("82 40 43616263"), [b"", b"abc"]),
        (bytes.fromhex("9f 4101 4102 ff"), [b"\x01", b"\x02"]),  # indefinite array
        (bytes.fromhex("81 5800"), [b""]),  # non-shortest length: harmless, accepted
    ],
)
def test_parse_batch_splits_an_array_of_byte_strings(body: bytes, elements: list[bytes]) -> None:
    assert parse_batch(body) == elements


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty body"),
        (bytes.fromhex("a0"), "got a map"),
        (bytes.fromhex("01"), "got an unsigned integer"),
        (bytes.fromhex("80"), "empty batch"),
        (bytes.fromhex("9fff"), "empty batch"),
        (bytes.fromhex("81 6161"), "element 0 is a text string"),
        (bytes.fromhex("82 4100 01"), "element 1 is an unsigned integer"),
        (bytes.fromhex("81 c2 4101"), "element 0 is a tag"),
        (bytes.fromhex("81 5f 4101 ff"), "indefinite-length byte string"),
        (bytes.fromhex("81 45 0102"), "element 0 is truncated"),
        (bytes.fromhex("82 4101"), "truncated CBOR"),
        (bytes.fromhex("81 4101 00"), "1 trailing bytes"),
        (bytes.fromhex("9f 4101"), "truncated CBOR"),
        (bytes.fromhex("1c"), "reserved additional information"),
        (bytes.fromhex("81 5a0000"), "truncated CBOR"),
    ],
)
def test_parse_batch_refuses_anything_else_with_a_reason(body: bytes, match: str) -> None:
    with pytest.raises(Malformed, match=match):
        parse_batch(body)


def test_too_many_envelopes_is_too_large_without_reading_them() -> None:
    with pytest.raises(TooLarge, match="1001 envelopes"):
        parse_batch(bytes.fromhex("9903e9"))  # claims 1001 elements, holds none
    exactly = cbor2.dumps([b"x"] * MAX_ENVELOPES)
    assert len(parse_batch(exactly)) == MAX_ENVELOPES
    indefinite = b"\x9f" + b"\x41x" * (MAX_ENVELOPES + 1) + b"\xff"
    with pytest.raises(TooLarge, match="more than 1000"):
        parse_batch(indefinite)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=20))
def test_parse_batch_inverts_cbor_encoding(elements: list[bytes]) -> None:
    assert parse_batch(cbor2.dumps(elements)) == elements


@given(st.binary(max_size=200))
def test_parse_batch_on_any_bytes_returns_or_refuses(body: bytes) -> None:
    try:
        parse_batch(body)
    except Refused as exc:
        assert exc.status in (400, 413)


def test_gunzip_round_trip_and_multi_member() -> None:
    assert gunzip_limited(gzip.compress(b"abc")) == b"abc"
    assert gunzip_limited(gzip.compress(b"ab") + gzip.compress(b"c")) == b"abc"


def test_gunzip_stops_a_bomb_one_byte_past_the_cap() -> None:
    bomb = gzip.compress(bytes(MAX_BODY * 4), compresslevel=9)
    assert len(bomb) < 20_000
    with pytest.raises(TooLarge, match="inflates to more than"):
        gunzip_limited(bomb)
    assert len(gunzip_limited(gzip.compress(bytes(MAX_BODY)))) == MAX_BODY  # at the cap: ok


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "body is empty"),
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b"abcdef")[:-6], "truncated"),
        (zlib.compress(b"abc"), "not valid gzip"),  # zlib framing is not gzip
    ],
)
def test_gunzip_refuses_broken_input(data: bytes, match: str) -> None:
    with pytest.raises(Malformed, match=match):
        gunzip_limited(data)


@pytest.mark.parametrize(
    "value", ["application/cbor", "Application/CBOR", "application/cbor; charset=binary"]
)
def test_cbor_content_types_are_accepted(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize("value", [None, "", "application/json", "text/plain", "application/cb"])
def test_other_content_types_are_unsupported(value: str | None) -> None:
    with pytest.raises(UnsupportedMedia):
        check_content_type(value)


def test_content_encodings() -> None:
    assert is_gzipped(None) is False
    assert is_gzipped("identity") is False
    assert is_gzipped("gzip") is True
    for coding in ("br", "deflate", "gzip, gzip", "zstd"):
        with pytest.raises(UnsupportedMedia):
            is_gzipped(coding)
