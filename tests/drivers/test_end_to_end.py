"""A scanner stub and a reader over a real pty, with faults: what comes out is exactly what
should. Never timed: the stub's ``settle`` waits until the reader has seen the line go idle.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from drivers.events import CardRead
from drivers.serial import SerialReader
from drivers.stats import ReaderState
from firmware_stubs.serial_stub import FAULTS, Faults, SentScan, SerialStub
from tests.drivers.helpers import CARD, CARD2, Settler, card_number, online, reading, wait_until

FAULTY = Faults(split=0.2, noise=0.06, bitflip=0.06, overlong=0.02, double=0.05)


async def run_scans(
    link: Path, *, stub_framing: str, reader_framing: str, count: int, unplug_at: set[int]
) -> tuple[list[SentScan], list[CardRead], SerialReader]:
    reads: list[CardRead] = []
    sent: list[SentScan] = []
    settler = Settler()
    async with SerialStub(
        link=link, framing=stub_framing, faults=FAULTY, seed=20260301, settle=settler
    ) as stub:
        reader = SerialReader("front", stub.path, framing=reader_framing, gap_s=0.02)
        settler.reader, settler.stub = reader, stub
        async with reading(reader, reads):
            await online(reader)
            for n in range(count):
                if n in unplug_at:
                    await settler()  # nothing in flight when the cable goes
                    wanted = reader.stats.reconnects + 1
                    await stub.unplug(0.2)
                    await wait_until(lambda w=wanted: reader.stats.reconnects == w)
                sent.append(await stub.scan(card_number(n)))
            await settler()
    return sent, reads, reader


def check_exactly_the_valid_reads(
    sent: list[SentScan], reads: list[CardRead], reader: SerialReader
) -> None:
    expected = [(scan.payload, scan.symbology) for scan in sent if scan.readable]
    got = [(read.card, read.symbology) for read in reads]
    assert got == expected  # in order, none twice, none invented, none lost
    assert reader.stats.good_reads == len(expected)
    doubles = sum(1 for scan in sent if scan.readable and "double" in scan.faults)
    assert reader.stats.duplicates == doubles
    unreadable = sum(1 for scan in sent if not scan.readable)
    assert unreadable > 0
    assert reader.stats.total_rejects >= unreadable


async def test_thousand_scans_in_mixed_framings_with_faults_give_exactly_the_valid_reads(
    link: Path,
) -> None:
    sent, reads, reader = await run_scans(
        link, stub_framing="mixed", reader_framing="auto", count=1000, unplug_at={333, 666}
    )
    assert len(sent) == 1000
    assert {fault for scan in sent for fault in scan.faults} == set(FAULTS)
    assert {scan.framing for scan in sent} == {"crlf", "stx-etx", "aim", "magstripe"}
    check_exactly_the_valid_reads(sent, reads, reader)
    assert reader.stats.reconnects == 2


@pytest.mark.parametrize("framing", ["crlf", "stx-etx", "aim", "magstripe"])
async def test_faulty_scans_in_one_framing_give_exactly_the_valid_reads(
    link: Path, framing: str
) -> None:
    sent, reads, reader = await run_scans(
        link, stub_framing=framing, reader_framing=framing, count=150, unplug_at=set()
    )
    check_exactly_the_valid_reads(sent, reads, reader)


async def test_unplug_for_three_seconds_then_replug_resumes_with_one_reconnect(
    link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.serial")
    reads: list[CardRead] = []
    async with SerialStub(link=link, framing="stx-etx") as stub:
        reader = SerialReader("front", stub.path)
        async with reading(reader, reads) as task:
            await online(reader)
            await stub.scan(CARD)
            await wait_until(lambda: len(reads) == 1)

            unplugging = asyncio.create_task(stub.unplug(3.0))
            await wait_until(lambda: reader.stats.state is ReaderState.OFFLINE, what="offline")
            await unplugging
            await wait_until(lambda: reader.stats.reconnects == 1, what="reconnected")
            await stub.scan(CARD2)
            await wait_until(lambda: len(reads) == 2)
            assert not task.done()  # no crash
            assert reader.stats.state is ReaderState.ONLINE
    assert [read.card for read in reads] == [CARD, CARD2]
    assert reader.stats.reconnects == 1
    assert reader.stats.comm_errors >= 2  # the loss, then at least one failed open
    ours = [r for r in caplog.records if r.name == "drivers.serial"]
    assert len([r for r in ours if r.levelno >= logging.WARNING]) == 1  # logged once
    assert len([r for r in ours if "back online" in r.getMessage()]) == 1
