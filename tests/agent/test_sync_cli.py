"""`cumulus-agent sync` against `cumulus-hq serve` run as real processes over TLS."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import keys
from agent.outbox import Outbox, SealingKeys
from tests.agent.api_rig import free_port
from tests.agent.hq_process import hq_serving
from tests.conftest import CliRunner
from tests.factories import HqKeyPair, purchase, write_config
from tests.hq.support import install_hq_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hq_process(tmp_path: Path, hq_keys: HqKeyPair) -> Iterator[tuple[str, Path, Path]]:
    with hq_serving(tmp_path) as hq:
        install_hq_key(hq.state_dir, hq_keys)
        yield hq.url, hq.ca_file, hq.state_dir


def test_sync_command_sends_everything_and_reports_json(
    tmp_path: Path, hq_keys: HqKeyPair, cli: CliRunner, hq_process: tuple[str, Path, Path]
) -> None:
    url, ca_file, hq_state = hq_process
    cfg = write_config(tmp_path, hq_keys, f'ca_file = "{ca_file}"\n')
    cfg.write_text(cfg.read_text().replace("https://127.0.0.1:9", url))
    key = keys.init(tmp_path / "state")
    enrolled = subprocess.run(
        [
            sys.executable,
            "-m",
            "hq.cli",
            "enroll",
            "--state-dir",
            str(hq_state),
            "--terminal",
            "0042-07",
            "--pubkey",
            key.public_b64,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    sk = SealingKeys.build("0042-07", key.private, hq_keys.kid, hq_keys.suite, hq_keys.public_raw)
    with Outbox(tmp_path / "state" / "agent.db", sk) as ob:
        for _ in range(25):
            ob.seal_purchase(purchase("2099123456786", ["7612345678900"]))
    r = cli("sync", "--json", "--config", str(cfg))
    assert r.status == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["waiting"], out["acked_through"], out["sent_envelopes"]) == (0, 25, 25)
    assert out["hq_reachable"] is True
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "hq.cli",
            "export",
            "--state-dir",
            str(hq_state),
            "--card",
            "2099123456786",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert "2099123456786" in exported.stdout  # the customer sees their own number


def test_sync_command_when_hq_is_down_says_so(
    tmp_path: Path, hq_keys: HqKeyPair, cli: CliRunner
) -> None:
    cfg = write_config(tmp_path, hq_keys)
    cfg.write_text(
        cfg.read_text().replace("https://127.0.0.1:9", f"http://127.0.0.1:{free_port()}")
    )
    keys.init(tmp_path / "state")
    r = cli("sync", "--config", str(cfg))
    assert r.status == 69
    assert "✗" in r.stdout and "HQ unreachable" in r.stdout
