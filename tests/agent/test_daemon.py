"""The daemon as systemd runs it: notify protocol, watchdog, SIGTERM, failures of parts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agent.outbox import Outbox
from tests.agent.api_rig import POS_TOKEN, VALID_BASKET
from tests.agent.daemon_rig import DaemonRig
from tests.factories import HqKeyPair

CARD = "2099123456786"
AUTH = {"Authorization": f"Bearer {POS_TOKEN}"}


@pytest.fixture
def rig(tmp_path: Path, hq_keys: HqKeyPair) -> Iterator[DaemonRig]:
    r = DaemonRig(tmp_path, hq_keys)
    yield r
    r.stop()


def test_ready_then_watchdog_pings_and_a_blocked_loop_stops_them(rig: DaemonRig) -> None:
    rig.prepare()
    rig.start(
        {
            "WATCHDOG_USEC": "1000000",
            "CUMULUS_AGENT_DEBUG_HOOKS": "1",
            "CUMULUS_AGENT_DEBUG_BLOCK_S": "3",
        }
    )
    _, ready = rig.wait_for("READY=1")
    assert "STATUS=readers 0/0 online" in ready
    first, _ = rig.wait_for("WATCHDOG=1")
    second, _ = rig.wait_for("WATCHDOG=1")
    assert second > first
    assert rig.proc is not None
    os.kill(rig.proc.pid, signal.SIGUSR2)  # debug hook: the event loop sleeps for 3 s
    blocked_at = time.monotonic()
    after, _ = rig.wait_for("WATCHDOG=1")
    # pings come every 0.5 s while healthy; none can come while the loop is blocked
    assert after - blocked_at >= 2.5, "a watchdog ping was sent from a blocked loop"


async def _transaction(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with http.post(url + "/v1/card", json={"card": CARD}, headers=AUTH) as r:
        await r.read()
    async with http.post(url + "/v1/decision", json={"decision": "record"}, headers=AUTH) as r:
        await r.read()
    async with http.post(url + "/v1/basket", json=VALID_BASKET, headers=AUTH) as r:
        return dict(await r.json())


def test_sigterm_mid_burst_keeps_every_recorded_basket_and_exits_0_quickly(
    rig: DaemonRig,
) -> None:
    rig.prepare()
    rig.start()
    rig.wait_for("READY=1")
    assert rig.proc is not None
    recorded: list[int] = []

    async def burst() -> float:
        stop_sent_at = 0.0
        async with aiohttp.ClientSession() as http:
            for n in range(10_000):
                if n == 30:
                    rig.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                    stop_sent_at = time.monotonic()
                try:
                    answer = await _transaction(http, rig.url)
                except (aiohttp.ClientError, ValueError):
                    break
                if answer.get("recorded") is True:
                    recorded.append(int(answer["seq"]))  # type: ignore[call-overload]
        return stop_sent_at

    stop_sent_at = asyncio.run(burst())
    status = rig.proc.wait(timeout=10)
    elapsed = time.monotonic() - stop_sent_at
    assert status == 0, rig.log()
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert len(recorded) >= 30
    with Outbox(rig.tmp / "state" / "agent.db", None) as ob:
        stored = {e.seq for e in ob.all_envelopes()}
    assert set(recorded) <= stored


def test_vanished_reader_and_hq_down_leave_the_api_serving(rig: DaemonRig) -> None:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    rig.readers = f'\n[[readers]]\nkind = "serial"\nport = "{port}"\nname = "lane-scanner"\n'
    rig.prepare()
    rig.start()
    rig.wait_for("READY=1")
    os.close(master)  # the scanner vanishes
    os.close(slave)

    async def check() -> dict[str, object]:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(rig.url + "/v1/agent/state") as r:
                    state = await r.json()
                if state["readers"]["lane-scanner"]["state"] == "offline":
                    break
                await asyncio.sleep(0.1)
            answer = await _transaction(http, rig.url)
            assert answer["recorded"] is True
            async with http.get(rig.url + "/healthz") as r:
                assert r.status == 200
            return dict(state)

    state = asyncio.run(check())
    assert state["readers"]["lane-scanner"]["state"] == "offline"  # type: ignore[index]
    assert rig.proc is not None and rig.proc.poll() is None


def test_sighup_reloads_the_readers_and_a_bad_file_keeps_the_old_ones(rig: DaemonRig) -> None:
    rig.prepare()
    rig.start()
    rig.wait_for("READY=1")
    assert rig.proc is not None
    master, slave = os.openpty()
    try:
        text = rig.config.read_text()
        rig.config.write_text(
            text + f'\n[[readers]]\nkind = "serial"\n'
            f'port = "{os.ttyname(slave)}"\nname = "new-scanner"\n'
        )
        os.kill(rig.proc.pid, signal.SIGHUP)

        async def readers() -> dict[str, object]:
            async with aiohttp.ClientSession() as http:
                for _ in range(100):
                    async with http.get(rig.url + "/v1/agent/state") as r:
                        state = await r.json()
                    if state["readers"]:
                        return dict(state["readers"])
                    await asyncio.sleep(0.1)
            return {}

        assert list(asyncio.run(readers())) == ["new-scanner"]
        rig.config.write_text("this is not toml")
        os.kill(rig.proc.pid, signal.SIGHUP)
        for _ in range(200):  # wait for the reload attempt to be logged
            if "config refused" in rig.log():
                break
            time.sleep(0.05)
        assert list(asyncio.run(readers())) == ["new-scanner"]
        assert rig.proc.poll() is None
        assert "config refused, keeping the running readers" in rig.log()
    finally:
        os.close(master)
        os.close(slave)
