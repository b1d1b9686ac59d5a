"""AsyncOutbox: the same guarantees, with every SQLite call off the event loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import date
from pathlib import Path

from agent.outbox import AsyncOutbox, SealingKeys
from tests.factories import purchase


async def test_async_outbox_seals_acks_and_never_blocks_the_loop(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    ob = await AsyncOutbox.open(tmp_path / "agent.db", sealing_keys)
    loop_thread = threading.get_ident()
    seen_threads: set[int] = set()
    original = ob._outbox.seal_purchase

    def spy(payload):  # type: ignore[no-untyped-def]
        seen_threads.add(threading.get_ident())
        return original(payload)

    ob._outbox.seal_purchase = spy  # type: ignore[method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    sealed = [await ob.seal_purchase(purchase("2099123456786", [])) for _ in range(20)]
    t.cancel()
    assert [s.seq for s in sealed] == list(range(1, 21))
    assert loop_thread not in seen_threads and len(seen_threads) == 1
    assert ticks > 20  # the loop kept running while commits were in flight
    await ob.count_decision("skip", date(2026, 11, 27))
    assert len(await ob.seal_consent_stats(date(2026, 11, 28))) == 1
    assert [e.seq for e in await ob.pending(after=19)] == [20, 21]
    assert await ob.ack(10) == 10
    st = await ob.status()
    assert (st.acked_through, st.waiting) == (10, 11)
    await ob.close()
