"""crlf: the payload then CR, LF, CRLF (or LFCR) — the default suffix of most scanners.

Wire format::

    payload CR | payload LF | payload CR LF | payload LF CR

There is no start byte, so after garbage the line resynchronises at the next terminator or at
an inter-character gap. The second byte of a CRLF/LFCR pair is swallowed; any other empty line
is ``Reject("empty")``. A payload still unterminated when the gap passes is
``Reject("incomplete")`` (pass ``unterminated_ok=True`` for a scanner configured with no
suffix: the gap then ends the frame). Payloads over MAX_FRAME bytes are ``Reject("too-long")``
and the rest up to the next terminator or gap is skipped.

`LineMachine` is shared with `aim` (which checks the identifier on each line) and `auto`
(which also breaks a line at STX or a magstripe start sentinel).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from drivers.protocols.base import (
    DEFAULT_GAP_S,
    MAX_FRAME,
    Event,
    Frame,
    Machine,
    MachineDecoder,
    Reject,
)

CR = 0x0D
LF = 0x0A

Finish = Callable[[bytes], Event]
"""Turns a terminated line's payload into its event (crlf: a Frame; aim: parse the id)."""


def plain_line(data: bytes) -> Event:
    return Frame(data, framing="crlf")


class LineMachine(Machine):
    """Lines ended by CR/LF; see the module docstring."""

    def __init__(
        self,
        sink: deque[Event],
        max_len: int,
        *,
        finish: Finish = plain_line,
        resync: frozenset[int] = frozenset(),
        unterminated_ok: bool = False,
    ) -> None:
        super().__init__(sink, max_len)
        self._finish = finish
        self._resync = resync
        self._unterminated_ok = unterminated_ok
        self._buf = bytearray()
        self._discarding = False
        self._pair: int | None = None  # the byte that would complete a CRLF/LFCR pair

    def forget_pair(self) -> None:
        """Another framing took the line: a later CR/LF is not the rest of our pair."""
        self._pair = None

    def step(self, b: int) -> bool:
        if b in (CR, LF):
            if b == self._pair:
                self._pair = None
                return True
            self._pair = LF if b == CR else CR
            if self._discarding:
                self._discarding = False
            elif self._buf:
                self._emit(self._finish(bytes(self._buf)))
                self._buf.clear()
            else:
                self._emit(Reject("empty"))
            return True
        self._pair = None
        if b in self._resync and self.busy():
            if self._buf:
                self._emit(Reject("incomplete"))
                self._buf.clear()
            self._discarding = False
            return False
        if self._discarding:
            return True
        self._buf.append(b)
        if len(self._buf) > self._max_len:
            self._emit(Reject("too-long"))
            self._buf.clear()
            self._discarding = True
        return True

    def busy(self) -> bool:
        return bool(self._buf) or self._discarding

    def on_gap(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._emit(self._finish(data) if self._unterminated_ok else Reject("incomplete"))
        self._discarding = False


class CrlfDecoder(MachineDecoder):
    """Decoder for the crlf framing."""

    def __init__(
        self,
        *,
        gap_s: float = DEFAULT_GAP_S,
        max_len: int = MAX_FRAME,
        unterminated_ok: bool = False,
    ) -> None:
        super().__init__(
            lambda sink: LineMachine(sink, max_len, unterminated_ok=unterminated_ok), gap_s
        )
