"""The Cumulus contactless applet exchange, sans-I/O: command APDUs out, response APDUs in.

Why sans-I/O (the h11 shape, like the scanner framings): the exchange never touches PC/SC.
The caller asks for the next command, transmits it however it likes (pyscard in
`drivers.pcsc_thread`, a plain function in tests and the bench) and hands the answer back. So
tests drive it with tables of bytes, a fuzzer throws arbitrary answers at it, and the card stub
(`firmware_stubs.vpcd_card`) reuses the same constants to answer.

The exchange (spec/interfaces.md, normative)::

    select       00 A4 04 00 08 F0 43 55 4D 55 4C 55 53 00   (AID F0 "CUMULUS", Le 256)
    read number  80 CA 00 01 00                               (Le 256)

=================  ==========================================================================
status word        outcome
=================  ==========================================================================
``90 00``          select: go on to read; read: the data must be a Cumulus card number
                   (`drivers.cards.check_card` with the configured prefixes) or it is
                   rejected with that rule's reason (not-digits, bad-length, ...)
``6A 82``          on select: ``not-cumulus`` (a card without the applet, e.g. a bank card);
                   on read: ``bad-status`` (the applet was selected, so this is a broken card)
``69 85``          ``status-6985`` (conditions of use not satisfied: applet locked/not ready)
``6C xx``          wrong Le: the same command is sent again once with Le = xx; a second
                   ``6C`` for that command is ``bad-status``
anything else      ``bad-status`` (``Rejected.sw`` keeps the status word for diagnostics)
fewer than 2 bytes ``bad-response`` (no status word: not an APDU at all)
=================  ==========================================================================

Two error types, as in h11: `LocalProtocolError` means *we* misused the exchange (a bug of
ours; asking for a command while one is outstanding, answering when none is); a card's bytes,
however malformed, never raise out of `CumulusExchange` but end it as a `Rejected` outcome.
`RemoteProtocolError` is what the parsers (`ResponseApdu.parse`, `CommandApdu.parse`) raise on
bytes that are not an APDU; the exchange turns it into ``Rejected("bad-response")``.

A `CardNumber` can only hold a structurally valid number (13 digits, EAN-13 check digit): no
path through this module yields an invalid card. Reprs mask card numbers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, get_args

from drivers.cards import CARD_REJECTS, DEFAULT_PREFIXES, check_card, mask, normalize_prefixes

AID: Final = b"\xf0CUMULUS"
"""The Cumulus applet identifier: proprietary RID marker F0 then "CUMULUS"."""

SW_OK: Final = 0x9000
SW_FILE_NOT_FOUND: Final = 0x6A82  # SELECT: no such applet on this card
SW_CONDITIONS_NOT_SATISFIED: Final = 0x6985
SW1_WRONG_LE: Final = 0x6C  # 6C xx: wrong Le, xx is the right one

MAX_SHORT_NE: Final = 256
"""Largest expected response length of a short APDU (encoded as Le = 00)."""

ApduReject = Literal[
    "not-cumulus",  # SELECT answered 6A 82: the card has no Cumulus applet
    "status-6985",  # 69 85, conditions of use not satisfied
    "bad-status",  # any other status word (or a second 6C for one command)
    "bad-response",  # an answer that is no response APDU (fewer than 2 bytes, or too long)
]
APDU_REJECTS: Final[frozenset[str]] = frozenset(get_args(ApduReject))


class ApduError(Exception):
    """Base of the two errors below."""


class LocalProtocolError(ApduError):
    """We broke the protocol: the exchange was driven out of turn (a bug of ours)."""


class RemoteProtocolError(ApduError):
    """The peer broke the protocol: the bytes are not an APDU. ``reason`` is bad-response."""

    reason: Final = "bad-response"


def _check_byte(name: str, value: int) -> None:
    if not (isinstance(value, int) and 0 <= value <= 0xFF):
        raise ValueError(f"{name} must be a byte (0-255), not {value!r}")


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A short command APDU (ISO 7816-4 cases 1-4).

    ``ne`` is the expected response length, 1-256 (256 goes on the wire as Le = 00), or None
    for no Le byte.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    ne: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _check_byte(name, getattr(self, name))
        if not isinstance(self.data, bytes) or len(self.data) > 255:
            raise ValueError("data must be bytes of at most 255 (short APDU)")
        if self.ne is not None and not 1 <= self.ne <= MAX_SHORT_NE:
            raise ValueError(f"ne must be 1-{MAX_SHORT_NE} or None, not {self.ne!r}")

    def to_bytes(self) -> bytes:
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.ne is not None:
            out.append(self.ne % MAX_SHORT_NE)
        return bytes(out)

    def with_ne(self, ne: int) -> CommandApdu:
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, ne)

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """A short command APDU from its bytes; RemoteProtocolError if they are not one."""
        if len(raw) < 4:
            raise RemoteProtocolError(f"a command APDU has at least 4 bytes, not {len(raw)}")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:  # case 1
            return cls(cla, ins, p1, p2)
        if len(body) == 1:  # case 2: Le only
            return cls(cla, ins, p1, p2, ne=body[0] or MAX_SHORT_NE)
        lc = body[0]
        if lc == 0:
            raise RemoteProtocolError("extended-length APDUs are not supported")
        if len(body) == 1 + lc:  # case 3
            return cls(cla, ins, p1, p2, data=bytes(body[1:]))
        if len(body) == 2 + lc:  # case 4
            return cls(cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or MAX_SHORT_NE)
        raise RemoteProtocolError(f"Lc {lc} does not match the {len(body) - 1} bytes that follow")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data then the two status bytes. The repr shows the length of the
    data only (it may be a card number)."""

    data: bytes
    sw1: int
    sw2: int

    def __post_init__(self) -> None:
        _check_byte("sw1", self.sw1)
        _check_byte("sw2", self.sw2)
        if not isinstance(self.data, bytes) or len(self.data) > MAX_SHORT_NE:
            raise ValueError(f"data must be bytes of at most {MAX_SHORT_NE}")

    @property
    def sw(self) -> int:
        return self.sw1 << 8 | self.sw2

    def to_bytes(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        """Split data and status word; RemoteProtocolError when there is no status word or
        more data than a short APDU can carry."""
        if len(raw) < 2:
            raise RemoteProtocolError(f"a response APDU has at least 2 bytes, not {len(raw)}")
        if len(raw) > MAX_SHORT_NE + 2:
            raise RemoteProtocolError(f"response of {len(raw)} bytes is too long")
        return cls(bytes(raw[:-2]), raw[-2], raw[-1])

    def __repr__(self) -> str:
        return f"ResponseApdu(<{len(self.data)} bytes>, sw={self.sw:04X})"


SELECT: Final = CommandApdu(0x00, 0xA4, 0x04, 0x00, AID, ne=MAX_SHORT_NE)
"""SELECT by AID, first or only occurrence, Le 256: ``00 A4 04 00 08 F0 … 53 00``."""
READ_NUMBER: Final = CommandApdu(0x80, 0xCA, 0x00, 0x01, ne=MAX_SHORT_NE)
"""Proprietary GET DATA of the card number: ``80 CA 00 01 00``."""


@dataclass(frozen=True, slots=True)
class CardNumber:
    """The exchange read a Cumulus card number (checked against the configured prefixes)."""

    number: str

    def __post_init__(self) -> None:
        reason = check_card(self.number, prefixes=None)
        if reason is not None:
            raise ValueError(f"CardNumber must be a card number ({reason})")

    def __repr__(self) -> str:
        return f"CardNumber({mask(self.number)!r})"


@dataclass(frozen=True, slots=True)
class Rejected:
    """The exchange ended without a card: ``reason`` is one of APDU_REJECTS or CARD_REJECTS;
    ``sw`` is the status word that ended it, when there was one."""

    reason: str
    sw: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in APDU_REJECTS and self.reason not in CARD_REJECTS:
            raise ValueError(f"unknown reject reason {self.reason!r}")


Outcome = CardNumber | Rejected


class Step(enum.Enum):
    SELECT = "select"
    READ = "read"


# The exchange as data: what each step sends, what a given status word means there.
# "next" goes on to the following step (or, after the last, checks the data); "retry-le"
# sends the same command again with the Le the card asked for.
_COMMANDS: Final[dict[Step, CommandApdu]] = {Step.SELECT: SELECT, Step.READ: READ_NUMBER}
_FOLLOWS: Final[dict[Step, Step | None]] = {Step.SELECT: Step.READ, Step.READ: None}
_STATUS: Final[dict[tuple[Step, int], str]] = {
    (Step.SELECT, SW_OK): "next",
    (Step.SELECT, SW_FILE_NOT_FOUND): "not-cumulus",
    (Step.SELECT, SW_CONDITIONS_NOT_SATISFIED): "status-6985",
    (Step.READ, SW_OK): "next",
    (Step.READ, SW_CONDITIONS_NOT_SATISFIED): "status-6985",
}


class CumulusExchange:
    """One select-then-read exchange with one card. Drive it like this::

        exchange = CumulusExchange(prefixes)
        while (command := exchange.next_command()) is not None:
            exchange.receive(transmit(command))
        exchange.outcome  # CardNumber or Rejected

    At most four commands are ever asked for (each step may be retried once for 6C xx).
    `receive` accepts any bytes and never raises for them; only driving the exchange out of
    turn raises `LocalProtocolError`.
    """

    def __init__(self, prefixes: Iterable[str] = DEFAULT_PREFIXES) -> None:
        self._prefixes = normalize_prefixes(prefixes)
        self._step: Step | None = Step.SELECT
        self._command: CommandApdu = SELECT
        self._retried = False
        self._outstanding = False
        self._outcome: Outcome | None = None
        self.commands_sent = 0

    @property
    def outcome(self) -> Outcome | None:
        """None while the exchange goes on; then how it ended."""
        return self._outcome

    @property
    def step(self) -> Step | None:
        return self._step

    def next_command(self) -> bytes | None:
        """The command to transmit now, or None once the exchange has ended."""
        if self._outstanding:
            raise LocalProtocolError("the previous command has not been answered yet")
        if self._outcome is not None:
            return None
        self._outstanding = True
        self.commands_sent += 1
        return self._command.to_bytes()

    def receive(self, raw: bytes) -> None:
        """The card's answer to the command last returned by `next_command`."""
        if not self._outstanding or self._step is None:
            raise LocalProtocolError("no command is waiting for an answer")
        self._outstanding = False
        try:
            response = ResponseApdu.parse(bytes(raw))
        except RemoteProtocolError:
            self._finish(Rejected("bad-response"))
            return
        step, sw = self._step, response.sw
        if response.sw1 == SW1_WRONG_LE and not self._retried:
            self._retried = True
            self._command = self._command.with_ne(response.sw2 or MAX_SHORT_NE)
            return
        action = _STATUS.get((step, sw), "bad-status")
        if action != "next":
            self._finish(Rejected(action, sw))
            return
        following = _FOLLOWS[step]
        if following is None:
            self._finish(self._card(response.data))
            return
        self._step, self._command, self._retried = following, _COMMANDS[following], False

    def _card(self, data: bytes) -> Outcome:
        text = data.decode("latin-1")  # never fails; non-digits are then "not-digits"
        reason = check_card(text, self._prefixes)
        return CardNumber(text) if reason is None else Rejected(reason, SW_OK)

    def _finish(self, outcome: Outcome) -> None:
        self._outcome = outcome
        self._step = None


def run_exchange(
    transmit: Callable[[bytes], bytes], prefixes: Iterable[str] = DEFAULT_PREFIXES
) -> Outcome:
    """Drive a whole exchange through ``transmit`` (command bytes → response bytes).
    Whatever ``transmit`` raises propagates: losing the card is the caller's business."""
    exchange = CumulusExchange(prefixes)
    while (command := exchange.next_command()) is not None:
        exchange.receive(transmit(command))
    assert exchange.outcome is not None
    return exchange.outcome
