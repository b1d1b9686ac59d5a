"""Seal-and-commit throughput of the outbox, beside its floor measured in the same run.

Figure: purchases sealed and durably committed per second through `Outbox.seal_purchase`
(encrypt to HQ, sign, chain, insert, COMMIT with WAL + synchronous=FULL).
Floor:  1 / (one HPKE seal + one Ed25519 sign + one bare SQLite FULL commit of the same bytes),
timed as that three-step sequence per event (none of our code), in rounds interleaved with the
figure's rounds (medians), on the same disk. The parts are also timed alone and printed: on
this kind of VM an fsync issued right after CPU work is slower than one issued back to back, so
the plain sum of separately timed parts is a slightly optimistic floor; both are reported.
Ratio = figure / floor; the target is >= 0.8.

Run: .venv/bin/python bench/seal.py [--n 4000] [--rounds 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import cbor
from agent.envelope.suites import X25519_SUITE, load_public_key, suite
from agent.outbox import Outbox, SealingKeys
from tests.factories import hq_key_pair, purchase, random_card, random_gtin


def per_chunk(fn: Callable[[], object], n: int) -> float:
    """Mean seconds per call over `n` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4000, help="purchases per measurement")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rng = random.Random(1)
    hq = hq_key_pair()
    key = Ed25519PrivateKey.generate()
    pub = load_public_key(X25519_SUITE, hq.public_raw)
    payloads = [
        purchase(random_card(rng), [random_gtin(rng) for _ in range(5)]) for _ in range(args.n)
    ]
    plaintext = cbor.dumps(payloads[0].to_cbor())
    hpke = suite(X25519_SUITE).hpke
    base = Path(__file__).resolve().parents[1]  # same filesystem as a real state dir

    with tempfile.TemporaryDirectory(dir=base, prefix=".bench-seal-") as tmp:
        keys = SealingKeys.build("0042-07", key, hq.kid, hq.suite, hq.public_raw)
        ob = Outbox(Path(tmp) / "agent.db", keys)
        ob.seal_purchase(payloads[0])  # warm up: schema, page cache
        sample = ob.all_envelopes()[0].body
        conn = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB)")

        def bare_commit() -> None:
            conn.execute("INSERT INTO t (body) VALUES (?)", (sample,))  # autocommit: 1 tx

        def bare_pipeline() -> None:
            """The floor as one sequence: the same three steps, none of our code."""
            hpke.encrypt(plaintext, pub, info=b"x" * 40)
            key.sign(sample)
            bare_commit()

        # Interleave the figure and the floor's parts in rounds so that both see the same
        # disk and CPU weather (fsync latency drifts over seconds on shared machines).
        chunk = max(50, args.n // args.rounds)
        seal_t, floor_t, hpke_t, sign_t, commit_t = [], [], [], [], []
        it = iter(payloads * (1 + args.rounds * chunk // len(payloads)))
        for _ in range(args.rounds):
            seal_t.append(per_chunk(lambda: ob.seal_purchase(next(it)), chunk))
            floor_t.append(per_chunk(bare_pipeline, chunk))
            hpke_t.append(per_chunk(lambda: hpke.encrypt(plaintext, pub, info=b"x" * 40), chunk))
            sign_t.append(per_chunk(lambda: key.sign(sample), chunk))
            commit_t.append(per_chunk(bare_commit, chunk))
        ob.close()
        conn.close()
    t_seal = statistics.median(seal_t)
    t_hpke = statistics.median(hpke_t)
    t_sign = statistics.median(sign_t)
    t_commit = statistics.median(commit_t)
    rate = 1.0 / t_seal
    floor = 1.0 / statistics.median(floor_t)
    floor_sum_of_parts = 1.0 / (t_hpke + t_sign + t_commit)
    result = {
        "figure": "seal+commit",
        "unit": "events/s",
        "value": round(rate, 1),
        "floor": round(floor, 1),
        "ratio": round(rate / floor, 3),
        "target": ">= 0.8",
        "n": args.n,
        "envelope_bytes": len(sample),
        "floor_sum_of_parts": round(floor_sum_of_parts, 1),
        "floor_parts_us": {
            "hpke_seal": round(t_hpke * 1e6, 1),
            "ed25519_sign": round(t_sign * 1e6, 1),
            "sqlite_full_commit": round(t_commit * 1e6, 1),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"seal+commit: {rate:,.0f} events/s   floor: {floor:,.0f} events/s   "
            f"ratio: {rate / floor:.2f} (target >= 0.8)"
        )
        parts = result["floor_parts_us"]
        print(
            f"  floor parts per event (us): {parts}, their sum as a rate: "
            f"{floor_sum_of_parts:,.0f}/s; envelope {len(sample)} bytes, n={args.n}"
        )


if __name__ == "__main__":
    main()
