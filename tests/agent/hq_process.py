"""`cumulus-hq serve` as a real process over TLS with a test CA (for CLI-level tests)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.agent.api_rig import free_port
from tests.hq.support import make_ca

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class HqProcess:
    url: str
    ca_file: Path
    state_dir: Path


@contextmanager
def hq_serving(tmp_path: Path) -> Iterator[HqProcess]:
    """Start `cumulus-hq serve --tls-*` on a free loopback port; stop it afterwards."""
    ca = make_ca(tmp_path / "hq-tls")
    state = tmp_path / "hq-state"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "hq.cli",
        "serve",
        "--state-dir",
        str(state),
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(ca.cert_file),
        "--tls-key",
        str(ca.key_file),
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):  # until it listens (a limit, not an assertion)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.025)
        yield HqProcess(f"https://127.0.0.1:{port}", ca.ca_file, state)
    finally:
        proc.terminate()
        proc.wait(10)
