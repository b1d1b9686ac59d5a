"""SerialReader over real pseudo-terminals: reads, rejects, double reads, errors, cancellation.

No test asserts on time: each waits for a state with a generous timeout instead.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.events import CardRead
from drivers.protocols import Frame
from drivers.serial import Accepted, CardFilter, SerialReader, run_readers
from drivers.stats import ReaderState
from firmware_stubs.framing import FRAMINGS
from firmware_stubs.serial_stub import SerialStub
from tests.drivers.helpers import (
    CARD,
    CARD2,
    PRODUCT,
    Settler,
    online,
    reading,
    wait_until,
)

LOGGER = "drivers.serial"


async def test_reads_a_card_from_a_pty(link: Path) -> None:
    reads: list[CardRead] = []
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path, framing="crlf")
        async with reading(reader, reads):
            await online(reader)
            await stub.scan(CARD)
            await wait_until(lambda: len(reads) == 1)
    (read,) = reads
    assert (read.reader, read.source, read.card, read.symbology) == ("front", "serial", CARD, None)
    assert read.at.tzinfo is UTC
    assert reader.stats.good_reads == 1
    assert reader.stats.last_read_at == read.at


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_auto_reader_reads_every_framing(link: Path, framing: str) -> None:
    reads: list[CardRead] = []
    async with SerialStub(link=link, framing=framing) as stub:
        reader = SerialReader("front", stub.path)  # framing="auto" is the default
        async with reading(reader, reads):
            await online(reader)
            sent = await stub.scan(CARD)
            await wait_until(lambda: len(reads) == 1)
    assert reads[0].card == CARD
    assert reads[0].symbology == sent.symbology
    assert reader.stats.rejects == {}


async def test_rejects_are_counted_by_reason_and_never_emitted(link: Path) -> None:
    reads: list[CardRead] = []
    settler = Settler()
    async with SerialStub(link=link, settle=settler) as stub:
        reader = SerialReader("front", stub.path, framing="crlf", gap_s=0.02)
        settler.reader, settler.stub = reader, stub
        async with reading(reader, reads):
            await online(reader)
            for text in [PRODUCT, "2099123456782", "hello", "209912", "1" * 300]:
                await stub.scan(text)
            await stub.send_raw(b"2099")  # never terminated: the gap ends it
            await stub.scan(CARD)
            await wait_until(lambda: len(reads) == 1)
    assert [read.card for read in reads] == [CARD]
    assert reader.stats.rejects == {
        "bad-prefix": 1,
        "bad-check-digit": 1,
        "not-digits": 1,
        "bad-length": 1,
        "too-long": 1,
        "incomplete": 1,
    }


async def test_configured_prefixes_decide_what_is_ours(link: Path) -> None:
    reads: list[CardRead] = []
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path, prefixes=("4006",))
        async with reading(reader, reads):
            await online(reader)
            await stub.scan(CARD)
            await stub.scan(PRODUCT)
            await wait_until(lambda: len(reads) == 1)
    assert [read.card for read in reads] == [PRODUCT]
    assert reader.stats.rejects == {"bad-prefix": 1}


async def test_scanner_double_read_counts_once(link: Path) -> None:
    reads: list[CardRead] = []
    async with SerialStub(link=link, framing="stx-etx") as stub:
        reader = SerialReader("front", stub.path)
        async with reading(reader, reads):
            await online(reader)
            await stub.scan(CARD, faults=["double"])
            await stub.scan(CARD2)
            await wait_until(lambda: len(reads) == 2)
    assert [read.card for read in reads] == [CARD, CARD2]
    assert reader.stats.duplicates == 1
    assert reader.stats.good_reads == 2


def test_double_read_window_runs_from_the_accepted_read() -> None:
    cards = CardFilter(dedup_window_s=1.5)
    frame = Frame(CARD.encode(), "crlf")
    assert isinstance(cards.check(frame, 100.0), Accepted)
    assert cards.check(frame, 101.0) == "duplicate"
    assert cards.check(frame, 101.49) == "duplicate"
    assert isinstance(cards.check(Frame(CARD2.encode(), "crlf"), 101.0), Accepted)
    assert isinstance(cards.check(frame, 101.5), Accepted)
    assert cards.check(frame, 102.9) == "duplicate"


async def test_same_card_after_the_window_counts_again_with_injected_clocks(link: Path) -> None:
    now = [1000.0]
    wall = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    reads: list[CardRead] = []
    async with SerialStub(link=link) as stub:
        reader = SerialReader(
            "front", stub.path, clock=lambda: now[0], wallclock=lambda: wall, dedup_window_s=1.5
        )
        async with reading(reader, reads):
            await online(reader)
            for t in (1000.0, 1001.4, 1001.6):
                now[0] = t
                await stub.scan(CARD)
                await wait_until(lambda: reader.stats.bytes_in == stub.bytes_written)
    assert [read.card for read in reads] == [CARD, CARD]
    assert reader.stats.duplicates == 1
    assert {read.at for read in reads} == {wall}


async def test_several_readers_at_once(tmp_path: Path) -> None:
    reads: list[CardRead] = []
    async with (
        SerialStub(link=tmp_path / "a", framing="crlf") as stub_a,
        SerialStub(link=tmp_path / "b", framing="magstripe") as stub_b,
        SerialStub(link=tmp_path / "c", framing="aim") as stub_c,
    ):
        readers = [
            SerialReader("a", stub_a.path),
            SerialReader("b", stub_b.path, framing="magstripe"),
            SerialReader("c", stub_c.path, framing="aim"),
        ]
        task = asyncio.create_task(run_readers(readers, reads.append))
        try:
            for reader in readers:
                await online(reader)
            await stub_a.scan(CARD)
            await stub_b.scan(CARD)  # the same card on another reader is not a double read
            await stub_c.scan(CARD2)
            await wait_until(lambda: len(reads) == 3)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert sorted((read.reader, read.card) for read in reads) == [
        ("a", CARD),
        ("b", CARD),
        ("c", CARD2),
    ]


async def test_reader_names_must_be_unique() -> None:
    readers = [SerialReader("a", "/dev/null"), SerialReader("a", "/dev/zero")]
    with pytest.raises(ValueError, match="unique"):
        await run_readers(readers, print)


async def test_cancellation_is_prompt_and_not_swallowed_while_online(link: Path) -> None:
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path)
        task = asyncio.create_task(reader.run(print))
        await online(reader)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    assert task.cancelled()
    assert reader.stats.state is ReaderState.OFFLINE


async def test_cancellation_is_prompt_and_not_swallowed_while_retrying(tmp_path: Path) -> None:
    reader = SerialReader("front", str(tmp_path / "absent"))
    task = asyncio.create_task(reader.run(print))
    await wait_until(lambda: reader.stats.comm_errors >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
    assert task.cancelled()


async def test_missing_port_is_offline_retried_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    reader = SerialReader("front", str(tmp_path / "absent"))
    async with reading(reader, []):
        await wait_until(lambda: reader.stats.comm_errors >= 4, what="four failed tries")
        assert reader.stats.state is ReaderState.OFFLINE
        assert "No such file" in (reader.stats.error_text or "")
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert reader.stats.state is ReaderState.OFFLINE  # stopped


async def test_port_that_is_not_a_tty_is_in_error_state_with_the_text(tmp_path: Path) -> None:
    not_a_tty = tmp_path / "file"
    not_a_tty.write_bytes(b"")
    reader = SerialReader("front", str(not_a_tty))
    async with reading(reader, []):
        await wait_until(lambda: reader.stats.comm_errors >= 1)
        assert reader.stats.state is ReaderState.ERROR
        assert "Could not configure port" in (reader.stats.error_text or "")


async def test_a_port_held_by_another_reader_is_an_error_not_a_crash(link: Path) -> None:
    async with SerialStub(link=link) as stub:
        first = SerialReader("first", stub.path)
        second = SerialReader("second", stub.path)
        async with reading(first, []):
            await online(first)
            async with reading(second, []):
                await wait_until(lambda: second.stats.comm_errors >= 1)
                assert second.stats.state is ReaderState.ERROR
                assert "lock" in (second.stats.error_text or "")
                assert first.stats.state is ReaderState.ONLINE


async def test_an_exception_in_emit_propagates_out_of_run(link: Path) -> None:
    def broken(read: CardRead) -> None:
        raise RuntimeError("consumer bug")

    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path)
        task = asyncio.create_task(reader.run(broken))
        await online(reader)
        await stub.scan(CARD)
        with pytest.raises(RuntimeError, match="consumer bug"):
            await asyncio.wait_for(task, timeout=10)


async def test_partial_frame_is_ended_by_the_gap(link: Path) -> None:
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path, gap_s=0.02)
        async with reading(reader, []):
            await online(reader)
            await stub.send_raw(b"\x022099")
            await wait_until(lambda: reader.stats.rejects.get("incomplete") == 1)
            assert not reader.mid_frame


async def test_a_late_gap_timer_looks_again_then_ends_the_partial_frame(link: Path) -> None:
    now = [0.0]
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path, gap_s=0.01, clock=lambda: now[0])
        async with reading(reader, []):
            await online(reader)
            await stub.send_raw(b"\x022099")
            await wait_until(lambda: reader.mid_frame)
            now[0] = 100.0  # as if the loop had stalled far past the deadline
            await wait_until(lambda: reader.stats.rejects.get("incomplete") == 1)


async def test_frame_cut_by_device_loss_is_counted_incomplete(link: Path) -> None:
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path, gap_s=60.0)  # only the loss can end it
        async with reading(reader, []):
            await online(reader)
            await stub.send_raw(b"\x022099")
            await wait_until(lambda: reader.mid_frame)
            stub.pull()
            await wait_until(lambda: reader.stats.rejects.get("incomplete") == 1)
            assert reader.stats.state is ReaderState.OFFLINE


async def test_card_numbers_are_never_logged_unmasked(
    link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reads: list[CardRead] = []
    async with SerialStub(link=link) as stub:
        reader = SerialReader("front", stub.path)
        async with reading(reader, reads):
            await online(reader)
            await stub.scan(CARD, faults=["double"])
            await stub.scan(PRODUCT)
            await stub.scan(CARD2)
            await wait_until(lambda: len(reads) == 2 and reader.stats.total_rejects == 1)
            logging.getLogger("test").info("read %s", reads[0])
    assert caplog.records
    for secret in (CARD, CARD2, PRODUCT):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"framing": "stx"}, "unknown framing"),
        ({"prefixes": ("20a9",)}, "prefix"),
        ({"prefixes": ()}, "prefix"),
        ({"baud": 0}, "baud"),
        ({"retry_max_s": 3.0}, "retry_max_s"),
        ({"gap_s": 0.0}, "gap_s"),
    ],
)
def test_bad_configuration_is_refused_when_built(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SerialReader("front", "/dev/ttyUSB0", **kwargs)  # type: ignore[arg-type]
