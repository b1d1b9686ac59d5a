"""Draining a backlog into HQ: envelopes/s end to end and the agent's peak RSS.

Figure: a backlog of N sealed envelopes (default 100,000) drained by the agent's SyncClient
into a local `cumulus-hq serve` (separate process, embedded SQLite, loopback http): strict
verification, signature checks, chained storage, acks, deletes at the terminal.
Floor:  the same batches (1,000 envelopes, gzip CBOR) POSTed by a bare aiohttp client to a
handler that only reads the body, measured in the same run.
Memory: the agent's peak RSS for the full backlog and for a tenth of it: it must not grow
with the backlog (batches are read 1,000 at a time).

Run: .venv/bin/python bench/drain.py [--n 100000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.envelope import cbor  # noqa: E402
from agent.outbox import AsyncOutbox, Outbox, SealingKeys  # noqa: E402
from tests.factories import hq_key_pair, purchase, random_card, random_gtin  # noqa: E402

TERMINAL = "0042-07"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(400):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


def seal_backlog(db: Path, keys: SealingKeys, n: int) -> None:
    import random

    rng = random.Random(3)
    with Outbox(db, keys) as ob:
        for _ in range(n):
            ob.seal_purchase(purchase(random_card(rng), [random_gtin(rng) for _ in range(3)]))


# --- child processes: each measures itself ---------------------------------------------------


def child_drain(db: str, url: str, seed_hex: str, hq_pub_hex: str) -> None:
    """Agent side: drain with the real SyncClient; print seconds, count and peak RSS."""
    from agent.sync import SyncClient

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    hq = hq_key_pair()
    keys = SealingKeys.build(TERMINAL, key, hq.kid, hq.suite, bytes.fromhex(hq_pub_hex))

    async def run() -> dict[str, float]:
        outbox = await AsyncOutbox.open(Path(db), keys)
        waiting = (await outbox.status()).waiting
        t0 = time.perf_counter()
        async with SyncClient(outbox, TERMINAL, url, total_timeout=120) as client:
            while (await outbox.status()).waiting:
                state = await client.drain()
                if state.last_error:
                    raise SystemExit(f"drain failed: {state.last_error}")
        elapsed = time.perf_counter() - t0
        await outbox.close()
        return {"seconds": elapsed, "envelopes": waiting}

    out = asyncio.run(run())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def child_floor_server(port: str) -> None:
    from aiohttp import web

    answer = cbor.dumps({"stream": bytes(16), "acked_through": 0, "rejected": []})

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/cbor")

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/v1/envelopes", handler)
    web.run_app(app, host="127.0.0.1", port=int(port), print=None, access_log=None)


def child_floor_client(db: str, url: str) -> None:
    """The floor: read the same batches, gzip them the same way, POST, read the answer."""
    import aiohttp

    async def run() -> dict[str, float]:
        with Outbox(Path(db), None) as ob:
            total = 0
            t0 = time.perf_counter()
            after = 0
            async with aiohttp.ClientSession() as http:
                while batch := ob.pending(after=after, limit=1000):
                    body = gzip.compress(cbor.dumps([e.body for e in batch]), 1)
                    async with http.post(
                        url + "/v1/envelopes",
                        data=body,
                        headers={"Content-Type": "application/cbor", "Content-Encoding": "gzip"},
                    ) as r:
                        await r.read()
                    after = batch[-1].seq
                    total += len(batch)
            return {"seconds": time.perf_counter() - t0, "envelopes": total}

    print(json.dumps(asyncio.run(run())))


# --- the parent: set up, run the children, compare ---------------------------------------------


def measure(n: int, tmp: Path) -> dict[str, float]:
    hq = hq_key_pair()
    key = Ed25519PrivateKey.generate()
    keys = SealingKeys.build(TERMINAL, key, hq.kid, hq.suite, hq.public_raw)
    db = tmp / f"agent-{n}.db"
    seal_backlog(db, keys, n)
    floor_db = tmp / f"floor-{n}.db"
    shutil.copy(db, floor_db)

    port = free_port()
    floor = subprocess.Popen([sys.executable, __file__, "--child", "floor-server", str(port)])
    try:
        wait_port(port)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "floor-client",
                str(floor_db),
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        floor_res = json.loads(out.stdout)
    finally:
        floor.terminate()
        floor.wait(10)

    state = tmp / f"hq-{n}"
    from hq.storage import SqliteStorage

    with SqliteStorage(state / "hq.db") as storage:
        storage.enroll(TERMINAL, key.public_key().public_bytes_raw())
    port = free_port()
    hq_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hq.cli",
            "serve",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "drain",
                str(db),
                f"http://127.0.0.1:{port}",
                key.private_bytes_raw().hex(),
                hq.public_raw.hex(),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(out.stdout)
    finally:
        hq_proc.terminate()
        hq_proc.wait(10)
    return {
        "n": n,
        "rate": res["envelopes"] / res["seconds"],
        "floor_rate": floor_res["envelopes"] / floor_res["seconds"],
        "peak_rss_mb": res["peak_rss_mb"],
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        {
            "drain": child_drain,
            "floor-server": child_floor_server,
            "floor-client": child_floor_client,
        }[sys.argv[2]](*sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".bench-drain-") as tmp:
        small = measure(max(1000, args.n // 10), Path(tmp))
        full = measure(args.n, Path(tmp))
    result = {
        "figure": "drain",
        "unit": "envelopes/s",
        "value": round(full["rate"], 1),
        "floor": round(full["floor_rate"], 1),
        "ratio": round(full["rate"] / full["floor_rate"], 3),
        "n": args.n,
        "peak_rss_mb": round(full["peak_rss_mb"], 1),
        "peak_rss_mb_at_tenth": round(small["peak_rss_mb"], 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"drain {args.n:,} envelopes: {full['rate']:,.0f} envelopes/s end to end   "
        f"floor (bare POST, body read only): {full['floor_rate']:,.0f} envelopes/s   "
        f"ratio {full['rate'] / full['floor_rate']:.2f}"
    )
    print(
        f"agent peak RSS: {full['peak_rss_mb']:.1f} MB for {args.n:,} waiting, "
        f"{small['peak_rss_mb']:.1f} MB for {small['n']:,} (must not grow with the backlog)"
    )


if __name__ == "__main__":
    main()
