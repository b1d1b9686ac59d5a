"""HQ rotates its HPKE key: terminals learn the current key from a keyset signed by the HQ
key pinned in their config, and refuse any keyset that key did not sign."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from agent import keys
from agent.envelope import decode
from agent.outbox import Outbox
from hq import keys as hqk
from tests.agent.api_rig import POS_TOKEN, VALID_BASKET
from tests.agent.daemon_rig import DaemonRig
from tests.factories import HqKeyPair
from tests.hq.support import RunningHq, running_hq

AUTH = {"Authorization": f"Bearer {POS_TOKEN}"}
NEW_KID = "hq-2027a"


async def record(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        for path, body in (
            ("/v1/card", {"card": "2099123456786"}),
            ("/v1/decision", {"decision": "record"}),
        ):
            async with http.post(url + path, json=body, headers=AUTH) as r:
                await r.read()
        async with http.post(url + "/v1/basket", json=VALID_BASKET, headers=AUTH) as r:
            return dict(await r.json())


def audit_actions(state: Path) -> list[str]:
    with Outbox(state / "agent.db", None) as ob:
        return [r[0] for r in ob.conn.execute("SELECT action FROM audit")]


@pytest.fixture
async def hq(tmp_path: Path, hq_keys: HqKeyPair) -> AsyncIterator[RunningHq]:
    async with running_hq(tmp_path / "hq", hq_key=hq_keys) as running:
        hqk.init(running.state_dir, NEW_KID, hq_keys.suite)
        yield running


async def run_agent(
    tmp_path: Path, hq_keys: HqKeyPair, hq: RunningHq, pin_b64: str, until: str
) -> None:
    rig = DaemonRig(tmp_path, hq_keys)
    rig.hq_url = hq.url
    rig.prepare()
    rig.config.write_text(
        rig.config.read_text().replace(
            "[hq]\n", f'[hq]\nca_file = "{hq.ca_file}"\nkeyset_public_key = "{pin_b64}"\n'
        )
    )
    hq.enroll("0042-07", keys.load(tmp_path / "state").public_raw)
    rig.start()
    try:
        await asyncio.to_thread(rig.wait_for, "READY=1")
        for _ in range(300):  # the sync loop fetches the keyset right after it resumes
            if until in audit_actions(tmp_path / "state"):
                break
            await asyncio.sleep(0.05)
        assert (await record(rig.url))["recorded"] is True
    finally:
        rig.stop()


async def test_the_agent_seals_to_the_current_key_of_the_pinned_keyset(
    tmp_path: Path, hq_keys: HqKeyPair, hq: RunningHq
) -> None:
    signer = hqk.init_signing_key(hq.state_dir)
    hqk.publish_keyset(hq.state_dir, NEW_KID, [hq_keys.kid], timedelta(days=30))
    await run_agent(tmp_path, hq_keys, hq, signer.public_b64, "hq-key-changed")
    with Outbox(tmp_path / "state" / "agent.db", None) as ob:
        kids = [decode(e.body).header.enc_kid for e in ob.all_envelopes()]
    assert kids == [NEW_KID]  # not the configured hq-2026a
    assert (tmp_path / "state" / "hq-keyset.cbor").exists()


async def test_a_keyset_signed_by_another_key_is_refused(
    tmp_path: Path, hq_keys: HqKeyPair, hq: RunningHq
) -> None:
    hqk.init_signing_key(hq.state_dir)  # HQ signs with its key ...
    hqk.publish_keyset(hq.state_dir, NEW_KID, [hq_keys.kid], timedelta(days=30))
    other = hqk.init_signing_key(tmp_path / "elsewhere")  # ... the terminal pins another
    await run_agent(tmp_path, hq_keys, hq, other.public_b64, "hq-keyset-refused")
    with Outbox(tmp_path / "state" / "agent.db", None) as ob:
        kids = [decode(e.body).header.enc_kid for e in ob.all_envelopes()]
    assert kids == [hq_keys.kid]  # still the configured key
    assert "hq-keyset-refused" in audit_actions(tmp_path / "state")
    assert not (tmp_path / "state" / "hq-keyset.cbor").exists()
