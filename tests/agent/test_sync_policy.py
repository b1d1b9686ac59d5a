"""Sync policy without a network: batching, purge-first, backoff, acks and rejections."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sync.policy import (
    MAX_BATCH,
    Answer,
    Rejection,
    SyncPolicy,
    parse_retry_after,
)


@dataclass(frozen=True)
class Env:
    seq: int
    kind: str = "purchase"
    body: bytes = b"x" * 700


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(**kw: object) -> SyncPolicy:
    return SyncPolicy(clock=Clock(), rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_batches_hold_at_most_1000_envelopes_in_seq_order() -> None:
    p = policy()
    pending = [Env(s) for s in range(1, 2501)]
    batch = p.next_batch(pending)
    assert [e.seq for e in batch] == list(range(1, MAX_BATCH + 1))


def test_batches_stay_under_4_mib() -> None:
    p = policy()
    pending = [Env(s, body=b"y" * 100_000) for s in range(1, 100)]
    batch = p.next_batch(pending)
    assert sum(len(e.body) + 10 for e in batch) <= 4 * 1024 * 1024
    assert len(batch) == 41


def test_an_oversized_single_envelope_is_still_sent_alone() -> None:
    assert len(policy().next_batch([Env(1, body=b"z" * (5 << 20)), Env(2)])) == 1


def test_purge_goes_first_alone_once_then_normal_order() -> None:
    p = policy()
    pending = [Env(4), Env(5, "purge"), Env(6)]
    purge = [pending[1]]
    first = p.next_batch(pending, purge)
    assert [e.seq for e in first] == [5]
    p.on_answer(first, Answer(acked_through=3), last_seq=6)
    assert [e.seq for e in p.next_batch(pending, purge)] == [4, 5, 6]


def test_a_hole_in_our_own_queue_ends_the_batch() -> None:
    p = policy()
    assert [e.seq for e in p.next_batch([Env(1), Env(2), Env(4)])] == [1, 2]


def test_acked_through_only_grows_and_already_acked_are_not_resent() -> None:
    p = policy()
    out = p.on_answer([Env(1)], Answer(acked_through=5), last_seq=9)
    assert out.ack_through == 5
    assert p.on_answer([Env(6)], Answer(acked_through=3), last_seq=9).ack_through is None
    assert [e.seq for e in p.next_batch([Env(s) for s in range(4, 10)])] == [6, 7, 8, 9]


def test_an_ack_beyond_what_we_made_is_refused() -> None:
    with pytest.raises(ValueError, match="cloned"):
        policy().on_answer([Env(1)], Answer(acked_through=7), last_seq=6)
    with pytest.raises(ValueError, match="old backup"):
        policy().resume(hq_acked_through=10, last_seq=4)


def test_only_the_blocking_rejection_is_dead_lettered() -> None:
    p = policy()
    answer = Answer(
        acked_through=4, rejected=(Rejection(5, "bad signature"), Rejection(6, "gap before seq 6"))
    )
    out = p.on_answer([Env(s) for s in range(1, 7)], answer, last_seq=6)
    assert out.dead_letter == (Rejection(5, "bad signature"),)
    assert out.retry_later == (Rejection(6, "gap before seq 6"),)
    assert out.progress


def test_full_jitter_backoff_is_capped_at_60_s() -> None:
    p = policy()
    delays = [p.on_failure() for _ in range(40)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(delays[10:]) > 30  # the ceiling really grows to the cap
    assert delays[0] <= 1.0  # first retry is quick


def test_retry_after_is_a_floor_and_bounded() -> None:
    p = policy()
    assert p.on_failure(retry_after=42) >= 42
    assert p.on_failure(retry_after=10**9) <= p.max_retry_after + p.max_delay


def test_success_resets_backoff_and_wait_time_follows_the_clock() -> None:
    clock = Clock()
    p = SyncPolicy(clock=clock, rng=random.Random(3))
    d = p.on_failure(retry_after=5)
    assert p.wait_time() == pytest.approx(d)
    clock.now += d
    assert p.wait_time() == 0
    p.on_failure(retry_after=5)
    p.on_answer([Env(1)], Answer(1), last_seq=1)
    assert (p.failures, p.wait_time()) == (0, 0)


def test_413_halves_the_batch() -> None:
    p = policy()
    p.shrink()
    assert len(p.next_batch([Env(s) for s in range(1, 2000)])) == MAX_BATCH // 2


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7", 0) == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 10:00:30 GMT", 1795946400.0) == 30.0
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


@given(st.lists(st.integers(1, 300), min_size=1, max_size=300, unique=True), st.integers(0, 300))
def test_batches_are_contiguous_ascending_and_after_the_ack(seqs: list[int], acked: int) -> None:
    p = policy()
    p.acked_through = acked
    batch = p.next_batch([Env(s) for s in sorted(seqs)])
    got = [e.seq for e in batch]
    assert all(s > acked for s in got)
    assert got == list(range(got[0], got[0] + len(got))) if got else True
