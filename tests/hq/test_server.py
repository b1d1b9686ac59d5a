"""The ingest API over real TLS on loopback: answers, status codes, faults, restarts."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import cbor
from hq.server import HqServer, check_listen, parse_listen
from hq.storage import SqliteStorage
from hq.transport import MAX_BODY
from tests.factories import HqKeyPair
from tests.hq.support import (
    CBOR,
    RunningHq,
    SealingTerminal,
    batch_body,
    post_batch,
    post_raw,
)


@pytest.fixture
def enrolled(hq: RunningHq, terminal: SealingTerminal) -> SealingTerminal:
    hq.enroll(terminal.terminal, terminal.public_raw)
    return terminal


async def healthy(session: aiohttp.ClientSession, hq: RunningHq) -> bool:
    async with session.get(f"{hq.url}/healthz") as resp:
        return resp.status == 200 and cbor.loads(await resp.read()) == {"status": "ok"}


async def test_a_batch_over_tls_is_stored_and_acknowledged(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    assert hq.url.startswith("https://127.0.0.1:")
    enrolled.seal(3)
    reply = await post_batch(session, hq.url, enrolled.bodies())
    assert reply.status == 200
    assert reply.body == {"stream": enrolled.stream, "acked_through": 3, "rejected": []}
    assert hq.stored(enrolled.terminal, enrolled.stream) == [1, 2, 3]


async def test_gzip_bodies_are_accepted(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    reply = await post_batch(session, hq.url, enrolled.bodies(), gzip=True)
    assert (reply.status, reply.acked_through) == (200, 2)


async def test_replayed_batch_is_acknowledged_and_stored_once(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    await post_batch(session, hq.url, enrolled.bodies())
    again = await post_batch(session, hq.url, enrolled.bodies())
    assert (again.status, again.acked_through, again.rejected) == (200, 2, {})
    with hq.storage() as s:
        assert len(list(s.envelopes())) == 2


async def test_rejections_come_back_by_seq_with_a_reason(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(4)
    b = enrolled.bodies()
    reply = await post_batch(session, hq.url, [b[0], b[2], b[3]])
    assert reply.status == 200 and reply.acked_through == 1
    assert set(reply.rejected) == {3, 4}
    assert reply.rejected[3].startswith("gap: expected seq 2")


async def test_stream_state_lets_a_terminal_resume(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    await post_batch(session, hq.url, enrolled.bodies())
    base = f"{hq.url}/v1/streams/{enrolled.terminal}"
    async with session.get(f"{base}/{enrolled.stream.hex()}") as resp:
        assert resp.status == 200 and resp.content_type == CBOR
        assert cbor.loads(await resp.read()) == {"acked_through": 2}
    async with session.get(f"{base}/{'00' * 16}") as resp:
        assert cbor.loads(await resp.read()) == {"acked_through": 0}  # a stream never seen
    async with session.get(f"{base}/xyz") as resp:
        assert resp.status == 400
        assert cbor.loads(await resp.read())["error"].startswith("malformed: stream")
    async with session.get(f"{hq.url}/v1/streams/9999-99/{'00' * 16}") as resp:
        assert resp.status == 403
        assert cbor.loads(await resp.read())["error"].startswith("unknown-terminal:")


@pytest.mark.parametrize(
    "path",
    [f"/v1/streams/{'x' * 65}/{'00' * 16}", "/v1/streams/a%20b/" + "00" * 16, "/v1/streams/a/"],
)
async def test_bad_stream_paths_are_4xx(
    hq: RunningHq, session: aiohttp.ClientSession, path: str
) -> None:
    async with session.get(f"{hq.url}{path}") as resp:
        assert resp.status in (400, 404) and resp.content_type == CBOR


async def test_unknown_terminal_is_403(
    hq: RunningHq, session: aiohttp.ClientSession, terminal: SealingTerminal
) -> None:
    terminal.seal(1)
    reply = await post_batch(session, hq.url, terminal.bodies())
    assert reply.status == 403
    assert reply.body["error"].startswith("unknown-terminal: terminal 0042-07 is not enrolled")
    assert hq.stored(terminal.terminal, terminal.stream) == []


async def test_unregistered_key_is_403_and_nothing_is_stored(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    other = Ed25519PrivateKey.generate()
    reply = await post_batch(session, hq.url, [enrolled.forge(1, bytes(32), signing_key=other)])
    assert reply.status == 403 and reply.body["error"].startswith("unknown-key:")


async def test_a_client_not_trusting_the_ca_cannot_talk_to_hq(hq: RunningHq) -> None:
    async with aiohttp.ClientSession() as plain:  # system trust store only
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await plain.get(f"{hq.url}/healthz")


# --- bad input: the right 4xx, never a 500, and HQ keeps serving -------------------------------


def _bad_bodies(t: SealingTerminal, other: SealingTerminal) -> list[tuple[str, bytes, int, str]]:
    t.seal(2)
    other.seal(1)
    b = t.bodies()
    return [
        ("not CBOR", b"\xff\xfe garbage", 400, "malformed: expected a CBOR array"),
        ("not an array", cbor.dumps({"a": 1}), 400, "malformed: expected a CBOR array"),
        ("element not bstr", cbor2.dumps([b[0], "text"]), 400, "malformed: element 1 is a text"),
        ("element not envelope", cbor.dumps([b"\x00"]), 400, "malformed: element 0 is not an"),
        ("mixed terminals", batch_body([b[0], other.bodies()[0]]), 400, "malformed: mixed term"),
        ("reordered", batch_body([b[1], b[0]]), 400, "malformed: seqs not ascending"),
        ("empty", batch_body([]), 400, "malformed: empty batch"),
        ("too many", cbor.dumps([b[0]] * 1001), 413, "too-large: 1001 envelopes"),
        ("too large", bytes(MAX_BODY + 1), 413, "too-large: body of"),
    ]


async def test_malformed_bodies_get_the_right_4xx_and_hq_keeps_serving(
    hq: RunningHq,
    session: aiohttp.ClientSession,
    enrolled: SealingTerminal,
    tmp_path: Path,
    hq_keys: HqKeyPair,
) -> None:
    other = SealingTerminal.create(tmp_path / "o.db", hq_keys, terminal="0042-08")
    hq.enroll(other.terminal, other.public_raw)
    try:
        for name, body, status, error in _bad_bodies(enrolled, other):
            reply = await post_raw(session, hq.url, body)
            assert (name, reply.status) == (name, status)
            assert reply.body["error"].startswith(error), (name, reply.body)
            assert await healthy(session, hq)
    finally:
        other.close()
    good = await post_batch(session, hq.url, enrolled.bodies())
    assert (good.status, good.acked_through) == (200, 2)


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"Content-Type": "application/json"}, 415, "unsupported-media-type: Content-Type"),
        ({"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
        ({}, 415, "unsupported-media-type: Content-Type must be application/cbor, got"),
        (
            {"Content-Type": CBOR, "Content-Encoding": "br"},
            415,
            "unsupported-media-type: Content-Encoding 'br'",
        ),
        ({"Content-Type": CBOR, "Content-Encoding": "gzip"}, 400, "malformed: body is not valid"),
    ],
)
async def test_wrong_media_type_or_coding(
    hq: RunningHq,
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    reply = await post_raw(session, hq.url, cbor.dumps([b"x"]), content_type=None, headers=headers)
    assert reply.status == status and reply.body["error"].startswith(error)


async def test_gzip_bomb_is_413(hq: RunningHq, session: aiohttp.ClientSession) -> None:
    inner = b"\x9a\x00\x00\x00\x01" + bytes(MAX_BODY * 2)  # an "array" inflating to 8 MiB
    bomb = gzip.compress(inner, compresslevel=9)
    reply = await post_raw(session, hq.url, bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413 and reply.body["error"].startswith("too-large: body inflates")
    assert await healthy(session, hq)


async def test_a_large_chunked_body_is_413(hq: RunningHq, session: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield bytes(1024 * 1024)

    async with session.post(
        f"{hq.url}/v1/envelopes", data=chunks(), headers={"Content-Type": CBOR}
    ) as resp:
        assert resp.status == 413
        assert cbor.loads(await resp.read())["error"].startswith("too-large")
    assert await healthy(session, hq)


async def test_unknown_paths_and_methods_answer_cbor(
    hq: RunningHq, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{hq.url}/nope") as resp:
        assert resp.status == 404 and resp.content_type == CBOR
        assert cbor.loads(await resp.read()) == {"error": "not-found: GET /nope"}
    async with session.get(f"{hq.url}/v1/envelopes") as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
        assert cbor.loads(await resp.read())["error"].startswith("method-not-allowed")


# --- faults and restarts (the test-only injector) -----------------------------------------------


async def test_injected_500_then_the_retry_is_stored(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(1)
    hq.faults.fail(1)
    first = await post_batch(session, hq.url, enrolled.bodies())
    assert first.status == 500 and hq.stored(enrolled.terminal, enrolled.stream) == []
    second = await post_batch(session, hq.url, enrolled.bodies())
    assert (second.status, second.acked_through) == (200, 1)
    assert hq.faults.injected == [("POST", "/v1/envelopes", "status")]


@pytest.mark.parametrize("status", [429, 503])
async def test_injected_throttle_says_when_to_retry(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal, status: int
) -> None:
    enrolled.seal(1)
    hq.faults.throttle(2, status=status, retry_after=7)
    for _ in range(2):
        reply = await post_batch(session, hq.url, enrolled.bodies())
        assert (reply.status, reply.headers["Retry-After"]) == (status, "7")
    assert (await post_batch(session, hq.url, enrolled.bodies())).status == 200


async def test_injected_lost_response_after_commit_then_resend_is_a_duplicate(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    hq.faults.drop_response(1)
    with pytest.raises(aiohttp.ClientError):
        await post_batch(session, hq.url, enrolled.bodies())
    assert hq.stored(enrolled.terminal, enrolled.stream) == [1, 2]  # stored, answer lost
    again = await post_batch(session, hq.url, enrolled.bodies())
    assert (again.status, again.acked_through, again.rejected) == (200, 2, {})
    assert hq.stored(enrolled.terminal, enrolled.stream) == [1, 2]


async def test_injected_hang_holds_the_request_until_released(
    hq: RunningHq, session: aiohttp.ClientSession, enrolled: SealingTerminal
) -> None:
    enrolled.seal(1)
    hq.faults.hang(1, seconds=600)
    task = asyncio.create_task(post_batch(session, hq.url, enrolled.bodies()))
    await hq.faults.wait_injected(1)
    assert not task.done() and hq.stored(enrolled.terminal, enrolled.stream) == []
    hq.faults.release()
    reply = await task
    assert (reply.status, reply.acked_through) == (200, 1)


async def test_hq_down_then_up_on_the_same_port_keeps_its_data(
    hq: RunningHq, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    url = hq.url
    async with hq.session() as s:
        await post_batch(s, url, enrolled.bodies()[:1])
    await hq.stop()
    async with hq.session() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await post_batch(s, url, enrolled.bodies())
    assert hq.stored(enrolled.terminal, enrolled.stream) == [1]  # readable while down
    await hq.start()
    assert hq.url == url
    async with hq.session() as s:
        reply = await post_batch(s, url, enrolled.bodies())
    assert (reply.status, reply.acked_through) == (200, 2)


async def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    server = HqServer(lambda: SqliteStorage(tmp_path / "hq.db"), max_pending=0)
    async with server, aiohttp.ClientSession() as s:
        reply = await post_raw(s, server.url, cbor.dumps([b"x"]))
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    assert reply.body["error"].startswith("unavailable:")


def test_plain_http_only_on_loopback() -> None:
    check_listen("127.0.0.1", tls=False)
    check_listen("::1", tls=False)
    check_listen("localhost", tls=False)
    check_listen("0.0.0.0", tls=True)
    with pytest.raises(ValueError, match="refusing plain HTTP on 0.0.0.0"):
        check_listen("0.0.0.0", tls=False)
    with pytest.raises(ValueError, match="refusing plain HTTP"):
        HqServer(lambda: SqliteStorage(Path("unused.db")), host="192.0.2.1")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:9", ("::1", 9)),
        ("hq.local:1", ("hq.local", 1)),
    ],
)
def test_listen_addresses(value: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(value) == parsed


@pytest.mark.parametrize("value", ["8443", "127.0.0.1", "::1:80", "host:99999", "host:x"])
def test_bad_listen_addresses(value: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(value)
