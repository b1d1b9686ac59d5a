"""The local API over real loopback sockets: the flow, the guards, and hostile input."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.outbox import SealingKeys
from tests.agent.api_rig import VALID_BASKET, Agent, running_agent
from tests.fuzzing import scaled

CARD = "2099123456786"


@pytest.fixture
async def agent(tmp_path: Path, sealing_keys: SealingKeys) -> Agent:
    async with running_agent(tmp_path, sealing_keys) as a:
        yield a  # type: ignore[misc]


async def page_token(agent: Agent) -> str:
    async with agent.http.get(agent.url + "/") as r:
        text = await r.text()
    m = re.search(r'const TOKEN = "([^"]+)"', text)
    assert m
    return m.group(1)


async def test_card_record_basket_answers_recorded_with_seq(agent: Agent) -> None:
    status, view = await agent.post("/v1/card", {"card": CARD})
    assert status == 200 and view["state"] == "prompt" and view["card"] == "2099*******86"
    status, _ = await agent.post("/v1/decision", {"decision": "record"})
    assert status == 200
    status, body = await agent.post("/v1/basket", VALID_BASKET)
    assert (status, body) == (200, {"recorded": True, "seq": 1})
    assert (await agent.outbox.status()).waiting == 1


async def test_skip_records_nothing(agent: Agent) -> None:
    await agent.post("/v1/card", {"card": CARD})
    await agent.post("/v1/decision", {"decision": "skip"})
    status, body = await agent.post("/v1/basket", VALID_BASKET)
    assert (status, body) == (200, {"recorded": False, "reason": "customer declined"})
    assert (await agent.outbox.status()).waiting == 0


async def test_basket_waits_for_the_page_decision(agent: Agent) -> None:
    await agent.post("/v1/card", {"card": CARD})
    pending = asyncio.create_task(agent.post("/v1/basket", VALID_BASKET))
    await asyncio.sleep(0.1)
    assert not pending.done()
    token = await page_token(agent)
    async with agent.http.post(
        agent.url + "/v1/decision",
        json={"decision": "record"},
        headers={"X-Page-Token": token, "Origin": agent.url},
    ) as r:
        assert r.status == 200
    assert await asyncio.wait_for(pending, 5) == (200, {"recorded": True, "seq": 1})


async def test_timeout_means_skip_over_http(tmp_path: Path, sealing_keys: SealingKeys) -> None:
    async with running_agent(tmp_path, sealing_keys, timeout_s=1.0) as a:
        await a.post("/v1/card", {"card": CARD})
        _status, body = await asyncio.wait_for(a.post("/v1/basket", VALID_BASKET), 10)
        assert body == {"recorded": False, "reason": "no answer (timeout means skip)"}


async def test_void_answers_a_waiting_basket(agent: Agent) -> None:
    await agent.post("/v1/card", {"card": CARD})
    pending = asyncio.create_task(agent.post("/v1/basket", VALID_BASKET))
    await asyncio.sleep(0.05)
    assert (await agent.post("/v1/void", {}))[0] == 200
    assert (await pending)[1] == {"recorded": False, "reason": "transaction voided"}


async def test_unix_socket_serves_the_same_api(agent: Agent) -> None:
    conn = aiohttp.UnixConnector(path=str(agent.socket_path))
    async with aiohttp.ClientSession(connector=conn) as s, s.get("http://localhost/healthz") as r:
        assert r.status == 200 and (await r.json())["ok"] is True


async def test_sse_pushes_the_session_on_change(agent: Agent) -> None:
    token = await page_token(agent)
    async with agent.http.get(agent.url + f"/v1/events?token={token}") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        seen: list[dict[str, object]] = []

        async def read() -> None:
            async for line in r.content:
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] == "prompt":
                        return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        await agent.post("/v1/card", {"card": CARD})
        await asyncio.wait_for(reader, 5)
    assert seen[0]["state"] == "idle" and seen[-1]["card"] == "2099*******86"


async def test_metrics_and_healthz(agent: Agent) -> None:
    await agent.post("/v1/card", {"card": CARD})
    await agent.post("/v1/decision", {"decision": "skip"})
    async with agent.http.get(agent.url + "/metrics") as r:
        text = await r.text()
    assert 'cumulus_decisions_total{outcome="skip"} 1.0' in text
    assert "cumulus_outbox_depth 0.0" in text
    assert "cumulus_prompt_latency_seconds_count 1.0" in text
    assert CARD not in text


# --- guards -----------------------------------------------------------------------------------


async def test_wrong_host_gets_421(agent: Agent) -> None:
    async with agent.http.get(
        agent.url + "/v1/session", headers={"Host": "evil.example", **agent.pos_headers()}
    ) as r:
        assert r.status == 421
        assert "not this agent" in (await r.json())["error"]


async def test_missing_or_wrong_token_gets_401(agent: Agent) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        async with agent.http.post(
            agent.url + "/v1/basket", json=VALID_BASKET, headers=headers
        ) as r:
            assert r.status == 401, headers
            assert "token" in (await r.json())["error"]


async def test_cross_origin_decision_gets_403(agent: Agent) -> None:
    await agent.post("/v1/card", {"card": CARD})
    token = await page_token(agent)
    for headers in (
        {"X-Page-Token": token, "Origin": "http://evil.example"},
        {"X-Page-Token": token, "Sec-Fetch-Site": "cross-site"},
        {"X-Page-Token": "forged"},
        {},
    ):
        async with agent.http.post(
            agent.url + "/v1/decision", json={"decision": "record"}, headers=headers
        ) as r:
            assert r.status == 403, headers
    assert agent.checkout.session.state.value == "prompt"  # nothing was decided


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {**VALID_BASKET, "items": [{"gtin": "7612345678901", "qty": 1000, "amount": 1290}]},
            "wrong check digit",
        ),
        (
            {**VALID_BASKET, "items": [{"gtin": "76123x5678900", "qty": 1000, "amount": 1290}]},
            "8, 12, 13 or 14 digits",
        ),
        ({**VALID_BASKET, "total": 1}, "not the sum"),
        ({**VALID_BASKET, "total": 12.9}, "must be an integer"),
        ({**VALID_BASKET, "currency": "USD"}, "currency"),
        (
            {**VALID_BASKET, "items": [{"gtin": "7612345678900", "qty": 1.5, "amount": 1290}]},
            "qty: must be an integer",
        ),
        ({**VALID_BASKET, "items": []}, "at least one item"),
        ({**VALID_BASKET, "items": [VALID_BASKET["items"][0]] * 501}, "at most 500"),  # type: ignore[index]
        ({**VALID_BASKET, "extra": 1}, "unknown field"),
        ([], "JSON object"),
    ],
)
async def test_bad_baskets_get_400_with_a_clear_message(
    agent: Agent, body: object, fragment: str
) -> None:
    status, answer = await agent.post("/v1/basket", body)
    assert status == 400
    assert fragment in str(answer["error"])


async def test_malformed_json_oversized_body_and_bad_card(agent: Agent) -> None:
    async with agent.http.post(
        agent.url + "/v1/basket",
        data=b"{not json",
        headers={**agent.pos_headers(), "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400 and "not valid JSON" in (await r.json())["error"]
    big = b'{"receipt": "' + b"x" * (300 * 1024) + b'"}'
    async with agent.http.post(
        agent.url + "/v1/basket",
        data=big,
        headers={**agent.pos_headers(), "Content-Type": "application/json"},
    ) as r:
        assert r.status in (400, 413)
    status, answer = await agent.post("/v1/card", {"card": "2099123456787"})
    assert status == 422 and "not a Cumulus card" in str(answer["error"])
    status, _ = await agent.post("/v1/card", {"card": CARD})
    assert status == 200  # still serving


async def test_outbox_full_gives_a_fast_503_and_the_agent_keeps_serving(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    async with running_agent(tmp_path, sealing_keys, max_bytes=100) as a:
        await a.post("/v1/card", {"card": CARD})
        await a.post("/v1/decision", {"decision": "record"})
        status, body = await a.post("/v1/basket", VALID_BASKET)
        assert (status, body) == (503, {"recorded": False, "reason": "recording unavailable"})
        assert a.checkout.view()["recording_failures"] == 1  # the page flashes it too
        async with a.http.get(a.url + "/healthz") as r:
            assert r.status == 200


@settings(
    max_examples=scaled(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
async def test_arbitrary_json_bodies_never_cause_a_500(agent: Agent, body: object) -> None:
    for path in ("/v1/basket", "/v1/card", "/v1/decision"):
        status, _ = await agent.post(path, body)
        assert status < 500 or status == 503


async def test_an_answered_decision_is_already_counted_on_disk(agent: Agent) -> None:
    """The counter commits before the decision is answered, so a crash right after the
    answer cannot lose it (consent-stats stay exact)."""
    import sqlite3

    await agent.post("/v1/card", {"card": CARD})
    status, _ = await agent.post("/v1/decision", {"decision": "skip"})
    assert status == 200
    db = agent.outbox._outbox.path
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT SUM(skip) FROM consent_counters").fetchone()[0] == 1
    finally:
        conn.close()
