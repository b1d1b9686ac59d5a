"""stx-etx framing: STX payload ETX [BCC], the BCC checked when present."""

from __future__ import annotations

import pytest

from drivers.protocols import Frame, Reject
from drivers.protocols.stx_etx import StxEtxDecoder
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

STX, ETX = b"\x02", b"\x03"
C, C2 = CARD.encode(), CARD2.encode()
BCC = b"\x3f"  # XOR of CARD's digits and ETX, worked out by hand once
BCC2 = b"\x33"
WITH_BCC = STX + C + ETX + BCC
NO_BCC = STX + C + ETX


def frame(data: bytes) -> Frame:
    return Frame(data, framing="stx-etx")


ROWS = [
    Row("with bcc", WITH_BCC, [frame(C)], (CARD, FramingOptions(bcc=True))),
    Row("without bcc, ended by the gap", NO_BCC, [frame(C)], (CARD, FramingOptions(bcc=False))),
    Row("second card with bcc", STX + C2 + ETX + BCC2, [frame(C2)], (CARD2, FramingOptions())),
    Row("without bcc, ended by the next STX", NO_BCC + NO_BCC, [frame(C), frame(C)]),
    Row("with and without bcc mixed", WITH_BCC + NO_BCC + WITH_BCC, [frame(C)] * 3),
    Row("wrong bcc", NO_BCC + b"\x3c", [Reject("bad-bcc")]),
    Row(
        "wrong bcc does not cost the next frame",
        NO_BCC + b"\x3c" + WITH_BCC,
        [Reject("bad-bcc"), frame(C)],
    ),
    Row("noise before a frame is one reject", b"xyz\r\n" + WITH_BCC, [Reject("noise"), frame(C)]),
    Row("noise after a frame", WITH_BCC + b"zz", [frame(C), Reject("noise")]),
    Row("ETX alone is noise", ETX, [Reject("noise")]),
    Row("STX inside a frame restarts it", STX + b"20" + WITH_BCC, [Reject("incomplete"), frame(C)]),
    Row("unterminated ends at the gap", STX + b"2099", [Reject("incomplete")]),
    Row("empty frame", STX + ETX + ETX, [Reject("empty")]),
    Row("CR and LF are data here", STX + b"1\r\n" + ETX + b"\x35", [frame(b"1\r\n")]),
    Row("256 bytes is the longest frame", STX + b"1" * 256 + ETX + ETX, [frame(b"1" * 256)]),
    Row(
        "too long: skipped up to its ETX and BCC",
        STX + b"1" * 257 + ETX + b"\x32" + WITH_BCC,
        [Reject("too-long"), frame(C)],
    ),
    Row(
        "too long without bcc: the next STX is not eaten",
        STX + b"1" * 300 + ETX + WITH_BCC,
        [Reject("too-long"), frame(C)],
    ),
    Row(
        "STX resynchronises a too-long frame",
        STX + b"1" * 300 + WITH_BCC,
        [Reject("too-long"), frame(C)],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_bytes_decode_to_events(row: Row) -> None:
    check_decodes("stx-etx", row)


@pytest.mark.parametrize("row", both_ways(ROWS), ids=ids(both_ways(ROWS)))
def test_stub_encodes_the_read_to_these_bytes(row: Row) -> None:
    check_encodes(row)


def test_frame_with_bcc_is_delivered_at_once() -> None:
    decoder = StxEtxDecoder()
    decoder.receive_data(WITH_BCC, 0.0)
    assert events_of(decoder) == [frame(C)]
    assert decoder.deadline() is None


def test_frame_without_bcc_waits_for_the_gap_to_know_there_is_none() -> None:
    decoder = StxEtxDecoder(gap_s=0.05)
    decoder.receive_data(NO_BCC, 0.0)
    assert events_of(decoder) == []
    assert decoder.deadline() == pytest.approx(0.05)
    decoder.expire(0.05)
    assert events_of(decoder) == [frame(C)]
