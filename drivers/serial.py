"""Serial scanners: pyserial opens the port, the asyncio loop waits on it, decoders read it.

Public API::

    SerialReader(name, port, baud=9600, framing="auto", prefixes=("2099",), *,
                 dedup_window_s=1.5, gap_s=0.05, retry_max_s=2.0,
                 clock=time.monotonic, wallclock=utc_now)
        async run(emit: Callable[[CardRead], None]) -> None
        stats: ReaderStats          live counters and state (drivers.stats)
        mid_frame: bool             a partial frame is buffered, waiting for bytes or a gap
        name, port, baud, framing
    async run_readers(readers: Iterable[SerialReader], emit) -> None
    CardFilter(prefixes=("2099",), dedup_window_s=1.5)
        check(frame: Frame, now: float) -> Accepted | CardReject | "duplicate"

What ``run`` guarantees:

- It runs until cancelled and returns only by raising CancelledError (never swallowed;
  cancellation is prompt: the task only ever waits on the port, a timer or a back-off sleep).
- Device loss (USB unplug, the pty closing, EIO) never raises: the reader goes offline, logs
  once per outage, retries with exponential back-off from 50 ms up to ``retry_max_s`` (≤ 2 s
  between tries) and resumes when the port returns, counting one reconnect. An exception
  raised by ``emit`` (a bug in the consumer) does propagate out of ``run``.
- ``emit`` is called on the event loop, in wire order, once per valid card: a frame must pass
  its framing, the card rules (`drivers.cards`, configured prefixes) and the double-read
  filter (the same card from this reader within ``dedup_window_s`` of the last one emitted
  counts once). Every reject is counted in ``stats.rejects`` by reason.
- A card number is never logged unmasked.

Why the file descriptor on the loop rather than an asyncio serial wrapper
(pyserial-asyncio and its forks): the job is small — wait for readable, ``os.read``, feed the
decoder — and doing it with ``loop.add_reader`` on pyserial's non-blocking fd needs no thread
and no extra dependency, hands bytes to the decoder in the same loop iteration as the
readiness event (the latency floor), and leaves device loss entirely in our hands. That
matters because on Linux a vanished tty is *readable* and then returns b"" or raises EIO:
the callback must remove itself at once or it spins (notes/test-rig.md). It also lets the
gap timer read whatever is pending before it declares a gap, so a loop that was merely slow
to read never splits a frame. pyserial still does what it is good at: opening, termios
settings, the exclusive lock. The price is POSIX only, which is where the agent runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import termios
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import serial

from drivers.cards import DEFAULT_PREFIXES, CardReject, check_card, mask, normalize_prefixes
from drivers.events import CardRead
from drivers.protocols import DEFAULT_GAP_S, Decoder, Frame, NeedData, Reject, make_decoder
from drivers.stats import ReaderState, ReaderStats

log = logging.getLogger(__name__)

Emit = Callable[[CardRead], None]

DEFAULT_DEDUP_WINDOW_S: Final = 1.5
RETRY_FIRST_S: Final = 0.05
READ_SIZE: Final = 4096
STALL_S: Final = 0.002  # a gap timer this late means the loop was stalled: look again

# errno values meaning "the device is not there" (offline) rather than "there but unusable"
_ABSENT: Final = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EIO, errno.EBADF})


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A frame whose data is a Cumulus card number, not seen from this reader just before."""

    card: str
    symbology: str | None

    def __repr__(self) -> str:
        return f"Accepted(card={mask(self.card)!r}, symbology={self.symbology!r})"


class CardFilter:
    """The sans-I/O middle of a reader: card rules, then double-read suppression.

    A scanner often reads a card twice in quick succession; the same card within
    ``dedup_window_s`` of the last time it was *accepted* is a duplicate. The window runs
    from the accepted read (not the latest duplicate), so a card held in front of a scanner
    in continuous mode is reported again once per window.
    """

    def __init__(
        self,
        prefixes: Sequence[str] = DEFAULT_PREFIXES,
        dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
    ) -> None:
        if dedup_window_s < 0:
            raise ValueError("dedup_window_s must be >= 0")
        self._prefixes = normalize_prefixes(prefixes)
        self._window = dedup_window_s
        self._accepted_at: dict[str, float] = {}

    def check(self, frame: Frame, now: float) -> Accepted | CardReject | Literal["duplicate"]:
        text = frame.data.decode("ascii", errors="replace")
        reason = check_card(text, self._prefixes)
        if reason is not None:
            return reason
        last = self._accepted_at.get(text)
        if last is not None and now - last < self._window:
            return "duplicate"
        if len(self._accepted_at) > 64:
            self._accepted_at = {
                card: t for card, t in self._accepted_at.items() if now - t < self._window
            }
        self._accepted_at[text] = now
        return Accepted(text, frame.symbology)


class SerialReader:
    """One serial scanner; see the module docstring for the guarantees of `run`."""

    def __init__(
        self,
        name: str,
        port: str,
        baud: int = 9600,
        framing: str = "auto",
        prefixes: Sequence[str] = DEFAULT_PREFIXES,
        *,
        dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
        gap_s: float = DEFAULT_GAP_S,
        retry_max_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not (isinstance(baud, int) and baud > 0):
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        if not 0 < retry_max_s <= 2.0:
            raise ValueError("retry_max_s must be in (0, 2] seconds")
        make_decoder(framing, gap_s=gap_s)  # ValueError now, not at the first read
        self.name = name
        self.port = port
        self.baud = baud
        self.framing = framing
        self.stats = ReaderStats()
        self._filter = CardFilter(prefixes, dedup_window_s)
        self._gap_s = gap_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._wallclock = wallclock
        self._decoder: Decoder | None = None
        self._running = False
        self._outage_since: float | None = None

    def __repr__(self) -> str:
        return (
            f"SerialReader({self.name!r}, {self.port!r}, framing={self.framing!r}, "
            f"state={self.stats.state.value!r})"
        )

    @property
    def mid_frame(self) -> bool:
        """True while bytes of an unfinished frame are buffered (a gap or more bytes will
        settle them)."""
        return self._decoder is not None and self._decoder.deadline() is not None

    async def run(self, emit: Emit) -> None:
        """Read cards until cancelled, calling ``emit`` for each; see the module docstring."""
        if self._running:
            raise RuntimeError(f"reader {self.name!r} is already running")
        self._running = True
        backoff = RETRY_FIRST_S
        ever_online = False
        try:
            while True:
                try:
                    port = self._open()
                except OSError as exc:  # serial.SerialException is an OSError
                    self._note_failure(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._retry_max_s)
                    continue
                if ever_online:
                    self.stats.reconnects += 1
                ever_online = True
                self._note_online()
                opened_at = self._clock()
                try:
                    lost = await self._pump(port, emit)
                finally:
                    with contextlib.suppress(OSError):
                        port.close()
                self._note_failure(lost)
                if self._clock() - opened_at >= self._retry_max_s:
                    backoff = RETRY_FIRST_S  # that connection was healthy: retry quickly
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
        finally:
            self._running = False
            self.stats.set_state(ReaderState.OFFLINE)

    def _open(self) -> serial.Serial:
        # O_NONBLOCK open, termios setup and flock: all quick, so done on the loop.
        port = serial.Serial(port=None, baudrate=self.baud, timeout=0, exclusive=True)
        port.port = self.port
        port.open()
        try:
            # pyserial leaves VMIN=0 VTIME=0, under which Linux answers a read with no data
            # by b"" (before it even looks at O_NONBLOCK), indistinguishable from a hang-up.
            # VMIN=1 makes "no data" EAGAIN, so b"" means the device is gone.
            attrs = termios.tcgetattr(port.fileno())
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(port.fileno(), termios.TCSANOW, attrs)
        except termios.error as exc:
            port.close()
            raise serial.SerialException(f"Could not configure port: {exc}") from exc
        except BaseException:
            port.close()
            raise
        return port

    def _note_online(self) -> None:
        if self._outage_since is None:
            log.info("reader %r: %s online (framing %s)", self.name, self.port, self.framing)
        else:
            log.info(
                "reader %r: %s back online after %.1f s",
                self.name,
                self.port,
                self._clock() - self._outage_since,
            )
        self._outage_since = None
        self.stats.set_state(ReaderState.ONLINE)

    def _note_failure(self, exc: OSError) -> None:
        self.stats.comm_errors += 1
        # errno None: pyserial could not configure the port (not a tty, bad settings)
        absent = exc.errno in _ABSENT
        state = ReaderState.OFFLINE if absent else ReaderState.ERROR
        changed = self._outage_since is None or state is not self.stats.state
        if self._outage_since is None:
            self._outage_since = self._clock()
        self.stats.set_state(state, str(exc))
        if changed:  # once per outage (again only if offline turns into error or back)
            log.warning(
                "reader %r: %s %s (%s); retrying every %.1f s at most",
                self.name,
                self.port,
                "unavailable" if state is ReaderState.OFFLINE else "unusable",
                exc,
                self._retry_max_s,
            )
        else:
            log.debug("reader %r: still %s: %s", self.name, state.value, exc)

    async def _pump(self, port: serial.Serial, emit: Emit) -> OSError:
        """Read until the device is lost; returns the error that ended it."""
        decoder = make_decoder(self.framing, gap_s=self._gap_s)
        link = _Link(self, port.fileno(), decoder, emit)
        self._decoder = decoder
        try:
            lost = await link.run()
        finally:
            self._decoder = None
        decoder.expire(math.inf)  # a frame cut off by the loss ends here
        self._handle_events(decoder, emit)
        return lost

    def _handle_events(self, decoder: Decoder, emit: Emit) -> None:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                return
            if isinstance(event, Reject):
                self._reject(event.reason)
                continue
            verdict = self._filter.check(event, self._clock())
            if isinstance(verdict, Accepted):
                at = self._wallclock()
                read = CardRead(self.name, "serial", verdict.card, at, verdict.symbology)
                self.stats.count_good_read(at)
                log.debug("reader %r: card %s", self.name, read.masked)
                emit(read)
            elif verdict == "duplicate":
                self.stats.duplicates += 1
                card = mask(event.data.decode("ascii", errors="replace"))
                log.debug("reader %r: double read of %s ignored", self.name, card)
            else:
                self._reject(verdict)

    def _reject(self, reason: str) -> None:
        self.stats.count_reject(reason)
        log.debug("reader %r: rejected a read (%s)", self.name, reason)


class _Link:
    """One open connection: readiness callback, gap timer, and how it ends.

    Callbacks run on the loop; they must never let an exception escape (the loop would only
    log it) and must unregister the fd on device loss (a dead tty stays readable).
    """

    def __init__(self, reader: SerialReader, fd: int, decoder: Decoder, emit: Emit) -> None:
        self._reader = reader
        self._fd = fd
        self._decoder = decoder
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[OSError] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._rechecked = False

    async def run(self) -> OSError:
        self._loop.add_reader(self._fd, self._on_readable)
        try:
            return await self._ended
        finally:
            self._loop.remove_reader(self._fd)
            self._cancel_timer()

    def _read(self) -> bool:
        """Feed whatever is pending; False when nothing was."""
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            raise OSError(errno.EIO, "device closed (read returned no data)")
        self._reader.stats.bytes_in += len(data)
        self._decoder.receive_data(data, self._reader._clock())
        return True

    def _on_readable(self) -> None:
        try:
            if self._read():
                self._reader._handle_events(self._decoder, self._emit)
                self._arm()
        except Exception as exc:  # handed to run(): an OSError ends the link, others raise
            self._end(exc)

    def _on_deadline(self) -> None:
        self._timer = None
        try:
            # A gap is only real if it was observed: nothing may be waiting (the loop may
            # just have been busy), and if this timer ran late, the loop was stalled and
            # saw nothing of the line meanwhile, so look once more a moment later (a pty
            # hands bytes to the reading side asynchronously).
            now = self._reader._clock()
            deadline = self._decoder.deadline()
            if self._read():
                self._reader._handle_events(self._decoder, self._emit)
            elif deadline is not None and now - deadline > STALL_S and not self._rechecked:
                self._rechecked = True
                self._timer = self._loop.call_later(STALL_S, self._on_deadline)
                return
            else:
                self._decoder.expire(now)
                self._reader._handle_events(self._decoder, self._emit)
            self._arm()
        except Exception as exc:  # as above
            self._end(exc)

    def _arm(self) -> None:
        self._cancel_timer()
        self._rechecked = False
        deadline = self._decoder.deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self._reader._clock())
            self._timer = self._loop.call_later(delay, self._on_deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self, exc: Exception) -> None:
        self._loop.remove_reader(self._fd)
        self._cancel_timer()
        if self._ended.done():
            return
        if isinstance(exc, OSError):
            self._ended.set_result(exc)
        else:
            self._ended.set_exception(exc)


async def run_readers(readers: Iterable[SerialReader], emit: Emit) -> None:
    """Run several readers at once until cancelled (one task each, in one TaskGroup).

    Device loss on one reader never disturbs the others; an exception from ``emit`` ends
    them all (ExceptionGroup), as a bug should.
    """
    readers = list(readers)
    names = [reader.name for reader in readers]
    if len(set(names)) != len(names):
        raise ValueError(f"reader names must be unique: {names}")
    async with asyncio.TaskGroup() as group:
        for reader in readers:
            group.create_task(reader.run(emit), name=f"serial-reader:{reader.name}")
