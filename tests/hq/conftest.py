"""Fixtures for HQ tests: a sealing terminal, a storage, a running HQ over TLS.

`storage` is parametrized over both backends: every test that takes it runs once on SQLite
and once on a fresh database of a throw-away PostgreSQL cluster (`pg_cluster`, one per
session, on 127.0.0.1 and a free port). Without PostgreSQL's server binaries the PostgreSQL
variants are skipped, saying so; the SQLite ones still run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from hq.storage import HqStore, open_storage
from tests.factories import HqKeyPair
from tests.hq.pgcluster import PgCluster, find_bindir
from tests.hq.support import RunningHq, SealingTerminal, running_hq

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def terminal(tmp_path: Path, hq_keys: HqKeyPair) -> Iterator[SealingTerminal]:
    t = SealingTerminal.create(tmp_path / "agent.db", hq_keys)
    yield t
    t.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or set CUMULUS_PG_BINDIR): PostgreSQL backend "
            "tests skipped"
        )
    cluster = PgCluster.start(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database of the session's cluster."""
    return pg_cluster.create_database()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """`--db` of a fresh database of `backend` (a SQLite path, or a postgresql:// URL)."""
    if backend == "sqlite":
        return str(tmp_path / "hq-state" / "hq.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def storage(db_url: str, tmp_path: Path) -> Iterator[HqStore]:
    s = open_storage(db_url, tmp_path / "hq-state")
    yield s
    s.close()


@pytest.fixture
async def hq(tmp_path: Path, hq_keys: HqKeyPair) -> AsyncIterator[RunningHq]:
    async with running_hq(tmp_path, hq_key=hq_keys) as running:
        yield running


@pytest.fixture
async def session(hq: RunningHq) -> AsyncIterator[aiohttp.ClientSession]:
    async with hq.session() as s:
        yield s
