"""Fixtures for HQ tests: a sealing terminal, a storage, a running HQ over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from hq.storage import SqliteStorage
from tests.factories import HqKeyPair
from tests.hq.support import RunningHq, SealingTerminal, running_hq


@pytest.fixture
def terminal(tmp_path: Path, hq_keys: HqKeyPair) -> Iterator[SealingTerminal]:
    t = SealingTerminal.create(tmp_path / "agent.db", hq_keys)
    yield t
    t.close()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SqliteStorage]:
    with SqliteStorage(tmp_path / "hq-state" / "hq.db") as s:
        yield s


@pytest.fixture
async def hq(tmp_path: Path, hq_keys: HqKeyPair) -> AsyncIterator[RunningHq]:
    async with running_hq(tmp_path, hq_key=hq_keys) as running:
        yield running


@pytest.fixture
async def session(hq: RunningHq) -> AsyncIterator[aiohttp.ClientSession]:
    async with hq.session() as s:
        yield s
