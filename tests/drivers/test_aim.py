"""aim framing: a crlf line that begins with an AIM symbology identifier (]E0, ]C0, ]Q1…)."""

from __future__ import annotations

import pytest

from drivers.protocols import Frame, Reject
from drivers.protocols.aim import split_aim
from firmware_stubs.framing import FramingOptions
from tests.drivers.helpers import CARD, Row, both_ways, check_decodes, check_encodes, ids

C = CARD.encode()


def aim(data: bytes, symbology: str) -> Frame:
    return Frame(data, framing="aim", symbology=symbology)


ROWS = [
    Row("ean-13", b"]E0" + C + b"\r\n", [aim(C, "]E0")], (CARD, FramingOptions(aim_id="]E0"))),
    Row(
        "code 128",
        b"]C0" + C + b"\r",
        [aim(C, "]C0")],
        (CARD, FramingOptions(aim_id="]C0", terminator=b"\r")),
    ),
    Row(
        "qr",
        b"]Q1" + C + b"\n",
        [aim(C, "]Q1")],
        (CARD, FramingOptions(aim_id="]Q1", terminator=b"\n")),
    ),
    Row("lower-case code and letter modifier", b"]d1abc\r", [aim(b"abc", "]d1")]),
    Row("identifier missing", C + b"\r\n", [Reject("bad-aim-id")]),
    Row("code must be a letter", b"]00" + C + b"\r", [Reject("bad-aim-id")]),
    Row("modifier must be a letter or digit", b"]E-" + C + b"\r", [Reject("bad-aim-id")]),
    Row("too short for an identifier", b"]E\r", [Reject("bad-aim-id")]),
    Row("identifier and no data", b"]E0\r", [Reject("empty")]),
    Row("unterminated ends at the gap", b"]E0209", [Reject("incomplete")]),
    Row("too long", b"]E0" + b"1" * 300 + b"\r\n", [Reject("too-long")]),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_bytes_decode_to_events(row: Row) -> None:
    check_decodes("aim", row)


@pytest.mark.parametrize("row", both_ways(ROWS), ids=ids(both_ways(ROWS)))
def test_stub_encodes_the_read_to_these_bytes(row: Row) -> None:
    check_encodes(row)


def test_identifier_is_kept_apart_from_the_payload() -> None:
    assert split_aim(b"]E0" + C) == ("]E0", C)
    assert split_aim(C) is None
