"""A contactless Cumulus card presented to pcscd's vpcd virtual reader: our simulated card.

Like `firmware_stubs.serial_stub` for scanners, it speaks the real wire protocol, so the PC/SC
driver under test runs unmodified against a real pcscd. Library first; ``cumulus-stub card``
(`firmware_stubs.card_cli`) is a thin wrapper. Pure asyncio, no thread, no dependency:
Debian's python3-virtualsmartcard lives outside every sys.path and needs pycryptodome.

The vpcd protocol (notes/test-rig.md): the card is a TCP *client* of vpcd (one port per reader
slot: 35963 → "Virtual PCD 00 00", 35964 → "Virtual PCD 00 01"). Every message is a 2-byte
big-endian length then the payload. A 1-byte payload is a control code (0 power off, 1 power
on, 2 reset, 4 "send the ATR", answered with the ATR); a longer one is a command APDU,
answered with the response APDU. Connecting is presenting the card; closing is removing it.
pcscd asks for the ATR about every 400 ms to see whether the card is still there.

The latency trap: vpcd writes the length and the APDU as two segments and does not disable
Nagle, so the second segment waits for our ACK of the first; with delayed ACK on our socket
each APDU costs ~40 ms. We set TCP_NODELAY (our answers leave at once) and re-arm
TCP_QUICKACK after every read (Linux drops quick-ACK mode by itself), which brings a
transmit down to a fraction of a millisecond.

API::

    CumulusApplet(number, *, applet=True, uid=DEFAULT_UID, exact_le=False)
        sans-I/O card behaviour:
        respond(command: bytes) -> bytes;  reset()
    VirtualCard(number, *, host="127.0.0.1", port=VPCD_PORTS[0], applet=True,
                uid=DEFAULT_UID, atr=DEFAULT_ATR, retry_s=0.1, drop_on=None, on_command=None)
        present()              start presenting: connect, and reconnect whenever vpcd drops
                               us (pcscd restarted) until removed
        async remove()         take the card away (orderly close) and stop presenting
        kill()                 vanish without a word (abortive close, RST), stop presenting
        async wait_connected() / wait_gone()    until connected to vpcd / no longer connected
        drop_on                "select" | "read" | None: when that command arrives, close
                               without answering (the card leaves the field mid-exchange)
        connected, presenting, connections, commands, number, applet
    (also an async context manager: present on enter, remove on exit)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self

from drivers.cards import mask
from drivers.protocols.apdu import (
    AID,
    READ_NUMBER,
    SELECT,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_OK,
    CommandApdu,
    RemoteProtocolError,
)

log = logging.getLogger(__name__)

VPCD_PORTS: Final = (35963, 35964)
"""TCP ports of the two slots of Debian's /etc/reader.conf.d/vpcd."""
VPCD_READERS: Final = ("Virtual PCD 00 00", "Virtual PCD 00 01")
"""The PC/SC reader names pcscd gives those two slots."""

DEFAULT_ATR: Final = bytes.fromhex("3B80800101")
"""TS 3B, T0 80, TD1 80, TD2 01 (T=1), TCK 01: an ISO 14443-4 card with no historical bytes."""
DEFAULT_UID: Final = bytes.fromhex("04A1B2C3D4E580")

CTRL_OFF: Final = 0
CTRL_ON: Final = 1
CTRL_RESET: Final = 2
CTRL_ATR: Final = 4

SW_WRONG_LENGTH: Final = 0x6700
SW_INS_NOT_SUPPORTED: Final = 0x6D00
SW_CLA_NOT_SUPPORTED: Final = 0x6E00
GET_UID: Final = (0xFF, 0xCA, 0x00, 0x00)  # PC/SC part 3 pseudo-APDU; vpcd passes it to us

DropPoint = Literal["select", "read"]


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + bytes((sw >> 8, sw & 0xFF))


class CumulusApplet:
    """What the card answers, without any I/O: a Cumulus card (or, with ``applet=False``, a
    card without the applet, e.g. a bank card). Answers:

    - SELECT of the Cumulus AID: 90 00 (6A 82 without the applet, or for any other AID)
    - READ NUMBER (80 CA 00 01): the number's bytes and 90 00 once selected; 69 85 before;
      6C 0D when Le is neither 00 nor the number's length (T=0 style "wrong Le"); with
      ``exact_le=True`` also for Le 00 (a card that insists on the exact length)
    - GET UID (FF CA 00 00): the UID and 90 00 (pcscd does not answer it for vpcd)
    - 6E 00 for a class we do not know, 6D 00 for an instruction, 67 00 for a malformed APDU

    ``number`` may be any text (encoded as latin-1) so that rejects can be tested too.
    """

    def __init__(
        self,
        number: str,
        *,
        applet: bool = True,
        uid: bytes = DEFAULT_UID,
        exact_le: bool = False,
    ) -> None:
        self.number = number
        self.has_applet = applet
        self.uid = uid
        self.exact_le = exact_le
        self.selected = False

    def reset(self) -> None:
        """Power cycle or reset: nothing stays selected."""
        self.selected = False

    def respond(self, raw: bytes) -> bytes:
        try:
            command = CommandApdu.parse(raw)
        except RemoteProtocolError:
            return _sw(SW_WRONG_LENGTH)
        head = (command.cla, command.ins, command.p1, command.p2)
        if (command.cla, command.ins, command.p1) == (SELECT.cla, SELECT.ins, SELECT.p1):
            self.selected = self.has_applet and command.data == AID
            return _sw(SW_OK if self.selected else SW_FILE_NOT_FOUND)
        if head == (READ_NUMBER.cla, READ_NUMBER.ins, READ_NUMBER.p1, READ_NUMBER.p2):
            if not self.selected:
                return _sw(SW_CONDITIONS_NOT_SATISFIED)
            data = self.number.encode("latin-1")
            accepted = (None, len(data)) if self.exact_le else (None, 256, len(data))
            if command.ne not in accepted:
                return _sw(0x6C00 | len(data) & 0xFF)
            return _sw(SW_OK, data)
        if head == GET_UID:
            return _sw(SW_OK, self.uid)
        if command.cla not in (0x00, 0x80, 0xFF):
            return _sw(SW_CLA_NOT_SUPPORTED)
        return _sw(SW_INS_NOT_SUPPORTED)


def _set_quickack(sock: socket.socket | None) -> None:
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class _VpcdLink(asyncio.Protocol):
    """One TCP connection to vpcd: frames messages, answers them through the card."""

    def __init__(self, card: VirtualCard) -> None:
        self._card = card
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sock: socket.socket | None = None
        self.dropped = False  # closed on purpose mid-exchange (VirtualCard.drop_on)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._sock = transport.get_extra_info("socket")
        if self._sock is not None:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _set_quickack(self._sock)

    def data_received(self, data: bytes) -> None:
        _set_quickack(self._sock)  # re-armed before the next recv: see the module docstring
        self._buf += data
        while len(self._buf) >= 2 and self.transport is not None:
            (size,) = struct.unpack_from(">H", self._buf)
            if len(self._buf) < 2 + size:
                return
            message = bytes(self._buf[2 : 2 + size])
            del self._buf[: 2 + size]
            answer = self._card._handle(message, self)
            if answer is not None and self.transport is not None:
                self.transport.write(struct.pack(">H", len(answer)) + answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self, *, abort: bool = False) -> None:
        transport, self.transport = self.transport, None
        if transport is None:
            return
        if abort:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: the kernel answers with RST, as for a crash
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()


class VirtualCard:
    """One Cumulus card presented to one vpcd slot; see the module docstring."""

    def __init__(
        self,
        number: str,
        *,
        host: str = "127.0.0.1",
        port: int = VPCD_PORTS[0],
        applet: bool = True,
        uid: bytes = DEFAULT_UID,
        atr: bytes = DEFAULT_ATR,
        retry_s: float = 0.1,
        drop_on: DropPoint | None = None,
        on_command: Callable[[bytes], None] | None = None,
    ) -> None:
        if not 0 < retry_s <= 2.0:
            raise ValueError("retry_s must be in (0, 2] seconds")
        self.applet = CumulusApplet(number, applet=applet, uid=uid)
        self.host = host
        self.port = port
        self.atr = atr
        self.retry_s = retry_s
        self.drop_on: DropPoint | None = drop_on
        self.on_command = on_command
        self.connections = 0
        self.commands = 0
        self._task: asyncio.Task[None] | None = None
        self._link: _VpcdLink | None = None
        self._state_changed: asyncio.Event | None = None

    @property
    def number(self) -> str:
        return self.applet.number

    @number.setter
    def number(self, value: str) -> None:
        self.applet.number = value

    @property
    def presenting(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.transport is not None

    def __repr__(self) -> str:
        return (
            f"VirtualCard({mask(self.number)!r}, {self.host}:{self.port}, "
            f"presenting={self.presenting}, connected={self.connected})"
        )

    def present(self) -> None:
        """Start presenting (idempotent). Needs a running loop."""
        if self.presenting:
            return
        self._changed()
        self._task = asyncio.get_running_loop().create_task(
            self._present(), name=f"vpcd-card:{self.port}"
        )

    async def remove(self) -> None:
        """Take the card off the reader: orderly close, and stop reconnecting."""
        task, self._task = self._task, None
        if self._link is not None:
            self._link.close()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves: never swallow that
        self._link = None
        self._changed()

    def kill(self) -> None:
        """The card vanishes without a word (abortive close) and is not presented again."""
        task, self._task = self._task, None
        if self._link is not None:
            self._link.close(abort=True)
        if task is not None:
            task.cancel()
        self._changed()

    async def wait_connected(self) -> None:
        while not self.connected:
            await self._wait_change()

    async def wait_gone(self) -> None:
        while self.connected:
            await self._wait_change()

    async def __aenter__(self) -> Self:
        self.present()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.remove()

    # -- internals ---------------------------------------------------------------------

    def _changed(self) -> None:
        if self._state_changed is not None:
            self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _wait_change(self) -> None:
        if self._state_changed is None:
            self._state_changed = asyncio.Event()
        await self._state_changed.wait()

    async def _present(self) -> None:
        loop = asyncio.get_running_loop()
        waiting_logged = False
        while True:
            try:
                _, link = await loop.create_connection(
                    lambda: _VpcdLink(self), self.host, self.port
                )
            except OSError as exc:
                if not waiting_logged:
                    log.info(
                        "card: vpcd at %s:%d not reachable (%s); retrying",
                        self.host,
                        self.port,
                        exc,
                    )
                    waiting_logged = True
                await asyncio.sleep(self.retry_s)
                continue
            waiting_logged = False
            self.connections += 1
            self.applet.reset()
            self._link = link
            self._changed()
            log.debug("card %s presented to %s:%d", mask(self.number), self.host, self.port)
            try:
                await link.closed
            finally:
                link.close()
                if self._link is link:
                    self._link = None
                self._changed()
            if self.drop_on is not None and link.dropped:
                return  # the card left the field: it stays away
            log.info("card: vpcd closed the connection (pcscd restarted?); reconnecting")

    def _handle(self, message: bytes, link: _VpcdLink) -> bytes | None:
        if len(message) == 1:
            code = message[0]
            if code == CTRL_ATR:
                return self.atr
            if code in (CTRL_OFF, CTRL_ON, CTRL_RESET):
                self.applet.reset()
            return None  # power and reset are not answered
        self.commands += 1
        if self.on_command is not None:
            self.on_command(message)
        if self.drop_on is not None and _is_command(message, self.drop_on):
            link.dropped = True
            link.close()
            return None
        return self.applet.respond(message)


def _is_command(message: bytes, which: DropPoint) -> bool:
    reference = SELECT if which == "select" else READ_NUMBER
    return message[:2] == bytes((reference.cla, reference.ins))
