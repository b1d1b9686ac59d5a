"""Events, reject reasons and the decoder contract shared by every scanner framing.

Why sans-I/O (the h11 shape): a decoder never reads a port, never looks at a clock and never
sleeps. The caller feeds the bytes together with the monotonic time they arrived and asks for
events. Tests therefore feed bytes and numbers instead of scripting ports, a fuzzer can throw
anything at it, and the same code serves the asyncio adapter, a benchmark and a bench tool.

The contract every decoder (see `Decoder`) keeps:

- ``receive_data(data, now)`` appends bytes that arrived at monotonic time ``now`` (seconds).
  It never raises, whatever the bytes.
- ``next_event()`` returns the next `Frame` or `Reject`, or `NEED_DATA` when there is none.
  Events come out in wire order; feeding the same bytes in any chunking gives the same events.
- ``deadline()`` is the monotonic time at which the partial frame held would end because the
  line went quiet (last byte + inter-character gap), or None when nothing is pending.
- ``expire(now)`` tells the decoder the line has been idle up to ``now``; when ``now`` has
  reached the deadline the partial frame ends (usually ``Reject("incomplete")``). Only the
  caller knows whether the line really was idle (it may simply have been slow to read), so a
  gap is never inferred from the timestamps given to ``receive_data``. Call ``expire(math.inf)``
  when the device is gone.

A `Frame` is only "the framing was right"; whether its data is a Cumulus card is decided by
`drivers.cards`. Every reject carries one reason from `FRAMING_REJECTS`, a short kebab-case
string that statistics count and docs/serial.md documents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

from drivers.cards import mask

MAX_FRAME: Final = 256
"""Longest payload (bytes between the framing bytes) a decoder accepts."""

DEFAULT_GAP_S: Final = 0.05
"""Inter-character gap after which a partial frame ends."""

FramingName = Literal["crlf", "stx-etx", "aim", "magstripe"]
FRAMING_NAMES: Final[frozenset[str]] = frozenset(get_args(FramingName))

FramingReject = Literal[
    "noise",  # bytes outside any frame (framings with a start byte), one per run
    "incomplete",  # a frame began but did not end: gap, new frame start or device lost
    "too-long",  # payload over MAX_FRAME bytes; the rest of that frame is skipped
    "empty",  # a frame with no payload
    "bad-bcc",  # stx-etx: the byte after ETX is neither the BCC nor a frame start
    "bad-lrc",  # magstripe: LRC character wrong (or its own parity wrong)
    "parity",  # magstripe: a character with bad parity (or not a track-2 character)
    "bad-aim-id",  # aim: the frame does not begin with a ]cm symbology identifier
]
FRAMING_REJECTS: Final[frozenset[str]] = frozenset(get_args(FramingReject))


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-framed read: its payload, the framing that carried it, its AIM id if any."""

    data: bytes
    framing: FramingName
    symbology: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError(f"Frame.data must be bytes, not {type(self.data).__name__}")
        if self.framing not in FRAMING_NAMES:
            raise ValueError(f"unknown framing {self.framing!r}")
        if self.symbology is not None and (
            len(self.symbology) != 3 or not self.symbology.startswith("]")
        ):
            raise ValueError(f"symbology must look like ']E0', not {self.symbology!r}")

    def __repr__(self) -> str:
        # The payload may be a card number: never print it whole (logs, test failures).
        shown = mask(self.data.decode("latin-1"))
        return f"Frame(data={shown!r}, framing={self.framing!r}, symbology={self.symbology!r})"


@dataclass(frozen=True, slots=True)
class Reject:
    """The peer broke the framing; the reason is one of FRAMING_REJECTS."""

    reason: FramingReject

    def __post_init__(self) -> None:
        if self.reason not in FRAMING_REJECTS:
            raise ValueError(f"unknown reject reason {self.reason!r}")


class NeedData:
    """Type of the NEED_DATA sentinel: no event until more bytes (or a gap) arrive."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

Event = Frame | Reject


class Decoder(Protocol):
    """What the serial adapter (and tests) rely on; see the module docstring."""

    def receive_data(self, data: bytes, now: float) -> None: ...

    def next_event(self) -> Event | NeedData: ...

    def deadline(self) -> float | None: ...

    def expire(self, now: float) -> None: ...


class Machine(ABC):
    """A byte-at-a-time framing state machine writing events into a shared sink.

    Framings are written as machines (not whole decoders) so that `auto` can run several of
    them on one line and hand a byte from one to the next.
    """

    def __init__(self, sink: deque[Event], max_len: int) -> None:
        self._sink = sink
        self._max_len = max_len

    def _emit(self, event: Event) -> None:
        self._sink.append(event)

    @abstractmethod
    def step(self, b: int) -> bool:
        """Take one byte. False: the byte was not consumed because it starts the next frame;
        the machine is then idle and the byte must be offered again."""

    @abstractmethod
    def busy(self) -> bool:
        """True while the machine holds state that an inter-character gap would end."""

    @abstractmethod
    def on_gap(self) -> None:
        """The line went quiet: end whatever is pending and return to idle."""


class MachineDecoder:
    """Adapts a Machine to the Decoder contract: event queue, arrival time, gap deadline."""

    def __init__(self, build: Callable[[deque[Event]], Machine], gap_s: float) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be > 0, not {gap_s!r}")
        self._events: deque[Event] = deque()
        self._machine = build(self._events)
        self._gap_s = gap_s
        self._last = 0.0

    def receive_data(self, data: bytes, now: float) -> None:
        step = self._machine.step
        for b in data:
            if not step(b) and not step(b):
                raise RuntimeError("decoder bug: byte refused twice")  # pragma: no cover
        if data:
            self._last = now

    def next_event(self) -> Event | NeedData:
        return self._events.popleft() if self._events else NEED_DATA

    def deadline(self) -> float | None:
        return self._last + self._gap_s if self._machine.busy() else None

    def expire(self, now: float) -> None:
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            self._machine.on_gap()
