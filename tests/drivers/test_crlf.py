"""crlf framing: payload then CR, LF, CRLF (or LFCR)."""

from __future__ import annotations

import pytest

from drivers.protocols import Frame, Reject
from drivers.protocols.crlf import CrlfDecoder
from firmware_stubs.framing import FramingOptions
from tests.drivers.helpers import (
    CARD,
    CARD2,
    Row,
    both_ways,
    check_decodes,
    check_encodes,
    events_of,
    ids,
)


def line(data: bytes) -> Frame:
    return Frame(data, framing="crlf")


C = CARD.encode()
ROWS = [
    Row("cr", C + b"\r", [line(C)], (CARD, FramingOptions(terminator=b"\r"))),
    Row("lf", C + b"\n", [line(C)], (CARD, FramingOptions(terminator=b"\n"))),
    Row("crlf", C + b"\r\n", [line(C)], (CARD, FramingOptions(terminator=b"\r\n"))),
    Row("lfcr is one terminator too", C + b"\n\r", [line(C)]),
    Row("two frames", C + b"\r\n" + CARD2.encode() + b"\r\n", [line(C), line(CARD2.encode())]),
    Row("any payload is a frame: the card rules judge it", b"abc\r", [line(b"abc")]),
    Row("framing bytes of others are data", b"\x02ab\x03\r", [line(b"\x02ab\x03")]),
    Row("lone terminators are empty frames", b"\r\r", [Reject("empty"), Reject("empty")]),
    Row("unterminated ends at the gap", b"2099", [Reject("incomplete")]),
    Row("256 bytes is the longest frame", b"1" * 256 + b"\r", [line(b"1" * 256)]),
    Row(
        "257 bytes is too long, skipped up to its terminator",
        b"1" * 257 + b"\r\n" + C + b"\r\n",
        [Reject("too-long"), line(C)],
    ),
    Row("too long is counted once, up to the gap", b"1" * 900, [Reject("too-long")]),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_bytes_decode_to_events(row: Row) -> None:
    check_decodes("crlf", row)


@pytest.mark.parametrize("row", both_ways(ROWS), ids=ids(both_ways(ROWS)))
def test_stub_encodes_the_read_to_these_bytes(row: Row) -> None:
    check_encodes(row)


def test_unterminated_frame_ends_exactly_at_the_gap() -> None:
    decoder = CrlfDecoder(gap_s=0.05)
    assert decoder.deadline() is None
    decoder.receive_data(b"2099", 10.0)
    assert decoder.deadline() == pytest.approx(10.05)
    decoder.expire(10.049)
    assert events_of(decoder) == []
    decoder.expire(10.05)
    assert events_of(decoder) == [Reject("incomplete")]
    assert decoder.deadline() is None


def test_late_timestamps_alone_never_split_a_frame() -> None:
    # Only the caller knows whether the line was idle or it was just slow to read.
    decoder = CrlfDecoder(gap_s=0.05)
    decoder.receive_data(C[:4], 0.0)
    decoder.receive_data(C[4:] + b"\r", 60.0)
    assert events_of(decoder) == [line(C)]


def test_new_bytes_push_the_deadline_back() -> None:
    decoder = CrlfDecoder(gap_s=0.05)
    decoder.receive_data(b"20", 1.0)
    decoder.receive_data(b"99", 1.04)
    decoder.expire(1.06)
    assert events_of(decoder) == []
    assert decoder.deadline() == pytest.approx(1.09)


def test_scanner_without_suffix_can_use_the_gap_as_terminator() -> None:
    decoder = CrlfDecoder(gap_s=0.05, unterminated_ok=True)
    decoder.receive_data(C, 0.0)
    assert events_of(decoder) == []
    decoder.expire(0.05)
    assert events_of(decoder) == [line(C)]


def test_crlf_pair_split_across_chunks_is_still_one_terminator() -> None:
    decoder = CrlfDecoder()
    decoder.receive_data(C + b"\r", 0.0)
    decoder.receive_data(b"\n", 0.5)
    assert events_of(decoder) == [line(C)]
