"""stx-etx: STX payload ETX, then an optional block check character (BCC).

Wire format::

    STX(0x02) payload ETX(0x03) [BCC]        BCC = XOR of every byte after STX up to ETX

The BCC is optional and checked when present. Whether it is present can only be seen from the
byte after ETX, so the frame is held until that byte or a gap decides:

====================================  ===================================================
byte after ETX                        outcome
====================================  ===================================================
a frame start (STX; in auto also the  the frame had no BCC: Frame, and the byte starts the
magstripe sentinel and ``]``)         next frame
equal to the BCC                      Frame, BCC verified
anything else                         ``Reject("bad-bcc")``, byte consumed
nothing before the gap                Frame without BCC (so a reader that never sends a
                                      BCC costs one gap of latency)
====================================  ===================================================

Frame starts are tested before the BCC: a payload whose BCC happens to equal STX (only
possible with an even number of digits, so never a card number) is then delivered unchecked,
whereas the other order would swallow the next frame's STX.

Bytes outside a frame count as one ``Reject("noise")`` per run; STX inside a frame ends it as
``Reject("incomplete")`` and starts a new one (resynchronisation). Payloads over MAX_FRAME
bytes are ``Reject("too-long")`` and skipped up to their ETX (and the byte after it, which may
be their BCC).
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

STX = 0x02
ETX = 0x03


class _State(enum.Enum):
    IDLE = enum.auto()
    NOISE = enum.auto()
    FRAME = enum.auto()
    AFTER_ETX = enum.auto()
    DISCARD = enum.auto()
    DISCARD_ETX = enum.auto()


class StxEtxMachine(Machine):
    """STX/ETX frames with optional BCC; see the module docstring."""

    def __init__(
        self,
        sink: deque[Event],
        max_len: int,
        *,
        frame_starts: frozenset[int] = frozenset({STX}),
    ) -> None:
        super().__init__(sink, max_len)
        self._frame_starts = frame_starts
        self._state = _State.IDLE
        self._buf = bytearray()
        self._bcc = 0

    def _start(self) -> None:
        self._state = _State.FRAME
        self._buf.clear()
        self._bcc = 0

    def _deliver(self) -> None:
        self._emit(Frame(bytes(self._buf), framing="stx-etx") if self._buf else Reject("empty"))
        self._buf.clear()
        self._state = _State.IDLE

    def step(self, b: int) -> bool:
        state = self._state
        if state is _State.FRAME:
            if b == STX:
                self._emit(Reject("incomplete"))
                self._start()
            elif b == ETX:
                self._bcc ^= ETX
                self._state = _State.AFTER_ETX
            else:
                self._buf.append(b)
                self._bcc ^= b
                if len(self._buf) > self._max_len:
                    self._emit(Reject("too-long"))
                    self._buf.clear()
                    self._state = _State.DISCARD
            return True
        if state is _State.IDLE or state is _State.NOISE:
            if b == STX:
                if state is _State.NOISE:
                    self._emit(Reject("noise"))
                self._start()
            else:
                self._state = _State.NOISE
            return True
        if state is _State.AFTER_ETX:
            if b in self._frame_starts:
                self._deliver()
                return False
            if b == self._bcc:
                self._deliver()
            else:
                self._emit(Reject("bad-bcc"))
                self._buf.clear()
                self._state = _State.IDLE
            return True
        if state is _State.DISCARD:
            if b == STX:
                self._start()
            elif b == ETX:
                self._state = _State.DISCARD_ETX
            return True
        # DISCARD_ETX: the byte after a skipped frame's ETX may be its BCC
        self._state = _State.IDLE
        return b not in self._frame_starts

    def busy(self) -> bool:
        return self._state is not _State.IDLE

    def on_gap(self) -> None:
        state = self._state
        if state is _State.NOISE:
            self._emit(Reject("noise"))
        elif state is _State.FRAME:
            self._emit(Reject("incomplete"))
        elif state is _State.AFTER_ETX:
            self._deliver()
        self._buf.clear()
        self._state = _State.IDLE


class StxEtxDecoder(MachineDecoder):
    """Decoder for the stx-etx framing."""

    def __init__(self, *, gap_s: float = DEFAULT_GAP_S, max_len: int = MAX_FRAME) -> None:
        super().__init__(lambda sink: StxEtxMachine(sink, max_len), gap_s)
