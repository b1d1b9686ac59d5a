"""Contactless readers over PC/SC: a thin asyncio adapter over one blocking pyscard thread.

Public API (shaped like `drivers.serial`)::

    PcscMonitor(globs="*", prefixes=("2099",), *, dedup_window_s=1.5, retry_max_s=2.0,
                clock=time.monotonic, wallclock=utc_now)
        async run(emit: Callable[[CardRead], None]) -> None
        stats: dict[str, ReaderStats]   per PC/SC reader name (drivers.stats), live
        state: ReaderState              of pcscd itself: connecting, online, offline
        error_text: str | None          why pcscd is offline
        card_present(reader) -> bool    pcscd reports a card on that reader
        thread_restarts: int            times the supervisor restarted a dead thread
        outages: int                    times pcscd was lost (or absent at start)
        snapshot() -> dict              JSON-ready copy of all of the above
    list_readers(globs="*") -> list[str]     for ``readers list``; PcscUnavailableError
    PCSC_REJECTS                             every reason counted in stats.rejects

What ``run`` guarantees:

- It runs until cancelled and returns only by raising CancelledError (never swallowed).
  Cancellation is prompt: the thread's wait is interrupted with SCardCancel.
- pcscd absent at start (boot order), stopped or restarted never raises: ``state`` and every
  known reader go offline, one warning is logged per outage (retries log at debug), a new
  context is tried with back-off (≤ ``retry_max_s`` ≤ 2 s between tries), and when pcscd is
  back readers return online (each counting one reconnect and, for the outage, one
  comm_error). If the thread dies of a bug, it is logged with its traceback once, counted in
  ``thread_restarts`` and started again (back-off ≤ 2 s). An exception raised by ``emit``
  (a bug in the consumer) does propagate out of ``run``.
- ``emit`` is called on the event loop once per card arrival whose exchange yields a Cumulus
  card number with a configured prefix; ``CardRead.source`` is "pcsc" and ``reader`` the
  PC/SC reader name. The same card on the same reader within ``dedup_window_s`` of the last
  one emitted is a duplicate (counted in ``stats.duplicates``): a card held on the reader is
  one arrival anyway, and a quick re-tap counts once. Everything else is counted in
  ``stats.rejects`` by reason (`PCSC_REJECTS`), e.g. a card pulled mid-read is
  ``card-removed`` and a card without the applet ``not-cumulus``.
- A card number is never logged unmasked.

The threading model, the traps and how they are handled are in docs/pcsc.md; the thread
itself is `drivers.pcsc_thread`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from smartcard import scard

from drivers.cards import CARD_REJECTS, DEFAULT_PREFIXES, mask, normalize_prefixes
from drivers.events import CardRead
from drivers.pcsc_thread import (
    LINK_REJECTS,
    CardRemoved,
    CardResult,
    Observation,
    ReaderLost,
    ReaderSeen,
    ServiceDown,
    ServiceUp,
    Watcher,
    error_text,
    list_matching,
)
from drivers.protocols.apdu import APDU_REJECTS, CardNumber
from drivers.stats import ReaderState, ReaderStats

log = logging.getLogger(__name__)

Emit = Callable[[CardRead], None]

DEFAULT_DEDUP_WINDOW_S: Final = 1.5
PCSC_REJECTS: Final[frozenset[str]] = APDU_REJECTS | LINK_REJECTS | CARD_REJECTS
"""Every reason a PC/SC reader counts in ``ReaderStats.rejects``."""

RESTART_FIRST_S: Final = 0.05
STOP_RETRY_S: Final = 0.05  # how often stop() is repeated while the thread winds down
STOP_GRACE_S: Final = 3.0  # then the (daemon) thread is left to finish on its own


def utc_now() -> datetime:
    return datetime.now(UTC)


class PcscUnavailableError(OSError):
    """pcscd cannot be reached (not running, or its socket is not ours to use)."""


def list_readers(globs: str | Iterable[str] = "*") -> list[str]:
    """PC/SC reader names matching the globs, sorted. Blocks briefly (a few IPC round trips
    to pcscd); raises PcscUnavailableError when pcscd is not there."""
    patterns = _globs(globs)
    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        raise PcscUnavailableError(f"pcscd unavailable: {error_text(hr)}")
    try:
        return sorted(list_matching(context, patterns))
    except Exception as exc:
        raise PcscUnavailableError(f"pcscd unavailable: {exc}") from None
    finally:
        scard.SCardReleaseContext(context)


def _globs(globs: str | Iterable[str]) -> tuple[str, ...]:
    patterns = (globs,) if isinstance(globs, str) else tuple(globs)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"reader name globs must be non-empty strings, not {globs!r}")
    return patterns


class PcscMonitor:
    """Every PC/SC reader matching the globs; see the module docstring for `run`."""

    def __init__(
        self,
        globs: str | Iterable[str] = "*",
        prefixes: Sequence[str] = DEFAULT_PREFIXES,
        *,
        dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
        retry_max_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utc_now,
    ) -> None:
        if dedup_window_s < 0:
            raise ValueError("dedup_window_s must be >= 0")
        if not 0 < retry_max_s <= 2.0:
            raise ValueError("retry_max_s must be in (0, 2] seconds")
        self.globs = _globs(globs)
        self.prefixes = normalize_prefixes(prefixes)
        self.stats: dict[str, ReaderStats] = {}
        self.state = ReaderState.CONNECTING
        self.error_text: str | None = None
        self.thread_restarts = 0
        self.outages = 0
        self._dedup_window_s = dedup_window_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._wallclock = wallclock
        self._present: set[str] = set()
        self._accepted_at: dict[tuple[str, str], float] = {}
        self._outage_since: float | None = None
        self._running = False
        self._generation = 0
        self._emit: Emit | None = None
        self._emit_failed: asyncio.Future[BaseException | None] | None = None
        self._observers: list[Callable[[Observation], None]] = []

    def card_present(self, reader: str) -> bool:
        """True while pcscd reports a card on ``reader`` (as last seen by the thread)."""
        return reader in self._present

    def add_observer(self, observer: Callable[[Observation], None]) -> None:
        """Call ``observer`` on the loop with every observation after it is applied (for
        tests, benches and ``readers watch``; an observer must not raise)."""
        self._observers.append(observer)

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "error_text": self.error_text,
            "outages": self.outages,
            "thread_restarts": self.thread_restarts,
            "readers": {name: stats.snapshot() for name, stats in sorted(self.stats.items())},
        }

    async def run(self, emit: Emit) -> None:
        """Watch readers until cancelled, calling ``emit`` for each card; see above."""
        if self._running:
            raise RuntimeError("this PcscMonitor is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        self._emit = emit
        self._emit_failed = loop.create_future()
        restart_delay = RESTART_FIRST_S
        try:
            while True:
                died = await self._run_thread(loop)
                self.thread_restarts += 1
                log.error(
                    "PC/SC watcher thread died; restarting it (%d restarts so far)",
                    self.thread_restarts,
                    exc_info=died,
                )
                await asyncio.sleep(restart_delay)
                restart_delay = min(restart_delay * 2, self._retry_max_s)
        finally:
            if self._emit_failed.done():
                self._emit_failed.exception()  # retrieved, whether raised above or not
            self._running = False
            self._generation += 1  # late posts of the old thread are ignored
            self._present.clear()
            self.state = ReaderState.OFFLINE
            for stats in self.stats.values():
                stats.set_state(ReaderState.OFFLINE)

    async def _run_thread(self, loop: asyncio.AbstractEventLoop) -> BaseException | None:
        """Run one watcher thread until it dies (returns its exception), emit fails (raises
        that) or we are cancelled (stops the thread promptly, then re-raises)."""
        self._generation += 1
        generation = self._generation
        done: asyncio.Future[BaseException | None] = loop.create_future()

        def post(observation: Observation) -> None:  # on the thread
            try:
                loop.call_soon_threadsafe(self._apply, generation, observation)
            except RuntimeError:  # the loop is closed: nobody listens any more
                watcher.stop()

        watcher = Watcher(self.globs, post, self.prefixes, retry_max_s=self._retry_max_s)
        thread = threading.Thread(
            target=_thread_main, args=(watcher, loop, done), name="pcsc-watcher", daemon=True
        )
        thread.start()
        assert self._emit_failed is not None
        try:
            await asyncio.wait({done, self._emit_failed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _stop(watcher, done, thread)
            raise
        if self._emit_failed.done():
            await _stop(watcher, done, thread)
            self._emit_failed.result()  # raises what emit raised
        thread.join(timeout=1.0)  # it has reported its end: only its return is left
        if watcher.stopping:  # the loop closed under it: nothing left to supervise
            raise RuntimeError("PC/SC watcher stopped without being asked")
        return done.result()

    # -- observations, applied on the loop ----------------------------------------------

    def _reader(self, name: str) -> ReaderStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = ReaderStats()
        return stats

    def _apply(self, generation: int, observation: Observation) -> None:
        if generation != self._generation or not self._running:
            return
        try:
            self._handle(observation)
            for observer in self._observers:
                observer(observation)
        except Exception as exc:  # emit (or an observer) failed: a bug of the consumer
            if self._emit_failed is not None and not self._emit_failed.done():
                self._emit_failed.set_exception(exc)

    def _handle(self, observation: Observation) -> None:
        if isinstance(observation, CardResult):
            self._card_result(observation)
        elif isinstance(observation, CardRemoved):
            self._present.discard(observation.reader)
        elif isinstance(observation, ReaderSeen):
            stats = self._reader(observation.reader)
            if stats.state in (ReaderState.OFFLINE, ReaderState.ERROR):
                stats.reconnects += 1
                log.info("PC/SC reader %r back online", observation.reader)
            elif stats.state is ReaderState.CONNECTING:
                log.info("PC/SC reader %r online", observation.reader)
            stats.set_state(ReaderState.ONLINE)
        elif isinstance(observation, ReaderLost):
            stats = self._reader(observation.reader)
            stats.comm_errors += 1
            self._present.discard(observation.reader)
            state = ReaderState.OFFLINE if observation.gone else ReaderState.ERROR
            stats.set_state(state, observation.text)
            log.warning("PC/SC reader %r: %s", observation.reader, observation.text)
        elif isinstance(observation, ServiceUp):
            self._service_up()
        elif isinstance(observation, ServiceDown):
            self._service_down(observation.text)

    def _service_up(self) -> None:
        if self._outage_since is not None:
            log.info("pcscd reachable again after %.1f s", self._clock() - self._outage_since)
        self._outage_since = None
        self.state = ReaderState.ONLINE
        self.error_text = None

    def _service_down(self, text: str) -> None:
        self._present.clear()
        self.state = ReaderState.OFFLINE
        self.error_text = text
        if self._outage_since is not None:
            log.debug("pcscd still unavailable: %s", text)
            return
        self._outage_since = self._clock()
        self.outages += 1
        log.warning(
            "pcscd unavailable (%s); contactless readers offline, retrying every %.1f s at most",
            text,
            self._retry_max_s,
        )
        for stats in self.stats.values():
            if stats.state is not ReaderState.OFFLINE:
                stats.comm_errors += 1
            stats.set_state(ReaderState.OFFLINE, f"pcscd unavailable: {text}")

    def _card_result(self, result: CardResult) -> None:
        stats = self._reader(result.reader)
        stats.bytes_in += result.bytes_in
        self._present.add(result.reader)
        outcome = result.outcome
        if not isinstance(outcome, CardNumber):
            reason = outcome if isinstance(outcome, str) else outcome.reason
            stats.count_reject(reason)
            log.debug("PC/SC reader %r: rejected a card (%s)", result.reader, reason)
            return
        now = self._clock()
        key = (result.reader, outcome.number)
        last = self._accepted_at.get(key)
        if last is not None and now - last < self._dedup_window_s:
            stats.duplicates += 1
            log.debug("PC/SC reader %r: %s again, ignored", result.reader, mask(outcome.number))
            return
        if len(self._accepted_at) > 64:
            self._accepted_at = {
                k: t for k, t in self._accepted_at.items() if now - t < self._dedup_window_s
            }
        self._accepted_at[key] = now
        at = self._wallclock()
        read = CardRead(result.reader, "pcsc", outcome.number, at)
        stats.count_good_read(at)
        log.debug("PC/SC reader %r: card %s", result.reader, read.masked)
        assert self._emit is not None
        self._emit(read)


def _thread_main(
    watcher: Watcher,
    loop: asyncio.AbstractEventLoop,
    done: asyncio.Future[BaseException | None],
) -> None:
    """The thread's entry point: run the watcher, hand how it ended to the loop."""
    outcome: BaseException | None = None
    try:
        watcher.run()
    except BaseException as exc:  # handed over to the supervisor, which logs and counts it
        outcome = exc
    try:
        loop.call_soon_threadsafe(_settle, done, outcome)
    except RuntimeError:  # the loop is already closed
        pass


def _settle(done: asyncio.Future[BaseException | None], outcome: BaseException | None) -> None:
    if not done.done():
        done.set_result(outcome)


async def _stop(
    watcher: Watcher, done: asyncio.Future[BaseException | None], thread: threading.Thread
) -> None:
    """Stop the thread and wait (briefly) until it has ended, so that no SCard call outlives
    `run`. Repeats the stop: pcsc-lite loses a cancel sent just before a wait begins."""
    deadline = time.monotonic() + STOP_GRACE_S
    while not done.done():
        watcher.stop()
        if time.monotonic() >= deadline:
            log.warning("PC/SC watcher thread did not stop within %.0f s", STOP_GRACE_S)
            return
        await asyncio.wait({done}, timeout=STOP_RETRY_S)
    thread.join(timeout=1.0)  # it has reported its end: only its return is left
