"""magstripe: ISO/IEC 7811-2 track 2 as a raw-mode reader sends it, one character per byte.

Why raw characters and not ASCII: the issue asks for parity and LRC errors to be counted,
and only the raw track characters carry them. Each byte is one 5-bit track-2 character:

    bits 0-3  the value (0-9 digits, 0xB ';' start sentinel, 0xD '=' separator,
              0xF '?' end sentinel, 0xA ':', 0xC '<', 0xE '>' control characters)
    bit 4     odd parity over bits 0-4
    bits 5-7  zero (a byte with any of them set is not a track character)

So ';' is 0x0B, '=' 0x0D, '?' 0x1F, '0' 0x10, '1' 0x01 ... Wire format::

    SS(0x0B) PAN [FS(0x0D) expiry, service code, discretionary data] ES(0x1F) LRC

The LRC character's bits 0-3 are the XOR of bits 0-3 of every character from SS to ES
inclusive; its bit 4 is odd parity over its own bits (ISO/IEC 7811-2). The LRC is mandatory.

The frame's payload is the PAN (the characters before the first separator) rendered as ASCII
('0'..'9'; control characters as ':', '<', '>' so the card rules reject them). Any character
with bad parity makes the frame ``Reject("parity")``; a wrong LRC ``Reject("bad-lrc")``;
SS inside a frame ends it as ``Reject("incomplete")`` and starts a new one; bytes outside a
frame are one ``Reject("noise")`` per run; over MAX_FRAME characters ``Reject("too-long")``.
"""

from __future__ import annotations

import enum
from collections import deque

from drivers.protocols.base import (
    DEFAULT_GAP_S,
    MAX_FRAME,
    Event,
    Frame,
    Machine,
    MachineDecoder,
    Reject,
)

SS = 0x0B  # ';' start sentinel, parity bit clear (value has three 1 bits)
ES = 0x1F  # '?' end sentinel, parity bit set (value has four 1 bits)
FS_VALUE = 0xD  # '=' field separator


def is_track2_char(b: int) -> bool:
    """True for a byte that is a 5-bit track-2 character with correct odd parity."""
    return b <= 0x1F and b.bit_count() % 2 == 1


class _State(enum.Enum):
    IDLE = enum.auto()
    NOISE = enum.auto()
    FRAME = enum.auto()
    AFTER_ES = enum.auto()
    DISCARD = enum.auto()
    DISCARD_ES = enum.auto()


class MagstripeMachine(Machine):
    """Track-2 frames; see the module docstring."""

    def __init__(self, sink: deque[Event], max_len: int) -> None:
        super().__init__(sink, max_len)
        self._state = _State.IDLE
        self._chars: list[int] = []
        self._lrc = 0
        self._parity_errors = 0

    def _start(self) -> None:
        self._state = _State.FRAME
        self._chars.clear()
        self._lrc = SS & 0xF
        self._parity_errors = 0

    def _finish(self, lrc_char: int) -> None:
        if self._parity_errors:
            self._emit(Reject("parity"))
        elif not is_track2_char(lrc_char) or lrc_char & 0xF != self._lrc:
            self._emit(Reject("bad-lrc"))
        else:
            pan = bytearray()
            for value in self._chars:
                if value == FS_VALUE:
                    break
                pan.append(0x30 + value)
            self._emit(Frame(bytes(pan), framing="magstripe") if pan else Reject("empty"))
        self._chars.clear()
        self._state = _State.IDLE

    def step(self, b: int) -> bool:
        state = self._state
        if state is _State.FRAME:
            if b == SS:
                self._emit(Reject("incomplete"))
                self._start()
            elif b == ES:
                self._lrc ^= ES & 0xF
                self._state = _State.AFTER_ES
            else:
                if not is_track2_char(b):
                    self._parity_errors += 1
                self._chars.append(b & 0xF)
                self._lrc ^= b & 0xF
                if len(self._chars) > self._max_len:
                    self._emit(Reject("too-long"))
                    self._chars.clear()
                    self._state = _State.DISCARD
        elif state is _State.IDLE or state is _State.NOISE:
            if b == SS:
                if state is _State.NOISE:
                    self._emit(Reject("noise"))
                self._start()
            else:
                self._state = _State.NOISE
        elif state is _State.AFTER_ES:
            self._finish(b)
        elif state is _State.DISCARD:
            if b == SS:
                self._start()
            elif b == ES:
                self._state = _State.DISCARD_ES
        else:  # DISCARD_ES: swallow the skipped frame's LRC
            self._state = _State.IDLE
        return True

    def busy(self) -> bool:
        return self._state is not _State.IDLE

    def on_gap(self) -> None:
        state = self._state
        if state is _State.NOISE:
            self._emit(Reject("noise"))
        elif state is _State.FRAME or state is _State.AFTER_ES:
            self._emit(Reject("incomplete"))
        self._chars.clear()
        self._state = _State.IDLE


class MagstripeDecoder(MachineDecoder):
    """Decoder for the magstripe framing."""

    def __init__(self, *, gap_s: float = DEFAULT_GAP_S, max_len: int = MAX_FRAME) -> None:
        super().__init__(lambda sink: MagstripeMachine(sink, max_len), gap_s)
