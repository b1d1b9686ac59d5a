"""Run `cumulus-agent run` as a real subprocess with a config, keys and a POS token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import keys
from tests.agent.api_rig import POS_TOKEN, free_port
from tests.factories import HQ_URL, HqKeyPair, write_config

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DaemonRig:
    tmp: Path
    hq: HqKeyPair
    port: int = field(default_factory=free_port)
    hq_url: str = ""
    readers: str = ""
    proc: subprocess.Popen[bytes] | None = None
    notify: socket.socket | None = None

    @property
    def config(self) -> Path:
        return self.tmp / "agent.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        (self.tmp / "pos-token").write_text(POS_TOKEN)
        hq_url = self.hq_url or f"http://127.0.0.1:{free_port()}"  # nobody listens: HQ down
        extra = f'\n[api]\nlisten = "127.0.0.1:{self.port}"\ntoken_file = "pos-token"\n'
        extra += "\n[prompt]\ntimeout_s = 5\n" + self.readers
        write_config(self.tmp, self.hq, extra)
        text = self.config.read_text().replace(HQ_URL, hq_url)
        self.config.write_text(text)
        keys.init(self.tmp / "state")

    def start(self, env: dict[str, str] | None = None, notify: bool = True) -> None:
        full = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        if notify:
            path = str(self.tmp / "notify.sock")
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(path)
            full["NOTIFY_SOCKET"] = path
        full.update(env or {})
        with open(self.tmp / "agent.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli.main", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=full,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def messages(self, timeout: float) -> list[tuple[float, str]]:
        """Notify datagrams received within `timeout` seconds, with their arrival time."""
        assert self.notify is not None
        out = []
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                break
            out.append((time.monotonic(), data.decode()))
        return out

    def wait_for(self, needle: str, timeout: float = 15.0) -> tuple[float, str]:
        assert self.notify is not None
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            if needle in data:
                return time.monotonic(), data
        raise AssertionError(
            f"no {needle!r} from the daemon within {timeout} s; log:\n" + self.log()
        )

    def log(self) -> str:
        p = self.tmp / "agent.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()
