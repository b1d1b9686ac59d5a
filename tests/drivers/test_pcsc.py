"""The PC/SC driver against a real pcscd, real vpcd and our virtual card (tests/drivers/pcsc_rig).

Nothing here asserts a duration: every wait is on an observed condition, with a generous
timeout that only turns a hang into a failure. Time-dependent rules (the double-read window)
run on a manual clock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers import pcsc_thread
from drivers.events import CardRead
from drivers.pcsc import PcscMonitor, PcscUnavailableError, list_readers
from drivers.pcsc_thread import CardRemoved, CardResult, Observation
from drivers.stats import ReaderState
from firmware_stubs import card_cli
from firmware_stubs.vpcd_card import VPCD_PORTS, VPCD_READERS, VirtualCard
from tests.drivers.helpers import CARD, CARD2, PRODUCT
from tests.drivers.pcsc_rig import CardFactory, Pcscd  # fixtures: tests/conftest.py plugin

pytestmark = pytest.mark.pcsc

R0, R1 = VPCD_READERS
ROOT = Path(__file__).resolve().parents[2]
WAIT_LIMIT_S = 20.0


class ManualClock:
    """Monotonic time that moves only when told to (for the double-read window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Watch:
    """A running monitor and what it reported."""

    monitor: PcscMonitor
    task: asyncio.Task[None]
    clock: ManualClock
    reads: list[CardRead] = field(default_factory=list)
    seen: list[Observation] = field(default_factory=list)
    service_states: list[ReaderState] = field(default_factory=list)

    def results(self, reader: str) -> list[CardResult]:
        return [o for o in self.seen if isinstance(o, CardResult) and o.reader == reader]

    def removals(self, reader: str) -> int:
        return sum(isinstance(o, CardRemoved) and o.reader == reader for o in self.seen)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll until ``predicate`` holds; the timeout only turns a hang into a failure."""
        end = time.monotonic() + WAIT_LIMIT_S
        while not (predicate() or self.task.done()):
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.002)
        if self.task.done():
            self.task.result()  # raises what ended the monitor
            raise AssertionError(f"the monitor ended while waiting for {what}")

    async def tap(self, card: VirtualCard, reader: str) -> None:
        """Present, wait for pcscd to report the exchange done, remove, wait for it to go."""
        before, gone = len(self.results(reader)), self.removals(reader)
        card.present()
        await self.until(lambda: len(self.results(reader)) > before, f"a card on {reader}")
        await card.remove()
        await self.until(lambda: self.removals(reader) > gone, f"the card off {reader}")


@pytest.fixture
async def watch(pcscd: Pcscd) -> AsyncIterator[Callable[..., Watch]]:
    watches: list[Watch] = []

    def start(globs: str = "Virtual PCD *", **kwargs: object) -> Watch:
        clock = ManualClock()
        monitor = PcscMonitor(globs, clock=clock, **kwargs)  # type: ignore[arg-type]
        reads: list[CardRead] = []
        task = asyncio.get_running_loop().create_task(monitor.run(reads.append))
        w = Watch(monitor, task, clock, reads)

        def observe(observation: Observation) -> None:
            w.seen.append(observation)
            if len(w.service_states) == 0 or w.service_states[-1] is not monitor.state:
                w.service_states.append(monitor.state)

        monitor.add_observer(observe)
        watches.append(w)
        return w

    yield start
    for w in watches:
        w.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w.task


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    spam = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert spam == [], [r.getMessage() for r in spam]


async def test_list_readers_sees_both_vpcd_slots(pcscd: Pcscd) -> None:
    assert set(VPCD_READERS) <= set(list_readers())
    assert list_readers("Virtual PCD * 01") == [R1]
    assert list_readers(["nothing like it*"]) == []


async def test_present_reads_once_and_again_after_two_seconds(
    watch: Callable[..., Watch], vpcd_card: CardFactory, caplog: pytest.LogCaptureFixture
) -> None:
    w = watch()
    card = vpcd_card(CARD)
    await w.tap(card, R0)
    assert [(r.reader, r.source, r.card) for r in w.reads] == [(R0, "pcsc", CARD)]
    w.clock.advance(2.0)
    await w.tap(card, R0)
    assert [r.card for r in w.reads] == [CARD, CARD]
    stats = w.monitor.stats[R0]
    assert (stats.good_reads, stats.duplicates, stats.rejects) == (2, 0, {})
    assert stats.state is ReaderState.ONLINE and stats.bytes_in == 2 * (2 + 15)
    assert CARD not in caplog.text


async def test_retap_within_the_window_counts_once(
    watch: Callable[..., Watch], vpcd_card: CardFactory
) -> None:
    w = watch()
    card = vpcd_card(CARD)
    await w.tap(card, R0)
    w.clock.advance(1.4)
    await w.tap(card, R0)
    assert len(w.reads) == 1
    assert w.monitor.stats[R0].duplicates == 1


async def test_card_without_the_applet_is_one_not_cumulus_reject(
    watch: Callable[..., Watch], vpcd_card: CardFactory
) -> None:
    w = watch()
    await w.tap(vpcd_card(CARD, applet=False), R0)
    assert w.reads == []
    assert w.monitor.stats[R0].rejects == {"not-cumulus": 1}
    assert w.monitor.stats[R0].good_reads == 0


@pytest.mark.parametrize(
    ("number", "reason"),
    [(PRODUCT, "bad-prefix"), ("2099123456787", "bad-check-digit"), ("20991234", "bad-length")],
)
async def test_numbers_breaking_the_card_rules_are_rejected(
    watch: Callable[..., Watch], vpcd_card: CardFactory, number: str, reason: str
) -> None:
    w = watch()
    await w.tap(vpcd_card(number), R0)
    assert w.reads == []
    assert w.monitor.stats[R0].rejects == {reason: 1}


async def test_two_readers_each_read_is_attributed_to_its_reader(
    watch: Callable[..., Watch], vpcd_card: CardFactory
) -> None:
    w = watch()
    on_0, on_1 = vpcd_card(CARD, slot=0), vpcd_card(CARD2, slot=1)
    on_0.present()
    on_1.present()
    await w.until(lambda: len(w.reads) == 2, "both reads")
    assert sorted((r.reader, r.card) for r in w.reads) == [(R0, CARD), (R1, CARD2)]
    assert w.monitor.stats[R0].good_reads == w.monitor.stats[R1].good_reads == 1


async def test_card_pulled_mid_read_is_counted_and_not_read(
    watch: Callable[..., Watch], vpcd_card: CardFactory
) -> None:
    w = watch()
    card = vpcd_card(CARD, drop_on="read")
    card.present()
    await w.until(
        lambda: w.monitor.stats.get(R0) is not None and w.monitor.stats[R0].total_rejects == 1,
        "the reject",
    )
    assert w.monitor.stats[R0].rejects == {"card-removed": 1}
    assert w.reads == []
    # the reader is fine afterwards
    w.clock.advance(2.0)
    await w.tap(vpcd_card(CARD), R0)
    assert [r.card for r in w.reads] == [CARD]


async def card_stub(*args: str) -> asyncio.subprocess.Process:
    """``cumulus-stub card`` in a child process (python -m firmware_stubs.card_cli)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_stubs.card_cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def reap(stub: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for the stub to end (killing it if a test failed first); its code and stderr."""
    try:
        _, err = await asyncio.wait_for(stub.communicate(), timeout=20)
    except TimeoutError:
        stub.kill()
        _, err = await stub.communicate()
    assert stub.returncode is not None
    return stub.returncode, err.decode(errors="replace")


async def test_card_stub_killed_mid_exchange_is_counted_no_crash(
    watch: Callable[..., Watch], vpcd_card: CardFactory, caplog: pytest.LogCaptureFixture
) -> None:
    w = watch()
    await w.until(lambda: R1 in w.monitor.stats, "the readers")
    stub = await card_stub(
        "--number", CARD, "--vpcd", f"127.0.0.1:{VPCD_PORTS[1]}", "--die-on", "read"
    )
    try:
        await w.until(lambda: w.monitor.stats[R1].total_rejects == 1, "the reject")
    finally:
        code, _ = await reap(stub)
    assert code == -signal.SIGKILL
    assert w.monitor.stats[R1].rejects == {"card-removed": 1}
    assert w.reads == [] and not w.task.done()
    await w.tap(vpcd_card(CARD2, slot=1), R1)
    assert [r.card for r in w.reads] == [CARD2]
    no_tracebacks(caplog)


async def test_pcscd_killed_and_restarted_while_watching(
    watch: Callable[..., Watch],
    vpcd_card: CardFactory,
    pcscd: Pcscd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="drivers")
    w = watch()
    held = vpcd_card(CARD, slot=0)  # stays on the reader through the restart
    held.present()
    await w.until(lambda: len(w.reads) == 1, "the first read")
    pcscd.kill()
    await w.until(lambda: w.monitor.state is ReaderState.OFFLINE, "offline")
    await w.until(
        lambda: all(s.state is ReaderState.OFFLINE for s in w.monitor.stats.values()),
        "readers offline",
    )
    await asyncio.sleep(0.3)  # a few retries happen meanwhile: they must stay quiet
    w.clock.advance(2.0)
    pcscd.start()
    await w.until(lambda: w.monitor.state is ReaderState.ONLINE, "online again")
    # the next card is read, and the held card, reconnected by the stub, is read again
    await w.tap(vpcd_card(CARD2, slot=1), R1)
    await w.until(lambda: len(w.reads) == 3, "the held card read again")
    assert sorted((r.reader, r.card) for r in w.reads) == [(R0, CARD), (R0, CARD), (R1, CARD2)]
    assert held.connections == 2
    assert w.service_states[-3:] == [ReaderState.ONLINE, ReaderState.OFFLINE, ReaderState.ONLINE]
    assert w.monitor.outages == 1
    for name in (R0, R1):
        stats = w.monitor.stats[name]
        assert (stats.state, stats.comm_errors, stats.reconnects) == (ReaderState.ONLINE, 1, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pcscd unavailable" in warnings[0].getMessage()
    no_tracebacks(caplog)


async def test_pcscd_absent_at_start_then_started(
    watch: Callable[..., Watch],
    vpcd_card: CardFactory,
    pcscd: Pcscd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pcscd.kill()
    w = watch()
    await w.until(lambda: w.monitor.state is ReaderState.OFFLINE, "offline")
    await asyncio.sleep(0.3)  # retries meanwhile
    pcscd.start()
    await w.until(lambda: w.monitor.state is ReaderState.ONLINE, "online")
    await w.tap(vpcd_card(CARD), R0)
    assert [r.card for r in w.reads] == [CARD]
    assert [r.getMessage()[:18] for r in caplog.records if r.levelno == logging.WARNING] == [
        "pcscd unavailable "
    ]
    with pytest.raises(PcscUnavailableError):
        pcscd.kill()
        list_readers()
    no_tracebacks(caplog)


async def test_cancel_stops_the_thread_promptly_and_propagates(
    watch: Callable[..., Watch],
) -> None:
    w = watch()
    await w.until(lambda: w.monitor.state is ReaderState.ONLINE, "online")
    w.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(w.task, timeout=20)  # only against a hang
    assert w.task.cancelled()
    assert not [t for t in threading.enumerate() if t.name == "pcsc-watcher"]
    assert w.monitor.stats[R0].state is ReaderState.OFFLINE


async def test_dead_thread_is_restarted_and_counted(
    watch: Callable[..., Watch],
    vpcd_card: CardFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_read = pcsc_thread.Watcher._read
    calls = []

    def flaky_read(self: pcsc_thread.Watcher, *args: object) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug in the thread")
        real_read(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pcsc_thread.Watcher, "_read", flaky_read)
    w = watch()
    card = vpcd_card(CARD)
    card.present()  # kills the first thread; the second one finds the card still there
    await w.until(lambda: len(w.reads) == 1, "the read by the restarted thread")
    assert w.monitor.thread_restarts == 1
    assert [r.getMessage()[:30] for r in caplog.records if r.levelno >= logging.ERROR] == [
        "PC/SC watcher thread died; res"
    ]


async def test_an_exception_from_emit_propagates(pcscd: Pcscd, vpcd_card: CardFactory) -> None:
    def broken(read: CardRead) -> None:
        raise ValueError("consumer bug")

    monitor = PcscMonitor("Virtual PCD *")
    task = asyncio.get_running_loop().create_task(monitor.run(broken))
    vpcd_card(CARD).present()
    with pytest.raises(ValueError, match="consumer bug"):
        await asyncio.wait_for(task, timeout=20)
    assert not [t for t in threading.enumerate() if t.name == "pcsc-watcher"]


async def test_card_stub_cli_presents_until_stopped(watch: Callable[..., Watch]) -> None:
    w = watch()
    stub = await card_stub("--number", CARD)
    try:
        assert stub.stdout is not None
        line = await asyncio.wait_for(stub.stdout.readline(), timeout=20)
        assert line.decode().strip() == f"presented 2099*******86 to 127.0.0.1:{VPCD_PORTS[0]}"
        await w.until(lambda: len(w.reads) == 1, "the read")
        stub.send_signal(signal.SIGTERM)
    finally:
        code, err = await reap(stub)
    assert code == 0
    await w.until(lambda: w.removals(R0) == 1, "the card gone")
    assert CARD not in err and "2099*******86" in err


async def test_a_card_vanishing_abruptly_is_seen_gone(
    watch: Callable[..., Watch], vpcd_card: CardFactory
) -> None:
    w = watch()
    card = vpcd_card(CARD)
    card.present()
    await w.until(lambda: len(w.reads) == 1, "the read")
    card.kill()  # RST, no goodbye: as a crashed card process
    await w.until(lambda: w.removals(R0) == 1, "the card gone")
    assert not w.monitor.card_present(R0)
    assert w.monitor.stats[R0].total_rejects == 0


def test_card_cli_registers_as_a_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="cumulus-stub")
    card_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "card",
            "--number",
            CARD,
            "--vpcd",
            "localhost:35964",
            "--uid",
            "04aabbcc",
            "--not-cumulus",
        ]
    )
    assert (args.number, args.vpcd, args.uid, args.not_cumulus) == (
        CARD,
        ("localhost", 35964),
        bytes.fromhex("04aabbcc"),
        True,
    )
    assert args.run is card_cli.run
    with pytest.raises(SystemExit):
        parser.parse_args(["card", "--number", CARD, "--vpcd", "no-port"])
