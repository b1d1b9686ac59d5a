"""auto framing: the first byte of each frame decides its framing."""

from __future__ import annotations

import pytest

from drivers.protocols import Frame, Reject
from tests.drivers.helpers import CARD, Row, check_decodes, ids
from tests.drivers.test_magstripe import SHORT, TRACK
from tests.drivers.test_stx_etx import NO_BCC, WITH_BCC

C = CARD.encode()
LINE = C + b"\r\n"
AIM = b"]E0" + C + b"\r\n"


def f(framing: str, data: bytes = C, symbology: str | None = None) -> Frame:
    return Frame(data, framing=framing, symbology=symbology)  # type: ignore[arg-type]


ROWS = [
    Row("crlf", LINE, [f("crlf")]),
    Row("stx-etx", WITH_BCC, [f("stx-etx")]),
    Row("stx-etx without bcc", NO_BCC, [f("stx-etx")]),
    Row("aim", AIM, [f("aim", symbology="]E0")]),
    Row("magstripe (its digits include STX and ETX values)", TRACK, [f("magstripe")]),
    Row(
        "every framing in a row",
        LINE + WITH_BCC + AIM + TRACK + NO_BCC + WITH_BCC + SHORT,
        [
            f("crlf"),
            f("stx-etx"),
            f("aim", symbology="]E0"),
            f("magstripe"),
            f("stx-etx"),
            f("stx-etx"),
            f("magstripe", b"12"),
        ],
    ),
    Row("a line that starts with ] needs a valid identifier", b"]-" + LINE, [Reject("bad-aim-id")]),
    Row(
        "garbage before STX is shed by STX",
        b"garbage" + WITH_BCC,
        [Reject("incomplete"), f("stx-etx")],
    ),
    Row(
        "garbage before a track is shed by its sentinel",
        b"garbage" + TRACK,
        [Reject("incomplete"), f("magstripe")],
    ),
    Row("stx-etx without bcc then a track", NO_BCC + TRACK, [f("stx-etx"), f("magstripe")]),
    Row("stx-etx without bcc then aim", NO_BCC + AIM, [f("stx-etx"), f("aim", symbology="]E0")]),
    Row(
        # Documented limitation: a digit after ETX may be a BCC; it is taken as a wrong one.
        "stx-etx without bcc then a bare line loses the line's first digit",
        NO_BCC + LINE,
        [Reject("bad-bcc"), f("crlf", C[1:])],
    ),
    Row("garbage after a line waits for the gap", LINE + b"zz", [f("crlf"), Reject("incomplete")]),
    Row(
        "too long line, then a frame",
        b"1" * 300 + b"\r\n" + WITH_BCC,
        [Reject("too-long"), f("stx-etx")],
    ),
    Row(
        "STX cuts a too-long line short", b"1" * 300 + WITH_BCC, [Reject("too-long"), f("stx-etx")]
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_bytes_decode_to_events(row: Row) -> None:
    check_decodes("auto", row)
