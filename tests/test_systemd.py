"""The systemd units: they verify cleanly and are hardened to an exposure of at most 1.5."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from tests.factories import hq_key_pair

ROOT = Path(__file__).resolve().parents[1]
UNITS = ["cumulus-agent.service", "cumulus-hq.service"]
INSTALL_PREFIX = "/opt/cumulus-edge/venv"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (make test installs it)",
)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened_to_at_most_1_5(unit: str) -> None:
    out = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--threshold=15",
            str(ROOT / "systemd" / unit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 1.5, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_any_warning(tmp_path: Path, unit: str) -> None:
    """`verify` wants the executables to exist: point the install prefix at this venv."""
    text = (ROOT / "systemd" / unit).read_text()
    assert INSTALL_PREFIX in text
    venv = str(Path(sys.executable).parent.parent)
    (tmp_path / unit).write_text(text.replace(INSTALL_PREFIX, venv))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_sample_config_is_valid_once_its_placeholders_are_filled(tmp_path: Path) -> None:
    text = (ROOT / "systemd" / "agent.toml").read_text()
    key = hq_key_pair().public_b64
    text = re.sub(r'enc_public_key = "[^"]*"', f'enc_public_key = "{key}"', text)
    (tmp_path / "agent.toml").write_text(text)
    (tmp_path / "hq-ca.pem").write_text("-")
    (tmp_path / "pos-token").write_text("t")
    cfg = config.load(tmp_path / "agent.toml")
    assert [r.kind for r in cfg.readers] == ["serial", "pcsc"]
    assert cfg.hq.ca_file == tmp_path / "hq-ca.pem"
