"""A serial scanner on a pseudo-terminal, with fault switches: our simulated device.

Like nfcpy's simulated reader, it speaks the real wire bytes (`firmware_stubs.framing`), so
the driver under test runs unmodified over a real tty. Library first; ``cumulus-stub serial``
(`firmware_stubs.cli`) is a thin wrapper.

API::

    SerialStub(*, link=None, framing="crlf", baud=9600, options=FramingOptions(),
               faults=Faults(), seed=None, settle=None, idle_s=0.2)
        plug() -> str            create the pty (and the ``link`` symlink); returns `path`
        pull() -> None           unplug: close the pty, remove the link
        async unplug(seconds)    pull, wait, plug again (a new pty behind the same link)
        async scan(payload, *, framing=None, options=None, faults=None) -> SentScan
        async send_raw(data)     any bytes, as they are
        path, tty, plugged, bytes_written
    (also a context manager: plug on enter, pull on exit; sync or async)

``framing="mixed"`` picks framing, terminator, BCC and AIM id at random for each scan (for an
``auto`` reader). Faults are probabilities per scan (`Faults`), or named explicitly per scan:

- ``split``:    the frame is written in 2-4 pieces, yielding to the loop between them
- ``noise``:    1-8 noise bytes precede the frame (never a frame start or terminator)
- ``bitflip``:  one bit of the frame is flipped where it must destroy the read
- ``overlong``: an over-long frame (300 digits) precedes the scan
- ``double``:   the frame is sent twice, as a scanner double-read does

`SentScan.readable` says whether the scan's frame reached the line intact and separable, so a
test can compare exactly what a reader reports with what should come out.

Line hygiene: after a fault the receiver may hold garbage that only an idle line (the
inter-character gap) clears, e.g. noise before a crlf frame, which has no start byte. Before
writing the next frame the stub then *settles*: by default it sleeps ``idle_s``; a test passes
``settle`` (an async callable) that waits until the reader has seen the gap, which makes the
outcome independent of machine speed. Not safe for concurrent use from several tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import termios
import tty
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from firmware_stubs.framing import (
    AIM_IDS,
    FRAMINGS,
    STX,
    TERMINATORS,
    Encoded,
    FramingOptions,
    destructive_positions,
    encode,
    flip_bit,
)

FAULTS: Final = ("split", "noise", "bitflip", "overlong", "double")
OVERLONG_LEN: Final = 300
SS: Final = 0x0B  # magstripe start sentinel (raw track-2)

# Noise never contains a frame start, a terminator, ']' or a digit, so it cannot complete
# or start a frame of any framing by itself.
NOISE_BYTES: Final = bytes(range(0x80, 0x100)) + bytes(
    b for b in range(0x21, 0x7F) if chr(b) not in "0123456789]"
)

Settle = Callable[[], Awaitable[None]]
_LineState = Literal["clean", "noise", "open", "dirty"]


class StubUnpluggedError(RuntimeError):
    """The stub was asked to send while its pty is unplugged."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Probability (0..1) of each fault per scan; ``seed`` the stub's for reproducibility."""

    split: float = 0.0
    noise: float = 0.0
    bitflip: float = 0.0
    overlong: float = 0.0
    double: float = 0.0

    def __post_init__(self) -> None:
        for name in FAULTS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p!r} is not within 0..1")

    def draw(self, rng: random.Random) -> tuple[str, ...]:
        return tuple(name for name in FAULTS if rng.random() < getattr(self, name))


@dataclass(frozen=True, slots=True)
class SentScan:
    """What the stub did for one scan; ``wire`` is every byte written for it, in order."""

    payload: str
    framing: str
    symbology: str | None
    faults: tuple[str, ...]
    wire: bytes
    readable: bool

    def __repr__(self) -> str:
        shown = self.payload[:4] + "…" if len(self.payload) > 4 else "…"
        return (
            f"SentScan({shown!r}, framing={self.framing!r}, faults={self.faults!r}, "
            f"readable={self.readable!r})"
        )


class SerialStub:
    """A scanner on a pty; see the module docstring."""

    def __init__(
        self,
        *,
        link: str | os.PathLike[str] | None = None,
        framing: str = "crlf",
        baud: int = 9600,
        options: FramingOptions | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        settle: Settle | None = None,
        idle_s: float = 0.2,
    ) -> None:
        if framing != "mixed" and framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)} or mixed")
        if baud <= 0:
            raise ValueError("baud must be positive")
        self.link = Path(link) if link is not None else None
        self.framing = framing
        self.baud = baud
        self.options = options or FramingOptions()
        self.faults = faults or Faults()
        self.bytes_written = 0
        self._rng = random.Random(seed)  # noqa: S311 - test traffic, not secrets
        self._settle = settle
        self._idle_s = idle_s
        self._master: int | None = None
        self._slave: int | None = None
        self._tty: str | None = None
        self._line: _LineState = "clean"

    # -- plugging -------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def tty(self) -> str:
        """The pty slave, e.g. /dev/pts/3 (changes at every plug)."""
        if self._tty is None:
            raise StubUnpluggedError("the stub is unplugged")
        return self._tty

    @property
    def path(self) -> str:
        """What a reader should open: the link when there is one, else the pty itself."""
        return str(self.link) if self.link is not None else self.tty

    def plug(self) -> str:
        """Create the pty (raw, no echo) and point the link at it; returns `path`."""
        if self._master is not None:
            return self.path
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # no echo or line editing before a reader sets its own modes
            speed = getattr(termios, f"B{self.baud}", None)
            if speed is not None:
                attrs = termios.tcgetattr(slave)
                attrs[4] = attrs[5] = speed
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            if self.link is not None:
                tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(name)
                tmp.replace(self.link)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._tty = master, slave, name
        self._line = "clean"
        return self.path

    def pull(self) -> None:
        """Unplug: the link disappears (as udev removes it) and the pty closes."""
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._tty = None

    async def unplug(self, seconds: float) -> str:
        """Unplug for ``seconds``, then plug in again; returns the new `path`."""
        self.pull()
        await asyncio.sleep(seconds)
        return self.plug()

    def __enter__(self) -> Self:
        self.plug()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pull()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pull()

    # -- sending --------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Write ``data`` as it is (the receiver's state is then unknown to the stub)."""
        await self._write(data)
        self._line = "dirty"

    async def scan(
        self,
        payload: str,
        *,
        framing: str | None = None,
        options: FramingOptions | None = None,
        faults: Iterable[str] | None = None,
    ) -> SentScan:
        """Send one read of ``payload``; ``faults`` None draws them from `Faults`."""
        rng = self._rng
        if framing is None:
            framing = rng.choice(FRAMINGS) if self.framing == "mixed" else self.framing
        if options is None:
            options = self._random_options() if self.framing == "mixed" else self.options
        chosen = self.faults.draw(rng) if faults is None else tuple(faults)
        unknown = set(chosen) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        encoded = encode(payload, framing, options)
        wire = bytearray()

        if "overlong" in chosen:
            junk = encode("1" * OVERLONG_LEN, framing, options).wire
            await self._send_frame(junk, wire, split=False)
            self._line = "dirty"
        if "noise" in chosen:
            noise = bytes(rng.choice(NOISE_BYTES) for _ in range(rng.randint(1, 8)))
            await self._send_frame(noise, wire, split=False)
            self._line = "noise"
        frame = encoded.wire
        if "bitflip" in chosen:
            frame = self._flip_a_bit(encoded)
        for _ in range(2 if "double" in chosen else 1):
            await self._send_frame(frame, wire, split="split" in chosen)
            if "bitflip" in chosen:
                self._line = "dirty"
            else:
                self._line = "open" if encoded.open_end else "clean"
        return SentScan(
            payload=payload,
            framing=framing,
            symbology=encoded.symbology,
            faults=chosen,
            wire=bytes(wire),
            readable="bitflip" not in chosen,
        )

    def _random_options(self) -> FramingOptions:
        rng = self._rng
        return FramingOptions(
            terminator=rng.choice(list(TERMINATORS.values())),
            bcc=rng.random() < 0.7,
            aim_id=rng.choice(AIM_IDS),
            track_tail=self.options.track_tail,
        )

    def _flip_a_bit(self, encoded: Encoded) -> bytes:
        position = self._rng.choice(destructive_positions(encoded))
        return flip_bit(encoded.wire, position, self._rng.randrange(8))

    async def _send_frame(self, data: bytes, record: bytearray, *, split: bool) -> None:
        await self._prepare(data[0])
        record += data
        if not split or len(data) < 2:
            await self._write(data)
            return
        cuts = sorted(self._rng.sample(range(1, len(data)), min(len(data) - 1, 3)))
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            await self._write(data[start:end])
            await asyncio.sleep(0)  # let the reader see the pieces separately

    async def _prepare(self, first: int) -> None:
        """Settle the line first unless the next byte resynchronises the receiver anyway."""
        line = self._line
        resyncs = (line == "noise" and first in (STX, SS)) or (line == "open" and first == STX)
        if line != "clean" and not resyncs:
            if self._settle is not None:
                await self._settle()
            else:
                await asyncio.sleep(self._idle_s)
        self._line = "clean"

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            master = self._master
            if master is None:
                raise StubUnpluggedError("the stub is unplugged")
            try:
                n = os.write(master, view)
            except BlockingIOError:
                await self._writable(master)
                continue
            self.bytes_written += n
            view = view[n:]

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            loop.remove_writer(fd)
