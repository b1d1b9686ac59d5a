"""The blocking half of the PC/SC driver: one thread, one pcscd context, one wait.

`Watcher.run` is the body of the single thread `drivers.pcsc.PcscMonitor` starts. It blocks in
``SCardGetStatusChange`` over every reader whose name matches the configured globs, plus the
``\\\\?PnP?\\Notification`` pseudo-reader so that plugging a reader in or out wakes it. When a
card arrives it connects, runs the applet exchange (`drivers.protocols.apdu`) and disconnects,
all on this thread, then *posts* what it saw as small immutable `Observation` objects; the
asyncio side applies them to statistics and emits reads on the loop. Nothing here touches the
loop, the statistics or a logger's card-number arguments.

Why our own loop rather than pyscard's CardMonitor/ReaderMonitor: their threads die for good
on SCARD_E_NO_SERVICE (pcscd stopped or restarted; pyscard issues #82, #27, #23) and a new
monitor object does not revive them. Here a lost service (`SERVICE_LOST`) ends the context:
``ServiceDown`` is posted and a new context is tried with back-off (50 ms doubling to
``retry_max_s`` ≤ 2 s), posting ``ServiceDown`` on each failure (the loop side logs once).

Guarantees and the traps behind them:

- A card is read once per arrival: on the transition to PRESENT, or when pcsc-lite's event
  counter (upper 16 bits of the state) changed, i.e. it was removed and put back between two
  wakes. Our own connect toggles INUSE, which wakes us again but is not an arrival.
- A failed exchange is classified, not guessed: vpcd reports a vanished card as a *successful*
  transmit with no bytes, a real reader as SCARD_W_REMOVED_CARD or a failed transaction. On
  such a failure we wait (≤ `CONFIRM_MS`) for pcscd to see the card gone: gone is
  ``card-removed``, still there is ``card-io`` (or ``bad-response`` for an answer with no
  status word).
- Stopping is prompt: `stop` sets a flag and calls ``SCardCancel`` on the current context, which
  ends a blocked wait at once. pcsc-lite forgets a cancel that arrives just before the wait
  begins, so the owner repeats `stop` until the thread has ended; `WAKE_MS` is only the
  safety net for that and for a reader plugged in between listing and waiting.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from smartcard import scard

from drivers.cards import DEFAULT_PREFIXES, normalize_prefixes
from drivers.protocols.apdu import CumulusExchange, Outcome

log = logging.getLogger(__name__)

PNP_NOTIFICATION: Final = "\\\\?PnP?\\Notification"
WAKE_MS: Final = 5000
CONFIRM_MS: Final = 1200  # three polls of pcscd's status thread (400 ms) for a vanished card
RETRY_FIRST_S: Final = 0.05

SERVICE_LOST: Final = frozenset(
    {
        scard.SCARD_E_NO_SERVICE,
        scard.SCARD_E_SERVICE_STOPPED,
        scard.SCARD_F_COMM_ERROR,  # pcscd died while we waited on its socket
        scard.SCARD_E_INVALID_HANDLE,  # our context belongs to a pcscd that is gone
    }
)
_CARD_GONE: Final = frozenset(
    {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD}
)
_CARD_MUTE: Final = frozenset({scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_W_UNPOWERED_CARD})

LinkReject = Literal[
    "card-removed",  # the card left during the exchange (pulled too early, or it vanished)
    "card-mute",  # a card is there but does not answer (no ATR)
    "card-busy",  # another application holds the card exclusively
    "card-io",  # the exchange failed while the card stayed on the reader
]
LINK_REJECTS: Final[frozenset[str]] = frozenset(get_args(LinkReject))


def error_text(code: int) -> str:
    """pcsc-lite's message for a return code, with the code in hex (for logs and stats)."""
    try:
        message = str(scard.SCardGetErrorMessage(code)).strip().rstrip(".")
    except Exception:  # pragma: no cover - pyscard gives a message for any code
        message = "unknown error"
    return f"{message} (0x{code & 0xFFFFFFFF:08X})"


# -- observations: what the thread tells the loop ---------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceUp:
    """A context with pcscd is established."""


@dataclass(frozen=True, slots=True)
class ServiceDown:
    """pcscd is not reachable (at start, or lost); ``text`` says why."""

    text: str


@dataclass(frozen=True, slots=True)
class ReaderSeen:
    """A reader matching the globs is there and usable (first seen, or back)."""

    reader: str


@dataclass(frozen=True, slots=True)
class ReaderLost:
    """A watched reader was unplugged (``gone``) or went unavailable."""

    reader: str
    text: str
    gone: bool


@dataclass(frozen=True, slots=True)
class CardRemoved:
    """The card left the reader (pcscd saw it go)."""

    reader: str


@dataclass(frozen=True, slots=True)
class CardResult:
    """One card arrival fully handled: the exchange's outcome or why there was none.
    ``detected_at`` is the time.monotonic() at which the wait returned with the arrival."""

    reader: str
    outcome: Outcome | LinkReject
    bytes_in: int
    detected_at: float


Observation = ServiceUp | ServiceDown | ReaderSeen | ReaderLost | CardRemoved | CardResult
Post = Callable[[Observation], None]


class _ServiceLostError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(error_text(code))
        self.code = code


def _counter(state: int) -> int:
    return (state >> 16) & 0xFFFF


def _arrived(old: int, new: int) -> bool:
    """A card arrived between the two states (see the module docstring)."""
    if not new & scard.SCARD_STATE_PRESENT:
        return False
    if old == scard.SCARD_STATE_UNAWARE or not old & scard.SCARD_STATE_PRESENT:
        return True
    return _counter(old) != _counter(new)


def matches(reader: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(reader, glob) for glob in globs)


def list_matching(context: int, globs: Sequence[str]) -> list[str]:
    """Readers known to pcscd whose name matches a glob; _ServiceLostError when pcscd is gone."""
    hr, readers = scard.SCardListReaders(context, [])
    if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    if hr != scard.SCARD_S_SUCCESS:
        raise _ServiceLostError(hr)
    return [name for name in readers if matches(name, globs)]


class Watcher:
    """The thread's body; see the module docstring. `run` on the thread, `stop` from anywhere."""

    def __init__(
        self,
        globs: Iterable[str],
        post: Post,
        prefixes: Iterable[str] = DEFAULT_PREFIXES,
        *,
        retry_max_s: float = 2.0,
    ) -> None:
        self._globs = tuple(globs)
        self._post = post
        self._prefixes = normalize_prefixes(prefixes)
        self._retry_max_s = retry_max_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._context: int | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the thread to end and interrupt its wait. Thread-safe; repeat it until the
        thread has ended (a cancel just before a wait starts is lost, see above)."""
        self._stopping.set()
        with self._lock:
            if self._context is not None:
                scard.SCardCancel(self._context)

    def run(self) -> None:
        """Watch until `stop`; returns only then. Unexpected errors propagate (the owner
        counts the dead thread and starts a new one)."""
        backoff = RETRY_FIRST_S
        while not self._stopping.is_set():
            hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hr != scard.SCARD_S_SUCCESS:
                self._post(ServiceDown(error_text(hr)))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
                continue
            with self._lock:
                self._context = context
            started = time.monotonic()
            try:
                self._watch(context)
            except _ServiceLostError as exc:
                self._post(ServiceDown(str(exc)))
            finally:
                with self._lock:
                    self._context = None
                    scard.SCardReleaseContext(context)
            if time.monotonic() - started >= self._retry_max_s:
                backoff = RETRY_FIRST_S  # that context was healthy: try again quickly
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self._retry_max_s)

    def _watch(self, context: int) -> None:
        states: dict[str, int] = {PNP_NOTIFICATION: scard.SCARD_STATE_UNAWARE}
        self._post(ServiceUp())
        self._sync_readers(context, states)
        while not self._stopping.is_set():
            request = list(states.items())
            hr, answer = scard.SCardGetStatusChange(context, WAKE_MS, request)
            if hr in SERVICE_LOST:
                raise _ServiceLostError(hr)
            if hr in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_UNKNOWN_READER):
                self._sync_readers(context, states)  # the safety net of the docstring
                continue
            if hr == scard.SCARD_E_CANCELLED:
                continue  # stop() or a stray cancel: the loop condition decides
            if hr != scard.SCARD_S_SUCCESS:
                raise _ServiceLostError(hr)  # anything else: start over with a new context
            detected_at = time.monotonic()
            relist = False
            for name, event, _atr in answer:
                if name == PNP_NOTIFICATION:
                    relist = relist or bool(event & scard.SCARD_STATE_CHANGED)
                    states[name] = event & ~scard.SCARD_STATE_CHANGED
                elif name in states and event & scard.SCARD_STATE_CHANGED:
                    old, states[name] = states[name], event & ~scard.SCARD_STATE_CHANGED
                    relist = (
                        self._on_change(context, name, old, states[name], detected_at) or relist
                    )
            if relist:
                self._sync_readers(context, states)

    def _sync_readers(self, context: int, states: dict[str, int]) -> None:
        present = set(list_matching(context, self._globs))
        for name in [n for n in states if n != PNP_NOTIFICATION and n not in present]:
            del states[name]
            self._post(ReaderLost(name, "reader unplugged", gone=True))
        for name in sorted(present - states.keys()):
            states[name] = scard.SCARD_STATE_UNAWARE
            self._post(ReaderSeen(name))

    def _on_change(self, context: int, name: str, old: int, new: int, detected_at: float) -> bool:
        """Handle one reader's new state; True when the reader list must be read again."""
        if new & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
            return True  # unplugged: _sync_readers drops it and says so
        if new & scard.SCARD_STATE_UNAVAILABLE:
            if not old & scard.SCARD_STATE_UNAVAILABLE:
                self._post(ReaderLost(name, "reader unavailable", gone=False))
            return False
        if old & scard.SCARD_STATE_UNAVAILABLE:
            self._post(ReaderSeen(name))
        if old & scard.SCARD_STATE_PRESENT and (
            not new & scard.SCARD_STATE_PRESENT or _counter(old) != _counter(new)
        ):
            self._post(CardRemoved(name))
        if _arrived(old, new):
            if new & scard.SCARD_STATE_MUTE:
                self._post(CardResult(name, "card-mute", 0, detected_at))
            elif new & scard.SCARD_STATE_EXCLUSIVE:
                self._post(CardResult(name, "card-busy", 0, detected_at))
            else:
                self._read(context, name, new, detected_at)
        return False

    def _read(self, context: int, name: str, state: int, detected_at: float) -> None:
        """Read the card that arrived; post exactly one CardResult.

        A clean exchange is posted before the disconnect (the consumer need not wait for
        it). An exchange that failed while the card stayed is tried once more: pcscd may not
        have seen a quick swap (one card off, another on between two of its polls), so the
        card there now may never have been asked."""
        bytes_in = 0
        for attempt in (1, 2):
            hr, card, protocol = scard.SCardConnect(
                context,
                name,
                scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            )
            if hr != scard.SCARD_S_SUCCESS:
                self._post(CardResult(name, self._connect_failure(hr), bytes_in, detected_at))
                return
            exchange = CumulusExchange(self._prefixes)
            try:
                failure, received = self._exchange(card, protocol, exchange)
                bytes_in += received
                if failure is None:
                    assert exchange.outcome is not None
                    self._post(CardResult(name, exchange.outcome, bytes_in, detected_at))
                    return
            finally:
                scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
            outcome, stayed = self._judge_failure(context, name, state, exchange, failure)
            if not stayed or attempt == 2 or self._stopping.is_set():
                break
            log.debug("reader %r: the card stayed after a failed exchange; trying again", name)
        self._post(CardResult(name, outcome, bytes_in, detected_at))

    @staticmethod
    def _exchange(
        card: int, protocol: int, exchange: CumulusExchange
    ) -> tuple[int | bytes | None, int]:
        """Run the exchange on a connected card: (None, bytes received) when it ended
        normally, else what broke it: a PC/SC error code or an answer with no status word."""
        received = 0
        while (command := exchange.next_command()) is not None:
            hr, response = scard.SCardTransmit(card, protocol, list(command))
            if hr != scard.SCARD_S_SUCCESS:
                return int(hr), received
            raw = bytes(response)
            received += len(raw)
            if len(raw) < 2:
                return raw, received  # vpcd's way of saying "the card vanished", or a broken card
            exchange.receive(raw)
        return None, received

    def _judge_failure(
        self, context: int, name: str, state: int, exchange: CumulusExchange, failure: int | bytes
    ) -> tuple[Outcome | LinkReject, bool]:
        """What a broken exchange means: (outcome, whether the card stayed on the reader)."""
        if isinstance(failure, int) and failure in SERVICE_LOST:
            raise _ServiceLostError(failure)
        log.debug(
            "reader %r: exchange failed at %s: %s",
            name,
            exchange.step,
            error_text(failure) if isinstance(failure, int) else "answer with no status word",
        )
        if failure in _CARD_GONE or self._card_left(context, name, state):
            return "card-removed", False
        if isinstance(failure, bytes):
            exchange.receive(failure)  # no status word: the exchange calls it bad-response
            assert exchange.outcome is not None
            return exchange.outcome, True
        return ("card-mute" if failure in _CARD_MUTE else "card-io"), True

    def _connect_failure(self, hr: int) -> LinkReject:
        if hr in SERVICE_LOST:
            raise _ServiceLostError(hr)
        if hr in _CARD_GONE:
            return "card-removed"
        if hr in _CARD_MUTE:
            return "card-mute"
        if hr == scard.SCARD_E_SHARING_VIOLATION:
            return "card-busy"
        return "card-io"

    def _card_left(self, context: int, name: str, arrival: int) -> bool:
        """After a failed exchange: does pcscd see the card gone within CONFIRM_MS?"""
        deadline = time.monotonic() + CONFIRM_MS / 1000
        current = arrival
        while not self._stopping.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return False
            hr, answer = scard.SCardGetStatusChange(context, remaining_ms, [(name, current)])
            if hr in SERVICE_LOST:
                raise _ServiceLostError(hr)
            if hr != scard.SCARD_S_SUCCESS:
                log.debug(
                    "reader %r: card still there after a failed exchange? %s", name, error_text(hr)
                )
                return False  # timeout (still there), cancel (stopping) or reader trouble
            event = answer[0][1] & ~scard.SCARD_STATE_CHANGED
            log.debug("reader %r: state 0x%X after a failed exchange", name, event)
            if not event & scard.SCARD_STATE_PRESENT or _counter(event) != _counter(arrival):
                return True
            current = event
        return False
