"""auto: decide the framing per frame from its first byte, for readers of unknown setup.

==================  ==========================================================
first byte          framing of this frame
==================  ==========================================================
STX (0x02)          stx-etx
0x0B                magstripe (the raw track-2 start sentinel ';')
anything else       a crlf line; a line that begins with ``]`` must carry a
                    valid AIM identifier (aim), otherwise it is plain crlf
==================  ==========================================================

Resynchronisation across framings: STX or 0x0B inside a crlf/aim line ends that line as
``Reject("incomplete")`` and starts a frame of their own framing, so garbage before an
stx-etx or magstripe frame never costs that frame. Inside stx-etx and magstripe frames only
their own start byte resynchronises (0x02 is the digit '2' on a track, for instance). After
an stx-etx ETX, STX, 0x0B and ``]`` count as frame starts (see `stx_etx`). A crlf line has no
start byte: garbage just before one is only shed by a terminator or an inter-character gap.
"""

from __future__ import annotations

from collections import deque

from drivers.protocols.aim import AIM_FLAG, line_with_optional_aim
from drivers.protocols.base import DEFAULT_GAP_S, MAX_FRAME, Event, Machine, MachineDecoder
from drivers.protocols.crlf import LineMachine
from drivers.protocols.magstripe import SS, MagstripeMachine
from drivers.protocols.stx_etx import STX, StxEtxMachine


class AutoMachine(Machine):
    """Routes each frame to the machine its first byte names; see the module docstring."""

    def __init__(self, sink: deque[Event], max_len: int) -> None:
        super().__init__(sink, max_len)
        self._line = LineMachine(
            sink, max_len, finish=line_with_optional_aim, resync=frozenset({STX, SS})
        )
        self._stx = StxEtxMachine(sink, max_len, frame_starts=frozenset({STX, SS, AIM_FLAG}))
        self._mag = MagstripeMachine(sink, max_len)
        self._active: Machine | None = None

    def step(self, b: int) -> bool:
        active = self._active
        if active is None:
            if b == STX:
                active = self._stx
            elif b == SS:
                active = self._mag
            else:
                active = self._line
            if active is not self._line:
                self._line.forget_pair()
            self._active = active
        if not active.step(b):
            self._active = None
            return False
        if not active.busy():
            self._active = None
        return True

    def busy(self) -> bool:
        return self._active is not None and self._active.busy()

    def on_gap(self) -> None:
        if self._active is not None:
            self._active.on_gap()
            self._active = None


class AutoDecoder(MachineDecoder):
    """Decoder for the auto framing."""

    def __init__(self, *, gap_s: float = DEFAULT_GAP_S, max_len: int = MAX_FRAME) -> None:
        super().__init__(lambda sink: AutoMachine(sink, max_len), gap_s)
