"""Sync end to end: the real client, a real HQ over real TLS (test CA), faults injected at HQ.

Every test ends with the same proof: HQ holds seqs 1..n exactly once, in order, and the
outbox is empty; the terminal lost nothing and HQ counted nothing twice.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.outbox import AsyncOutbox, SealingKeys
from agent.sync import SyncClient, SyncPolicy
from tests.factories import HqKeyPair, purchase, random_card, random_gtin
from tests.hq.support import RunningHq, running_hq

TERMINAL = "0042-07"


@dataclass
class Rig:
    hq: RunningHq
    outbox: AsyncOutbox
    keys: SealingKeys
    db: Path
    rng: random.Random

    def client(self, **kw: object) -> SyncClient:
        policy = SyncPolicy(
            clock=time.monotonic, rng=random.Random(1), base_delay=0.05, max_delay=0.5
        )
        return SyncClient(
            self.outbox, TERMINAL, self.hq.url, ca_file=self.hq.ca_file, policy=policy, **kw
        )  # type: ignore[arg-type]

    async def seal(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            p = purchase(random_card(self.rng), [random_gtin(self.rng)])
            out.append((await self.outbox.seal_purchase(p)).seq)
        return out

    def stored(self) -> list[int]:
        return self.hq.stored(TERMINAL, self.outbox.stream)


@pytest.fixture
async def rig(tmp_path: Path, sealing_keys: SealingKeys, hq_keys: HqKeyPair) -> AsyncIterator[Rig]:
    async with running_hq(tmp_path, hq_key=hq_keys) as hq:
        hq.enroll(TERMINAL, sealing_keys.signing_key.public_key().public_bytes_raw())
        db = tmp_path / "agent.db"
        rig = Rig(hq, await AsyncOutbox.open(db, sealing_keys), sealing_keys, db, random.Random(9))
        try:
            yield rig
        finally:
            await rig.outbox.close()


async def until(check: Callable[[], bool | Awaitable[bool]], limit_s: float = 30.0) -> None:
    """Wait for a condition; generous limit, never a timing assertion."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def empty(outbox: AsyncOutbox) -> bool:
    return (await outbox.status()).waiting == 0


async def test_hq_down_while_500_are_sealed_then_all_arrive_in_order_once(rig: Rig) -> None:
    await rig.hq.stop()
    async with rig.client() as client:
        task = asyncio.create_task(client.run())
        seqs = await rig.seal(500)
        for _ in range(3):
            client.notify()
        await until(lambda: client.state.consecutive_failures >= 2)
        assert client.state.hq_reachable is False
        assert rig.stored() == []
        await rig.hq.start()
        await until(lambda: empty(rig.outbox))
        task.cancel()
    assert rig.stored() == seqs == list(range(1, 501))
    assert rig.hq.acked_through(TERMINAL, rig.outbox.stream) == 500
    assert client.state.hq_reachable is True


async def test_a_new_envelope_is_sent_at_once_not_at_the_next_poll(rig: Rig) -> None:
    async with rig.client() as client:
        task = asyncio.create_task(client.run())
        await until(lambda: client.state.hq_reachable is True or client._resumed)
        await asyncio.sleep(0.2)  # the client is now idle, waiting up to 30 s for work
        await rig.seal(1)
        client.notify()
        await until(lambda: rig.stored() == [1], limit_s=5.0)  # far below the 30 s idle wait
        task.cancel()


async def test_lost_response_after_commit_is_retried_and_stored_once(rig: Rig) -> None:
    await rig.seal(10)
    rig.hq.faults.drop_response(1)
    async with rig.client() as client:
        first = await client.drain()
        assert first.last_error is not None  # the answer was lost
        assert rig.stored() == list(range(1, 11))  # ... after HQ had stored the batch
        await rig.seal(5)
        await client.drain()
    assert rig.stored() == list(range(1, 16))
    assert rig.hq.rejections(TERMINAL) == []  # the resent batch was a duplicate, not a fork
    assert await empty(rig.outbox)


async def test_500_then_429_then_a_hang_are_backed_off_and_nothing_is_lost(rig: Rig) -> None:
    await rig.seal(20)
    rig.hq.faults.fail(1, status=500)
    rig.hq.faults.throttle(1, status=429, retry_after=1)
    rig.hq.faults.hang(1, seconds=10)
    waits: list[tuple[float | None, float]] = []
    async with rig.client(total_timeout=1.0) as client:
        original = client.policy.on_failure

        def spy(retry_after: float | None = None) -> float:
            delay = original(retry_after)
            waits.append((retry_after, delay))
            return delay

        client.policy.on_failure = spy  # type: ignore[method-assign]
        task = asyncio.create_task(client.run())
        await until(lambda: empty(rig.outbox))
        task.cancel()
    kinds = [k for _, _, k in rig.hq.faults.injected]
    assert kinds == ["status", "status", "hang"]
    assert len(waits) == 3
    assert waits[1][0] == 1.0 and waits[1][1] >= 1.0  # Retry-After honoured
    assert all(d <= 0.5 for ra, d in waits if ra is None)  # jittered backoff within its cap
    assert "HQ unreachable" in (client.state.last_error or "") or client.state.last_error is None
    assert rig.stored() == list(range(1, 21))


async def _damage(rig: Rig, seq: int, offset: int) -> None:
    """Flip one bit of a stored envelope, as a failing disk would."""
    await rig.outbox.close()
    conn = sqlite3.connect(rig.db)
    body = bytearray(conn.execute("SELECT body FROM envelopes WHERE seq = ?", (seq,)).fetchone()[0])
    body[offset] ^= 0x01
    conn.execute("UPDATE envelopes SET body = ? WHERE seq = ?", (bytes(body), seq))
    conn.commit()
    conn.close()
    rig.outbox = await AsyncOutbox.open(rig.db, rig.keys)


async def test_a_tampered_envelope_is_dead_lettered_bridged_and_does_not_block(rig: Rig) -> None:
    await rig.seal(6)
    await _damage(rig, 3, 100)  # inside ct: only HQ can tell (the signature fails)
    async with rig.client() as client:
        for _ in range(5):
            await client.drain()
            if await empty(rig.outbox):
                break
    st = await rig.outbox.status()
    assert st.waiting == 0 and st.dead_letters == 1
    assert rig.stored() == [1, 2, 4, 5, 6, 7]  # 7: the purge envelope that explains seq 3
    assert rig.hq.acked_through(TERMINAL, rig.outbox.stream) == 7
    assert any("signature" in r for r in client.state.rejections)
    real = [r.seq for r in rig.hq.rejections(TERMINAL) if r.code != "gap"]
    assert real == [3]


async def test_an_envelope_damaged_in_its_header_is_quarantined_before_sending(
    rig: Rig,
) -> None:
    await rig.seal(6)
    await _damage(rig, 2, -70)  # inside `stream`: HQ would refuse the whole batch (400)
    async with rig.client() as client:
        await client.drain()
        await client.drain()
    st = await rig.outbox.status()
    assert st.waiting == 0 and st.dead_letters == 1
    assert rig.stored() == [1, 3, 4, 5, 6, 7]
    assert rig.hq.acked_through(TERMINAL, rig.outbox.stream) == 7


async def test_resume_asks_hq_and_deletes_what_it_already_holds(rig: Rig) -> None:
    await rig.seal(4)
    async with rig.client() as client:
        await client.drain()
    # a restored copy of the database still holds 1..4: at start, the client asks HQ
    assert rig.stored() == [1, 2, 3, 4]
    await rig.seal(2)
    async with rig.client() as again:
        await again.drain()
        assert again.state.acked_through == 6
    assert rig.stored() == list(range(1, 7))


async def test_clock_skew_against_hq_date_is_reported(rig: Rig) -> None:
    await rig.seal(1)
    async with rig.client(wall_clock=lambda: time.time() - 600) as client:
        await client.drain()
    assert client.state.clock_skew_s is not None and client.state.clock_skew_s > 500
    assert client.state.skew_warning


async def test_plain_http_to_a_non_loopback_host_is_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="plain http"):
        SyncClient(rig.outbox, TERMINAL, "http://hq.example.ch")
