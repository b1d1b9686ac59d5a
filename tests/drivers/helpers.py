"""Helpers shared by the driver tests: decoding, valid card numbers, waiting on state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass

from drivers.events import CardRead
from drivers.protocols import Decoder, Event, Frame, NeedData, make_decoder
from drivers.serial import SerialReader
from drivers.stats import ReaderState
from firmware_stubs.framing import FramingOptions
from firmware_stubs.serial_stub import SerialStub

CARD = "2099123456786"  # a valid Cumulus number (check digit 6)
CARD2 = "2099000000002"
PRODUCT = "4006381333931"  # a valid EAN-13 of someone else (bad-prefix)


def card_number(n: int) -> str:
    """The n-th Cumulus card number, computed independently of drivers.cards."""
    body = f"2099{n:08d}"
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body))
    return body + str((10 - total % 10) % 10)


def events_of(decoder: Decoder) -> list[Event]:
    out: list[Event] = []
    while not isinstance(event := decoder.next_event(), NeedData):
        out.append(event)
    return out


def decode(framing: str, chunks: Iterable[bytes], *, flush: bool = True) -> list[Event]:
    """Feed ``chunks`` with no gap between them, then (``flush``) let the line go idle."""
    decoder = make_decoder(framing)
    for chunk in chunks:
        decoder.receive_data(chunk, 0.0)
    if flush:
        decoder.expire(float("inf"))
    return events_of(decoder)


def byte_at_a_time(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


@dataclass(frozen=True)
class Row:
    """One line of a decoder table: wire bytes and the events they decode to. ``sent`` is
    (payload, options) when the stub encodes exactly these bytes: the row then runs both ways.
    """

    name: str
    wire: bytes
    events: list[Event]
    sent: tuple[str, FramingOptions] | None = None


def both_ways(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.sent is not None]


def ids(rows: list[Row]) -> list[str]:
    return [row.name for row in rows]


async def wait_until(
    predicate: Callable[[], bool], *, within: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` on the loop; the timeout is generous and only there to fail
    instead of hanging (never an assertion about speed)."""
    end = time.monotonic() + within
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def settled(reader: SerialReader, stub: SerialStub) -> Callable[[], bool]:
    """True once the reader has received every byte the stub wrote and holds no partial
    frame: what an idle line means, observed rather than slept for."""
    return lambda: reader.stats.bytes_in == stub.bytes_written and not reader.mid_frame


def check_decodes(framing: str, row: Row) -> None:
    """The row's bytes give its events, fed whole and fed byte at a time."""
    assert decode(framing, [row.wire]) == row.events
    assert decode(framing, byte_at_a_time(row.wire)) == row.events


def check_encodes(row: Row) -> None:
    """The stub, asked to send the row's read, puts exactly the row's bytes on the wire."""
    from firmware_stubs.framing import encode

    assert row.sent is not None
    payload, options = row.sent
    frame = row.events[0]
    assert isinstance(frame, Frame)
    assert encode(payload, frame.framing, options).wire == row.wire


@contextlib.asynccontextmanager
async def reading(reader: SerialReader, reads: list[CardRead]) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``reader`` in a task collecting its reads; cancel it (and see it end) on exit."""
    task = asyncio.create_task(reader.run(reads.append))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def online(reader: SerialReader) -> None:
    await wait_until(lambda: reader.stats.state is ReaderState.ONLINE, what="reader online")


class Settler:
    """The stub's ``settle`` hook: wait until the reader has seen the line go idle. Bind the
    reader and the stub after building both (they need each other)."""

    def __init__(self) -> None:
        self.reader: SerialReader | None = None
        self.stub: SerialStub | None = None

    async def __call__(self) -> None:
        assert self.reader is not None and self.stub is not None
        await wait_until(settled(self.reader, self.stub), what="line settled")
