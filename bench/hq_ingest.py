"""Ingest throughput of `cumulus-hq serve` on PostgreSQL, 1, 2 and 4 processes, beside its floor.

Figure: envelopes per second verified (decode, Ed25519, chain) and durably stored, i.e.
acknowledged, by N `cumulus-hq serve --reuse-port` processes sharing one address and one
PostgreSQL database, for N = 1, 2, 4. The cluster is a throw-away one on 127.0.0.1 with
PostgreSQL's durable defaults (fsync on, synchronous_commit on); each N gets a fresh database.
The load: T terminals at once, each posting its pre-sealed stream in batches over its own
keep-alive connection (the kernel spreads connections over the processes); every answer must
acknowledge its whole batch, and the database must hold every envelope once at the end.
Floor: bare Ed25519 verifications per second of the same envelopes' signed bytes, none of our
code, with 1 process and with one process per core. Figures and floors are medians over
`--rounds` interleaved rounds (each round runs N = 1, 2, 4 in turn, then the floor), so all
see the same machine weather. Ratio = figure / all-core floor: the share of pure signature
checking that the whole HTTP + CBOR + SQL path achieves on the same cores, which it shares
with PostgreSQL and the load generator (said in the output).

Run: .venv/bin/python bench/hq_ingest.py [--terminals 20] [--envelopes 500] [--batch 100]
     [--processes 1,2,4] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.envelope import ZERO_HASH, Header, cbor, decode, envelope_hash, seal, sig_kid
from agent.envelope.codec import signed_bytes
from agent.envelope.suites import X25519_SUITE, load_public_key
from hq.storage import open_storage
from tests.factories import hq_key_pair, purchase, random_card, random_gtin
from tests.hq.pgcluster import PgCluster, find_bindir, free_port

ROOT = Path(__file__).resolve().parents[1]


def make_streams(terminals: int, envelopes: int) -> list[tuple[str, bytes, list[bytes]]]:
    """(terminal id, raw public key, sealed envelopes 1..n) per terminal, chained."""
    rng = random.Random(1)
    hq = hq_key_pair()
    hq_pub = load_public_key(X25519_SUITE, hq.public_raw)
    out = []
    for n in range(terminals):
        key = Ed25519PrivateKey.generate()
        terminal, stream, prev, bodies = f"{n:04d}-01", rng.randbytes(16), ZERO_HASH, []
        for seq in range(1, envelopes + 1):
            header = Header(terminal, stream, seq, "purchase", 1_790_000_000 + seq, prev,
                            sig_kid(key.public_key()), hq.kid)  # fmt: skip
            payload = purchase(random_card(rng), [random_gtin(rng) for _ in range(3)],
                               terminal=terminal)  # fmt: skip
            body = seal(header, payload, signing_key=key, suite_name=X25519_SUITE, hq_key=hq_pub)
            bodies.append(body)
            prev = envelope_hash(body)
        out.append((terminal, key.public_key().public_bytes_raw(), bodies))
    return out


# --- the floor: bare Ed25519 verification ---------------------------------------------------

_WORK: list[tuple[bytes, bytes, bytes]] = []


def _verify_all(count: int) -> int:
    keys: dict[bytes, Ed25519PublicKey] = {}
    for i in range(count):
        pub, sig, msg = _WORK[i % len(_WORK)]
        key = keys.get(pub) or keys.setdefault(pub, Ed25519PublicKey.from_public_bytes(pub))
        key.verify(sig, msg)
    return count


def floor_rate(processes: int, per_process: int) -> float:
    ctx = multiprocessing.get_context("fork")  # children inherit _WORK
    with ctx.Pool(processes) as pool:
        pool.map(_verify_all, [10] * processes)  # warm up
        t0 = time.perf_counter()
        done = sum(pool.map(_verify_all, [per_process] * processes))
        return done / (time.perf_counter() - t0)


# --- the figure: N serve processes ----------------------------------------------------------


def start_servers(
    n: int, url: str, state: Path, port: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    procs = []
    for i in range(n):
        log = state / f"serve-{i}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hq.cli", "serve", "--state-dir", str(state), "--db", url,
             "--listen", f"127.0.0.1:{port}", "--reuse-port"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
        )  # fmt: skip
        procs.append((proc, log))
    for proc, log in procs:  # each process says when it listens
        while b"HQ ingest listening" not in log.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
            time.sleep(0.02)
    return procs


def stop_servers(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in procs:
        proc.wait(timeout=30)


async def push(url: str, bodies: list[bytes], batch: int) -> None:
    """One terminal: its stream in batches, over one keep-alive connection."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for start in range(0, len(bodies), batch):
            chunk = bodies[start : start + batch]
            body = cbor.dumps(chunk)
            headers = {"Content-Type": "application/cbor"}
            async with session.post(f"{url}/v1/envelopes", data=body, headers=headers) as resp:
                answer = cbor.loads(await resp.read())
            if (
                resp.status != 200
                or answer["rejected"]
                or answer["acked_through"] != start + len(chunk)
            ):
                raise RuntimeError(f"unexpected answer {resp.status}: {answer}")


def run_figure(
    cluster: PgCluster, streams: list[tuple[str, bytes, list[bytes]]], n: int, batch: int, tmp: Path
) -> float:
    url = cluster.create_database(f"bench{n}")
    state = tmp / f"state-{n}"
    state.mkdir(parents=True)
    with open_storage(url, state) as store:  # migrate and enrol before the clock starts
        for terminal, pub, _ in streams:
            store.enroll(terminal, pub)
    port = free_port()
    procs = start_servers(n, url, state, port)
    try:
        base = f"http://127.0.0.1:{port}"

        async def all_terminals() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(push(base, bodies, batch) for _, _, bodies in streams))
            return time.perf_counter() - t0

        elapsed = asyncio.run(all_terminals())
    finally:
        stop_servers(procs)
    total = sum(len(b) for _, _, b in streams)
    with open_storage(url, state) as store:
        stored = sum(s.stored for s in store.streams())
    if stored != total:
        raise RuntimeError(f"{stored} envelopes stored, {total} sent")
    return total / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--terminals", type=int, default=20)
    ap.add_argument("--envelopes", type=int, default=500, help="per terminal")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--processes", default="1,2,4", help="serve process counts")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        sys.exit(
            "bench/hq_ingest.py: PostgreSQL server binaries not found (apt-get install postgresql)"
        )
    cores = os.cpu_count() or 1
    streams = make_streams(args.terminals, args.envelopes)
    _WORK.extend(
        (pub, (env := decode(b)).sig, signed_bytes(env.header, env.ct))
        for _, pub, bodies in streams for b in bodies[:200]
    )  # fmt: skip
    per = 4000
    floors = [(floor_rate(1, per), floor_rate(cores, per))]
    cluster = PgCluster.start(bindir, durable=True)
    counts = [int(x) for x in args.processes.split(",")]
    runs: dict[int, list[float]] = {n: [] for n in counts}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hq-") as tmp:
            for r in range(args.rounds):  # interleaved: every N sees the same machine weather
                for n in counts:
                    runs[n].append(run_figure(cluster, streams, n, args.batch, Path(tmp) / str(r)))
                floors.append((floor_rate(1, per), floor_rate(cores, per)))
    finally:
        cluster.stop()
    figures = {n: statistics.median(v) for n, v in runs.items()}
    floor_one = statistics.median(f[0] for f in floors)
    floor_all = statistics.median(f[1] for f in floors)
    result = {
        "figure": "hq ingest (verified and durably stored)",
        "unit": "envelopes/s",
        "cores": cores,
        "terminals": args.terminals,
        "envelopes": args.terminals * args.envelopes,
        "batch": args.batch,
        "postgresql": bindir.parent.name,
        "rounds": args.rounds,
        "figures": {str(n): round(v, 1) for n, v in figures.items()},
        "figures_per_round": {str(n): [round(x, 1) for x in v] for n, v in runs.items()},
        "floor_ed25519_verify": {"1 process": round(floor_one, 1),
                                 f"{cores} processes": round(floor_all, 1)},
        "ratio_to_all_core_floor": {str(n): round(v / floor_all, 3) for n, v in figures.items()},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"cumulus-hq serve on PostgreSQL {bindir.parent.name} (fsync on, synchronous_commit on), "
        f"{cores} cores shared by servers, PostgreSQL and the load generator; "
        f"{args.terminals} terminals x {args.envelopes} envelopes, batches of {args.batch}"
    )
    print(
        f"floor, bare Ed25519 verify: {floor_one:,.0f}/s with 1 process, "
        f"{floor_all:,.0f}/s with {cores} processes (medians of {len(floors)})"
    )
    for n, value in figures.items():
        each = ", ".join(f"{x:,.0f}" for x in runs[n])
        print(
            f"{n} serve process{'es' if n > 1 else '  '}: {value:>8,.0f} envelopes/s   "
            f"ratio to the {cores}-core floor: {value / floor_all:.3f}   (rounds: {each})"
        )


if __name__ == "__main__":
    main()
