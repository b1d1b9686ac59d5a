"""Hypothesis against a live HQ over TLS: whatever the body, never a 500, and HQ keeps serving.

Hypothesis drives synchronous examples, so HQ and its client run on an event loop in a
thread of their own for the whole module; each example is one request on that loop.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import hq_key_pair
from tests.fuzzing import scaled
from tests.hq.support import (
    CBOR,
    Reply,
    RunningHq,
    SealingTerminal,
    batch_body,
    post_raw,
    running_hq,
)

T = TypeVar("T")
ALLOWED = {200, 400, 403, 413, 415}


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    hq: RunningHq
    session: aiohttp.ClientSession
    valid: list[bytes]

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("fuzz")
    keys = hq_key_pair()
    t = SealingTerminal.create(tmp / "agent.db", keys)
    t.seal(4)
    valid = t.bodies()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    manager = running_hq(Path(tmp))

    async def enter() -> tuple[RunningHq, aiohttp.ClientSession]:
        hq = await manager.__aenter__()
        return hq, hq.session()

    hq, session = asyncio.run_coroutine_threadsafe(enter(), loop).result()
    hq.enroll(t.terminal, t.public_raw)
    live = Live(loop, hq, session, valid)
    try:
        yield live
    finally:
        live.call(session.close())
        live.call(manager.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        t.close()


cbor_values = st.recursive(
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mutated_batches(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """Valid envelopes, some with flipped, cut or inserted bytes, in a valid outer array."""
    chosen = draw(st.lists(st.sampled_from(valid), min_size=1, max_size=4))
    out = []
    for body in chosen:
        data = bytearray(body)
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if op == "flip" and data:
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del data[pos:]
            else:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        out.append(bytes(data))
    return batch_body(out)


@st.composite
def one_bit_flipped(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """A batch of valid envelopes with one bit flipped in one: mostly still decodable, so it
    reaches the signature and chain checks."""
    start = draw(st.integers(0, len(valid) - 1))
    batch = [bytearray(b) for b in valid[start:]]
    victim = draw(st.integers(0, len(batch) - 1))
    pos = draw(st.integers(0, len(batch[victim]) - 1))
    batch[victim][pos] ^= 1 << draw(st.integers(0, 7))
    return batch_body([bytes(b) for b in batch])


def bodies(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        cbor_values.map(lambda v: bytes(cbor2.dumps(v))),
        st.lists(cbor_values, max_size=4).map(lambda v: bytes(cbor2.dumps(v))),
        mutated_batches(valid),  # listed twice each: the deepest paths get most examples
        mutated_batches(valid),
        one_bit_flipped(valid),
        one_bit_flipped(valid),
    )


@settings(
    max_examples=scaled(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_body_ever_gets_a_500(live: Live, data: st.DataObject) -> None:
    body = data.draw(bodies(live.valid))
    coding = data.draw(st.sampled_from([None, None, None, None, "gzip", "gzip-broken"]))
    ctype = data.draw(st.sampled_from([CBOR] * 6 + ["application/json", None]))
    headers: dict[str, str] = {}
    if coding is not None:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body) if coding == "gzip" else body
    reply: Reply = live.call(
        post_raw(live.session, live.hq.url, body, content_type=ctype, headers=headers)
    )
    assert reply.status in ALLOWED, reply.body
    if reply.status != 200:
        assert isinstance(reply.body["error"], str) and ": " in reply.body["error"]


def test_hq_still_serves_after_the_fuzz(live: Live) -> None:
    reply = live.call(post_raw(live.session, live.hq.url, batch_body(live.valid)))
    assert reply.status == 200 and reply.acked_through == len(live.valid)
