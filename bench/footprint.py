"""The daemon's footprint: start-to-READY, idle CPU and RSS, with two readers configured.

Figure: `cumulus-agent run` as systemd starts it (NOTIFY_SOCKET set), with two serial
readers on pseudo-terminals: time from exec to READY=1, CPU used while idle for --idle
seconds (default 60), and RSS after that.
Floor:  a bare `python -c 'import asyncio; ...'` process measured the same way (time to its
first datagram, its idle CPU and RSS), in the same run.
Targets: READY < 1.5 s, idle CPU < 1 %, RSS < 60 MB.

Run: .venv/bin/python bench/footprint.py [--idle 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import keys  # noqa: E402
from agent.outbox import DB_NAME, Outbox  # noqa: E402
from tests.factories import hq_key_pair, write_config  # noqa: E402

FLOOR_CODE = (
    "import asyncio, os, socket\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
    "asyncio.run(asyncio.sleep(3600))\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(argv: list[str], env: dict[str, str], notify: Path, idle: float) -> dict[str, float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env={**env, "NOTIFY_SOCKET": str(notify)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - t0
        time.sleep(2.0)  # let start-up work settle before the idle window
        c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(idle)
        cpu = (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - w0) * 100
        return {"ready_s": ready, "idle_cpu_pct": cpu, "rss_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(10)
        sock.close()
        notify.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with tempfile.TemporaryDirectory(prefix="cumulus-footprint-") as tmp:
        d = Path(tmp)
        ptys = [os.openpty() for _ in range(2)]
        readers = "".join(
            f'\n[[readers]]\nkind = "serial"\nport = "{os.ttyname(s)}"\nname = "scanner-{n}"\n'
            for n, (_, s) in enumerate(ptys)
        )
        (d / "pos-token").write_text("footprint")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = write_config(
            d,
            hq_key_pair(),
            f'\n[api]\nlisten = "127.0.0.1:{port}"\ntoken_file = "pos-token"\n' + readers,
        )
        keys.init(d / "state")
        Outbox(d / "state" / DB_NAME, None).close()  # steady state: not the very first start
        agent = measure(
            [sys.executable, "-m", "agent.cli.main", "run", "--config", str(cfg)],
            env,
            d / "notify-agent",
            args.idle,
        )
        floor = measure([sys.executable, "-c", FLOOR_CODE], env, d / "notify-floor", args.idle)
        for m, s in ptys:
            os.close(m)
            os.close(s)
    result = {
        "figure": "footprint",
        "agent": agent,
        "floor": floor,
        "idle_window_s": args.idle,
        "targets": {"ready_s": 1.5, "idle_cpu_pct": 1.0, "rss_mb": 60.0},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'':24}{'agent':>10}{'floor':>10}   target")
    print(f"{'start to READY, s':24}{agent['ready_s']:>10.3f}{floor['ready_s']:>10.3f}   < 1.5")
    print(
        f"{'idle CPU, %':24}{agent['idle_cpu_pct']:>10.3f}{floor['idle_cpu_pct']:>10.3f}"
        f"   < 1   (over {args.idle:.0f} s)"
    )
    print(f"{'RSS, MB':24}{agent['rss_mb']:>10.1f}{floor['rss_mb']:>10.1f}   < 60")
    print("agent: two serial readers configured (ptys), HQ unreachable, API on loopback")


if __name__ == "__main__":
    main()
