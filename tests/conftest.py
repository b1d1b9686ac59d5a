from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli.env import Environment
from agent.cli.main import run
from agent.outbox import Outbox, SealingKeys
from tests.factories import HqKeyPair, hq_key_pair, write_config

# the real-pcscd fixtures (pcscd, vpcd_card) for every test that asks for them
pytest_plugins = ["tests.drivers.pcsc_rig"]


@pytest.fixture(scope="session")
def hq_keys() -> HqKeyPair:
    return hq_key_pair()


@pytest.fixture
def sealing_keys(hq_keys: HqKeyPair) -> SealingKeys:
    return SealingKeys.build(
        "0042-07", Ed25519PrivateKey.generate(), hq_keys.kid, hq_keys.suite, hq_keys.public_raw
    )


@pytest.fixture
def outbox(tmp_path: Path, sealing_keys: SealingKeys) -> Outbox:
    ob = Outbox(tmp_path / "agent.db", sealing_keys)
    yield ob  # type: ignore[misc]
    ob.close()


@dataclass
class CliResult:
    status: int
    stdout: str
    stderr: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli() -> CliRunner:
    """Run `cumulus-agent` in-process with captured streams and a clean environment."""

    def invoke(*argv: str, environ: dict[str, str] | None = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        status = run(list(argv), Environment(stdout=out, stderr=err, environ=environ or {}))
        return CliResult(status, out.getvalue(), err.getvalue())

    return invoke


@pytest.fixture
def agent_config(tmp_path: Path, hq_keys: HqKeyPair) -> Path:
    return write_config(tmp_path, hq_keys)
