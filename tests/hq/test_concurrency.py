"""Two HQ instances on one database, 20 terminals at once, with faults: exactly once.

Each emulated terminal seals real envelopes (a real outbox) and syncs them the way the
agent does: from `acked_through + 1`, resending whatever was not acknowledged. Each attempt
goes to either instance at random; a quarter of the attempts go to BOTH at the same time (a
race on one stream across two processes' connections). Both instances answer with faults:
responses lost after the batch was stored, 500s, and 503s with Retry-After. Nothing is
timed: the loops run until every terminal holds an acknowledgement for its last seq.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from agent.envelope import cbor
from hq.cli import main
from hq.server import HqServer
from hq.storage import open_storage
from tests.factories import HqKeyPair
from tests.hq.pgcluster import free_port
from tests.hq.support import FaultInjector, Reply, SealingTerminal, post_batch

TERMINALS = 20
ENVELOPES = 12


@dataclass
class Emulated:
    """One terminal's view: what it sealed, and every answer it got."""

    terminal: SealingTerminal
    bodies: list[bytes]
    acked: int = 0
    answers: list[tuple[int, int]] = field(default_factory=list)  # (last seq sent, acked)
    failures: int = 0


async def attempt(
    session: aiohttp.ClientSession, url: str, batch: list[bytes]
) -> Reply | BaseException:
    try:
        return await post_batch(session, url, batch)
    except aiohttp.ClientError as exc:  # a lost response: the connection closed unanswered
        return exc


async def resume(session: aiohttp.ClientSession, url: str, t: SealingTerminal) -> int | None:
    """GET /v1/streams/…: what a terminal does after it lost an answer."""
    try:
        async with session.get(f"{url}/v1/streams/{t.terminal}/{t.stream.hex()}") as resp:
            if resp.status != 200:
                return None
            return int(cbor.loads(await resp.read())["acked_through"])
    except aiohttp.ClientError:
        return None


async def sync(em: Emulated, urls: list[str], session: aiohttp.ClientSession, seed: int) -> None:
    rng = random.Random(seed)
    while em.acked < len(em.bodies):
        start = max(0, em.acked - rng.randint(0, 2))  # sometimes resend acknowledged ones too
        batch = em.bodies[start : start + rng.randint(1, 5)]
        last = start + len(batch)
        targets = urls if rng.random() < 0.25 else [rng.choice(urls)]
        replies = await asyncio.gather(*(attempt(session, u, batch) for u in targets))
        for reply in replies:
            if isinstance(reply, Reply) and reply.status == 200:
                assert reply.rejected == {}, reply.rejected
                em.answers.append((last, reply.acked_through))
                em.acked = max(em.acked, reply.acked_through)
            elif isinstance(reply, Reply):
                assert reply.status in (500, 503), reply
                em.failures += 1
                await asyncio.sleep(0.001 * int(reply.headers.get("Retry-After", "0")))
            else:
                em.failures += 1
                known = await resume(session, rng.choice(urls), em.terminal)
                if known is not None:
                    em.acked = max(em.acked, known)


def queue_faults(faults: FaultInjector, rounds: int) -> None:
    for _ in range(rounds):
        faults.drop_response(2)
        faults.fail(1, status=500)
        faults.throttle(1, status=503, retry_after=1)


async def test_two_instances_store_every_envelope_once_with_correct_acks(
    db_url: str, tmp_path: Path, hq_keys: HqKeyPair
) -> None:
    state = tmp_path / "hq-state"
    emulated = []
    with open_storage(db_url, state) as store:
        for n in range(TERMINALS):
            t = SealingTerminal.create(tmp_path / f"t{n}.db", hq_keys, terminal=f"{n:04d}-01")
            t.seal(ENVELOPES, seed=n)
            store.enroll(t.terminal, t.public_raw)
            emulated.append(Emulated(t, t.bodies()))
    faults = [FaultInjector(), FaultInjector()]
    for f in faults:
        queue_faults(f, rounds=6)
    servers = [
        HqServer.for_db(db_url, state, middlewares=[f.middleware], shutdown_timeout=0.5)
        for f in faults
    ]
    for server in servers:
        await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            urls = [s.url for s in servers]
            await asyncio.gather(
                *(sync(em, urls, session, seed=n) for n, em in enumerate(emulated))
            )
            for em in emulated:  # both instances agree on every stream
                for url in urls:
                    assert await resume(session, url, em.terminal) == ENVELOPES
    finally:
        for server in servers:
            await server.stop()

    assert all(f.pending == 0 for f in faults)  # every fault was injected …
    assert all(any(kind == "drop" for *_, kind in f.injected) for f in faults)
    # … and every failure a terminal saw was an injected one: no 503 from a storage race
    assert sum(em.failures for em in emulated) == sum(len(f.injected) for f in faults)
    with open_storage(db_url, state) as store:
        assert store.rejections() == []
        stored = list(store.envelopes())
        assert len(stored) == TERMINALS * ENVELOPES  # … and every envelope is stored once
        for em in emulated:
            t = em.terminal
            assert store.stored_seqs(t.terminal, t.stream) == list(range(1, ENVELOPES + 1))
            assert store.acked_through(t.terminal, t.stream) == ENVELOPES
            mine = [s.body for s in stored if s.terminal == t.terminal]
            assert mine == em.bodies  # the exact bytes as sealed
            # every answer acknowledged at least the batch it answered, never beyond
            assert all(last <= acked <= ENVELOPES for last, acked in em.answers)
    for em in emulated:
        em.terminal.close()


@pytest.mark.parametrize("rounds", [3])
async def test_a_stream_raced_by_both_instances_never_forks_or_gaps(
    db_url: str, tmp_path: Path, hq_keys: HqKeyPair, rounds: int
) -> None:
    """The same growing stream posted to both instances at once, again and again."""
    state = tmp_path / "hq-state"
    t = SealingTerminal.create(tmp_path / "t.db", hq_keys)
    with open_storage(db_url, state) as store:
        store.enroll(t.terminal, t.public_raw)
    servers = [HqServer.for_db(db_url, state, shutdown_timeout=0.5) for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                t.seal(5)
                bodies = t.bodies()
                replies = await asyncio.gather(
                    *(post_batch(session, s.url, bodies) for s in servers for _ in range(3))
                )
                assert {(r.status, r.acked_through) for r in replies} == {(200, len(bodies))}
                assert all(r.rejected == {} for r in replies)
    finally:
        for server in servers:
            await server.stop()
        t.close()
    with open_storage(db_url, state) as store:
        assert store.stored_seqs(t.terminal, t.stream) == list(range(1, 5 * rounds + 1))
        assert store.rejections() == []


async def test_two_serve_commands_share_one_address_with_reuse_port(
    pg_url: str, tmp_path: Path, hq_keys: HqKeyPair
) -> None:
    """`cumulus-hq serve --reuse-port` twice on one port and one PostgreSQL database: both
    bind (without the flag the second exits 69), and what they take in is stored once."""
    state = tmp_path / "hq-state"
    port = free_port()
    argv = ["serve", "--state-dir", str(state), "--db", pg_url, "--listen", f"127.0.0.1:{port}"]
    stop = threading.Event()
    statuses: list[int] = []

    async def trigger() -> None:
        await asyncio.to_thread(stop.wait)

    def serve() -> None:
        statuses.append(main([*argv, "--reuse-port"], shutdown_trigger=trigger))

    threads = [threading.Thread(target=serve) for _ in range(2)]
    terminals = [
        SealingTerminal.create(tmp_path / f"r{n}.db", hq_keys, terminal=f"r-{n}") for n in range(4)
    ]
    with open_storage(pg_url, state) as store:
        for t in terminals:
            t.seal(3)
            store.enroll(t.terminal, t.public_raw)
    for thread in threads:
        thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(500):  # until it listens; not a timing assertion
                try:
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.01)
            replies = await asyncio.gather(
                *(post_batch(session, url, t.bodies()) for t in terminals)
            )
        assert {(r.status, r.acked_through) for r in replies} == {(200, 3)}
        alone = await asyncio.to_thread(main, argv, shutdown_trigger=lambda: asyncio.sleep(0))
        assert alone == 69  # without --reuse-port the address is taken
    finally:
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        for t in terminals:
            t.close()
    assert statuses == [0, 0]
    with open_storage(pg_url, state) as store:
        assert sum(s.stored for s in store.streams()) == 12
