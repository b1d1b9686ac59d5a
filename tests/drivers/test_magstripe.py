"""magstripe framing: raw ISO/IEC 7811-2 track 2 (5-bit characters with odd parity, LRC)."""

from __future__ import annotations

import pytest

from drivers.protocols import Frame, Reject
from drivers.protocols.magstripe import is_track2_char
from firmware_stubs.framing import FramingOptions
from tests.drivers.helpers import CARD, Row, both_ways, check_decodes, check_encodes, ids

# ;2099123456786=4912101? and its LRC, worked out by hand: every byte is the character's
# value (';'=B, '='=D, '?'=F) plus 0x10 when the value has an even number of 1 bits.
TRACK = bytes.fromhex("0b 02 10 19 19 01 02 13 04 15 16 07 08 16 0d 04 19 01 02 01 10 01 1f 0b")
SHORT = bytes.fromhex("0b 01 02 0d 1f 1a")  # ;12=? LRC ':'
NO_SEPARATOR = bytes.fromhex("0b 01 02 1f 07")  # ;12? LRC '7'


def track(data: bytes) -> Frame:
    return Frame(data, framing="magstripe")


def with_byte(data: bytes, position: int, value: int) -> bytes:
    return data[:position] + bytes([value]) + data[position + 1 :]


ROWS = [
    Row(
        "card (its LRC happens to equal the start sentinel)",
        TRACK,
        [track(CARD.encode())],
        (CARD, FramingOptions()),
    ),
    Row("short track", SHORT, [track(b"12")], ("12", FramingOptions(track_tail=""))),
    Row("PAN without separator", NO_SEPARATOR, [track(b"12")]),
    Row("two tracks", TRACK + SHORT, [track(CARD.encode()), track(b"12")]),
    Row("parity error in the PAN", with_byte(TRACK, 3, 0x09), [Reject("parity")]),
    Row("parity error after the separator", with_byte(TRACK, 16, 0x09), [Reject("parity")]),
    Row("a byte that is no track character", with_byte(TRACK, 3, 0x39), [Reject("parity")]),
    Row("wrong LRC", with_byte(SHORT, 5, 0x1C), [Reject("bad-lrc")]),
    Row("LRC with bad parity", with_byte(SHORT, 5, 0x0A), [Reject("bad-lrc")]),
    Row("no LRC before the gap", SHORT[:-1], [Reject("incomplete")]),
    Row("no end sentinel before the gap", SHORT[:-2], [Reject("incomplete")]),
    Row(
        "noise before a track is one reject",
        b"\x7f\x00abc" + TRACK,
        [Reject("noise"), track(CARD.encode())],
    ),
    Row(
        "start sentinel inside a track restarts it",
        SHORT[:3] + TRACK,
        [Reject("incomplete"), track(CARD.encode())],
    ),
    Row("empty PAN", bytes.fromhex("0b 0d 1f 19"), [Reject("empty")]),
    Row("control characters reach the card rules", bytes.fromhex("0b 1a 1c 1f 02"), [track(b":<")]),
    Row(
        "too long: skipped with its LRC",
        b"\x0b" + b"\x01" * 300 + b"\x1f\x1f" + SHORT,
        [Reject("too-long"), track(b"12")],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_bytes_decode_to_events(row: Row) -> None:
    check_decodes("magstripe", row)


@pytest.mark.parametrize("row", both_ways(ROWS), ids=ids(both_ways(ROWS)))
def test_stub_encodes_the_read_to_these_bytes(row: Row) -> None:
    check_encodes(row)


def test_exactly_sixteen_bytes_are_track_characters() -> None:
    chars = [b for b in range(256) if is_track2_char(b)]
    assert len(chars) == 16
    assert sorted(b & 0xF for b in chars) == list(range(16))
