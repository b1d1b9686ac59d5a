"""SIGKILL while sealing: every seq reported committed survives; the chain stays whole."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent import keys
from agent.envelope import ZERO_HASH, decode, envelope_hash, verify
from agent.outbox import Outbox
from tests.factories import HqKeyPair

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(db: Path, state: Path, hq: HqKeyPair, rng: random.Random) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.crash_child", str(db), str(state), hq.public_raw.hex()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    reported: list[int] = []
    assert proc.stdout is not None
    first = proc.stdout.readline()  # wait until it is really sealing
    assert first.strip().isdigit(), first
    reported.append(int(first))

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip().isdigit():
                reported.append(int(line))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(rng.uniform(0.0, 0.25))  # a random moment: mid-transaction or between
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    t.join(timeout=10)
    return reported


def test_sigkill_at_random_moments_loses_no_committed_seq(
    tmp_path: Path, hq_keys: HqKeyPair
) -> None:
    state = tmp_path / "state"
    key = keys.init(state)
    db = state / "agent.db"
    rng = random.Random(2026)
    committed: set[int] = set()
    for _round in range(20):
        committed.update(_run_and_kill(db, state, hq_keys, rng))
        with Outbox(db, None) as ob:
            seqs = [e.seq for e in ob.all_envelopes()]
        assert committed <= set(seqs), f"lost: {sorted(committed - set(seqs))[:5]}"
        assert seqs == list(range(1, len(seqs) + 1)), "seqs are not contiguous from 1"
    with Outbox(db, None) as ob:
        envs = [decode(e.body) for e in ob.all_envelopes()]
    assert len(envs) >= 20
    prev = ZERO_HASH
    for env in envs:
        verify(env, key.private.public_key())
        assert env.header.prev == prev
        prev = envelope_hash(env.encoded)
