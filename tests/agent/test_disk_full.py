"""Disk full: the state directory on a small tmpfs that the test fills up.

The POS gets a fast `503 recording unavailable`, the agent keeps serving and syncing, the
database stays intact (PRAGMA integrity_check) and recording resumes once space is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from agent import keys
from tests.agent.api_rig import POS_TOKEN, VALID_BASKET
from tests.agent.daemon_rig import DaemonRig
from tests.factories import HqKeyPair
from tests.hq.support import running_hq

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is)")

AUTH = {"Authorization": f"Bearer {POS_TOKEN}"}
CARD = "2099123456786"


async def transaction(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    for path, body in (("/v1/card", {"card": CARD}), ("/v1/decision", {"decision": "record"})):
        async with http.post(url + path, json=body, headers=AUTH) as r:
            await r.read()
    async with http.post(url + "/v1/basket", json=VALID_BASKET, headers=AUTH) as r:
        return r.status, dict(await r.json())


def fill(directory: Path) -> Path:
    """Write until the filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_disk_full_gives_fast_503_keeps_serving_and_recovers(
    tmp_path: Path, hq_keys: HqKeyPair
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(state)]
    subprocess.run(mount, check=True)  # noqa: ASYNC221 - before anything runs
    rig = DaemonRig(tmp_path, hq_keys)
    try:
        async with running_hq(tmp_path / "hq", hq_key=hq_keys) as hq:
            rig.hq_url = hq.url
            rig.prepare()
            rig.config.write_text(
                rig.config.read_text().replace("[hq]\n", f'[hq]\nca_file = "{hq.ca_file}"\n')
            )
            hq.enroll("0042-07", keys.load(state).public_raw)
            rig.start()
            await asyncio.to_thread(rig.wait_for, "READY=1")
            db = state / "agent.db"
            async with aiohttp.ClientSession() as http:
                before = [await transaction(http, rig.url) for _ in range(5)]
                assert all(s == 200 and a["recorded"] for s, a in before)
                filler = fill(state)
                answers = []
                for _ in range(300):
                    t0 = time.monotonic()
                    status, answer = await transaction(http, rig.url)
                    answers.append((status, answer, time.monotonic() - t0))
                    if status == 503:
                        break
                status, answer, _took = answers[-1]
                assert (status, answer) == (
                    503,
                    {"recorded": False, "reason": "recording unavailable"},
                )
                assert integrity(db) == "ok"
                async with http.get(rig.url + "/healthz") as r:
                    assert r.status == 200  # still serving
                filler.unlink()
                for _ in range(50):  # space is back: recording resumes
                    status, answer = await transaction(http, rig.url)
                    if answer.get("recorded"):
                        break
                assert answer["recorded"] is True
                assert integrity(db) == "ok"
                recorded = {
                    int(a["seq"])
                    for s, a, *_ in [*before, *answers]  # type: ignore[call-overload]
                    if s == 200 and a.get("recorded")
                } | {int(answer["seq"])}  # type: ignore[call-overload]
                stream = bytes.fromhex(
                    sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                    .execute("SELECT hex(value) FROM meta WHERE key = 'stream'")
                    .fetchone()[0]
                )
                for _ in range(200):  # and sync delivered them all
                    if recorded <= set(hq.stored("0042-07", stream)):
                        break
                    await asyncio.sleep(0.1)
                assert recorded <= set(hq.stored("0042-07", stream))
            assert rig.proc is not None and rig.proc.poll() is None
    finally:
        rig.stop()
        subprocess.run(["umount", "-l", str(state)], check=False)  # noqa: ASYNC221
