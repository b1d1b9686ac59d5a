"""The bytes a scanner puts on the wire for one read, in each framing.

This is the device side, the inverse of `drivers.protocols`, and it is written without
importing drivers/ on purpose: an encoder that shared the decoder's code would share its bugs,
and the decoder tables check each side against literal bytes. Formats (docs/serial.md):

- crlf:      payload + CR | LF | CRLF
- stx-etx:   STX payload ETX [BCC], BCC = XOR of the bytes after STX up to and including ETX
- aim:       ]cm payload + terminator (``]E0`` EAN-13, ``]C0`` Code 128, ``]Q1`` QR …)
- magstripe: raw ISO/IEC 7811-2 track 2, one 5-bit character per byte (value in bits 0-3,
             odd parity in bit 4): ; PAN = tail ? LRC
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

Framing = Literal["crlf", "stx-etx", "aim", "magstripe"]
FRAMINGS: Final[tuple[str, ...]] = get_args(Framing)

STX: Final = 0x02
ETX: Final = 0x03
TERMINATORS: Final[dict[str, bytes]] = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}
AIM_IDS: Final[tuple[str, ...]] = ("]E0", "]C0", "]Q1")
TRACK2_CHARS: Final = "0123456789:;<=>?"
DEFAULT_TRACK_TAIL: Final = "4912101"  # expiry 4912, service code 101, no discretionary data


@dataclass(frozen=True, slots=True)
class FramingOptions:
    """How a scanner is set up: line terminator, BCC on/off, AIM id, track-2 tail."""

    terminator: bytes = b"\r\n"
    bcc: bool = True
    aim_id: str = "]E0"
    track_tail: str = DEFAULT_TRACK_TAIL

    def __post_init__(self) -> None:
        if self.terminator not in TERMINATORS.values():
            raise ValueError(f"terminator must be CR, LF or CRLF, not {self.terminator!r}")
        if len(self.aim_id) != 3 or self.aim_id[0] != "]" or not self.aim_id[1].isalpha():
            raise ValueError(f"AIM id must look like ]E0, not {self.aim_id!r}")


@dataclass(frozen=True, slots=True)
class Encoded:
    """One frame on the wire.

    ``spare`` are the positions whose corruption may leave the read intact (an AIM code or
    modifier, the LF of a CRLF): a fault meant to destroy the read must avoid them.
    ``open_end`` is True when the receiver cannot know the frame has ended until the next
    frame start or a gap (stx-etx without BCC).
    """

    wire: bytes
    framing: Framing
    symbology: str | None = None
    spare: frozenset[int] = field(default_factory=frozenset)
    open_end: bool = False


def bcc(body: bytes) -> int:
    """XOR of ``body``, which must be the bytes after STX up to and including ETX."""
    value = 0
    for b in body:
        value ^= b
    return value


def encode_crlf(payload: bytes, terminator: bytes = b"\r\n") -> bytes:
    return payload + terminator


def encode_stx_etx(payload: bytes, *, with_bcc: bool = True) -> bytes:
    body = payload + bytes([ETX])
    return bytes([STX]) + body + (bytes([bcc(body)]) if with_bcc else b"")


def encode_aim(payload: bytes, aim_id: str = "]E0", terminator: bytes = b"\r\n") -> bytes:
    return aim_id.encode("ascii") + payload + terminator


def track2_char(c: str) -> int:
    """The raw byte of one track-2 character: value plus odd-parity bit."""
    value = TRACK2_CHARS.find(c)
    if len(c) != 1 or value < 0:
        raise ValueError(f"{c!r} is not a track-2 character ({TRACK2_CHARS})")
    return value | (0x10 if value.bit_count() % 2 == 0 else 0)


def encode_magstripe(pan: str, tail: str = DEFAULT_TRACK_TAIL) -> bytes:
    """``;PAN=tail?`` then the LRC, as raw track-2 characters."""
    chars = bytes(track2_char(c) for c in f";{pan}={tail}?")
    lrc_value = 0
    for b in chars:
        lrc_value ^= b & 0xF
    return chars + bytes([track2_char(TRACK2_CHARS[lrc_value])])


def encode(payload: str, framing: str, options: FramingOptions | None = None) -> Encoded:
    """Encode one read. ``payload`` is what the scanner read (a card number, or anything for
    crlf/stx-etx/aim as UTF-8; track-2 characters only for magstripe)."""
    opts = options or FramingOptions()
    data = payload.encode("utf-8")
    if framing == "crlf":
        wire = encode_crlf(data, opts.terminator)
        return Encoded(wire, "crlf", spare=_spare_pair(wire, opts.terminator))
    if framing == "stx-etx":
        return Encoded(encode_stx_etx(data, with_bcc=opts.bcc), "stx-etx", open_end=not opts.bcc)
    if framing == "aim":
        wire = encode_aim(data, opts.aim_id, opts.terminator)
        spare = _spare_pair(wire, opts.terminator) | {1, 2}
        return Encoded(wire, "aim", symbology=opts.aim_id, spare=spare)
    if framing == "magstripe":
        return Encoded(encode_magstripe(payload, opts.track_tail), "magstripe")
    raise ValueError(f"unknown framing {framing!r}; expected one of {', '.join(FRAMINGS)}")


def _spare_pair(wire: bytes, terminator: bytes) -> frozenset[int]:
    # The frame already ended at the first byte of a CRLF pair.
    return frozenset({len(wire) - 1}) if len(terminator) == 2 else frozenset()


def destructive_positions(encoded: Encoded) -> list[int]:
    """Positions where flipping any one bit must destroy the read (all but `Encoded.spare`)."""
    return [i for i in range(len(encoded.wire)) if i not in encoded.spare]


def flip_bit(wire: bytes, position: int, bit: int) -> bytes:
    flipped = bytearray(wire)
    flipped[position] ^= 1 << bit
    return bytes(flipped)
