"""Every verification rule of envelope-v1 at the ingest tier, over a real SQLite store.

No HTTP here (tests/hq/test_server.py covers the transport): `ingest(storage, elements)`
is what `POST /v1/envelopes` runs once the body is split into elements.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import ZERO_HASH, Purged, cbor, decode, envelope_hash, sig_kid
from hq.errors import Forbidden, Malformed
from hq.ingest import IngestResult, decide, ingest, read_element
from hq.storage import HqStore, StreamSnapshot
from tests.hq.support import SealingTerminal


def run(storage: HqStore, elements: list[bytes]) -> IngestResult:
    return ingest(storage, elements)


def reasons(result: IngestResult) -> dict[int, str]:
    return {r.seq: r.reason for r in result.update.rejections}


def codes(result: IngestResult) -> dict[int, str]:
    return {r.seq: r.code for r in result.update.rejections}


@pytest.fixture
def enrolled(storage: HqStore, terminal: SealingTerminal) -> SealingTerminal:
    storage.enroll(terminal.terminal, terminal.public_raw)
    return terminal


def test_a_clean_batch_is_stored_and_acknowledged(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(5)
    result = run(storage, enrolled.bodies())
    assert result.answer() == {"stream": enrolled.stream, "acked_through": 5, "rejected": []}
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == [1, 2, 3, 4, 5]
    stored = list(storage.envelopes())
    assert [s.body for s in stored] == enrolled.bodies()  # the exact bytes as sealed
    assert all(s.hash == envelope_hash(s.body) and s.kind == "purchase" for s in stored)


def test_batches_continue_the_chain(storage: HqStore, enrolled: SealingTerminal) -> None:
    enrolled.seal(3)
    assert run(storage, enrolled.bodies()).update.acked_through == 3
    enrolled.seal(2)
    assert run(storage, enrolled.bodies(after=3)).update.acked_through == 5


def test_replayed_batch_is_acknowledged_and_stored_once(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(3)
    run(storage, enrolled.bodies())
    again = run(storage, enrolled.bodies())
    assert again.answer()["acked_through"] == 3 and again.answer()["rejected"] == []
    assert again.update.duplicates == (1, 2, 3) and again.update.new_envelopes == ()
    assert len(list(storage.envelopes())) == 3


def test_partly_replayed_batch_stores_only_the_new_part(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    run(storage, enrolled.bodies())
    enrolled.seal(2)
    result = run(storage, enrolled.bodies())  # 1..4: a lost answer, resent with more
    assert result.update.duplicates == (1, 2)
    assert [e.seq for e in result.update.new_envelopes] == [3, 4]
    assert result.update.acked_through == 4


def test_tampered_ciphertext_fails_the_signature(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(2)
    good = enrolled.bodies()
    env = decode(good[1])
    flipped = bytearray(env.ct)
    flipped[5] ^= 0x01
    raw = env.header.to_cbor(bytes(flipped), env.sig)
    tampered = cbor.dumps(raw)
    result = run(storage, [good[0], tampered])
    assert codes(result) == {2: "signature"}
    assert result.update.acked_through == 1
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == [1]


def test_tampered_header_fails_the_signature(storage: HqStore, enrolled: SealingTerminal) -> None:
    enrolled.seal(1)
    env = decode(enrolled.bodies()[0])
    raw = env.header.to_cbor(env.ct, env.sig)
    raw["ts"] = raw["ts"] + 1
    result = run(storage, [cbor.dumps(raw)])
    assert codes(result) == {1: "signature"}
    assert result.update.acked_through == 0


def test_non_deterministic_encoding_is_rejected_as_decode(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    import cbor2

    enrolled.seal(1)
    env = decode(enrolled.bodies()[0])
    raw = env.header.to_cbor(env.ct, env.sig)
    reordered = cbor2.dumps(dict(reversed(list(raw.items()))))  # keys out of order
    result = run(storage, [reordered])
    assert codes(result) == {1: "decode"}
    assert "deterministic" in reasons(result)[1]


def test_version_other_than_1_is_rejected_as_version(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(1)
    env = decode(enrolled.bodies()[0])
    raw: dict[str, Any] = env.header.to_cbor(env.ct, env.sig)
    raw["v"] = 2
    result = run(storage, [cbor.dumps(raw)])
    assert codes(result) == {1: "version"}


def test_an_element_without_a_readable_seq_makes_the_request_malformed(
    storage: HqStore,
) -> None:
    with pytest.raises(Malformed, match="element 0 is not an envelope"):
        run(storage, [b"\x01"])
    with pytest.raises(Malformed, match="element 0"):
        read_element(0, cbor.dumps({"terminal": "0042-07", "seq": 1}))


def test_unknown_terminal_is_forbidden_and_nothing_is_stored(
    storage: HqStore, terminal: SealingTerminal
) -> None:
    terminal.seal(2)
    with pytest.raises(Forbidden) as info:
        run(storage, terminal.bodies())
    assert info.value.code == "unknown-terminal" and info.value.status == 403
    assert storage.stored_seqs(terminal.terminal, terminal.stream) == []
    assert storage.rejections() == []  # strangers do not fill the log


def test_unregistered_key_is_forbidden_for_the_whole_batch(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    """403, not a per-envelope rejection: after a rotation the terminal retries once the new
    key is enrolled, instead of dead-lettering envelopes that are fine."""
    enrolled.seal(1)
    rotated = Ed25519PrivateKey.generate()
    second = enrolled.forge(2, envelope_hash(enrolled.body(1)), signing_key=rotated)
    with pytest.raises(Forbidden) as info:
        run(storage, [enrolled.body(1), second])
    assert info.value.code == "unknown-key"
    assert sig_kid(rotated.public_key()) in info.value.detail
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == []
    storage.enroll(enrolled.terminal, rotated.public_key().public_bytes_raw())
    assert run(storage, [enrolled.body(1), second]).update.acked_through == 2


def test_a_key_registered_for_the_terminal_but_not_the_signer_fails_the_signature(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    """The sig_kid names an enrolled key, the signature is by another key: a forgery."""
    forger = Ed25519PrivateKey.generate()
    forged = decode(enrolled.forge(1, ZERO_HASH, signing_key=forger))
    raw: dict[str, Any] = forged.header.to_cbor(forged.ct, forged.sig)
    raw["sig_kid"] = sig_kid(enrolled.public_raw)
    result = run(storage, [cbor.dumps(raw)])
    assert codes(result) == {1: "signature"}


def test_key_rotation_both_keys_verify(storage: HqStore, enrolled: SealingTerminal) -> None:
    new_key = Ed25519PrivateKey.generate()
    storage.enroll(enrolled.terminal, new_key.public_key().public_bytes_raw())
    one = enrolled.forge(1, ZERO_HASH)
    two = enrolled.forge(2, envelope_hash(one), signing_key=new_key)
    assert run(storage, [one, two]).update.acked_through == 2


def test_reordered_batch_is_malformed(storage: HqStore, enrolled: SealingTerminal) -> None:
    enrolled.seal(3)
    b = enrolled.bodies()
    with pytest.raises(Malformed, match="not ascending"):
        run(storage, [b[0], b[2], b[1]])
    with pytest.raises(Malformed, match="not ascending"):
        run(storage, [b[0], b[0]])
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == []


def test_mixed_terminals_or_streams_are_malformed(
    storage: HqStore, enrolled: SealingTerminal, tmp_path: Any, hq_keys: Any
) -> None:
    other = SealingTerminal.create(tmp_path / "other.db", hq_keys, terminal="0042-08")
    other_stream = SealingTerminal.create(tmp_path / "again.db", hq_keys)
    try:
        enrolled.seal(1)
        other.seal(2)
        other_stream.seal(2)
        with pytest.raises(Malformed, match="mixed terminals"):
            run(storage, [enrolled.body(1), other.body(2)])
        with pytest.raises(Malformed, match="mixed streams"):
            run(storage, [enrolled.body(1), other_stream.body(2)])
    finally:
        other.close()
        other_stream.close()


def test_gap_nothing_after_it_is_acknowledged(storage: HqStore, enrolled: SealingTerminal) -> None:
    enrolled.seal(5)
    b = enrolled.bodies()
    result = run(storage, [b[0], b[1], b[3], b[4]])
    assert result.update.acked_through == 2
    assert codes(result) == {4: "gap", 5: "gap"}
    assert "expected seq 3" in reasons(result)[4]
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == [1, 2]
    assert run(storage, b[2:]).update.acked_through == 5  # the terminal resends from 3


def test_a_rejected_envelope_is_a_gap_for_the_rest_of_the_batch(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(3)
    b = enrolled.bodies()
    env = decode(b[1])
    bad_sig = cbor.dumps(env.header.to_cbor(env.ct, bytes(64)))
    result = run(storage, [b[0], bad_sig, b[2]])
    assert codes(result) == {2: "signature", 3: "gap"}
    assert result.update.acked_through == 1


def test_fork_is_rejected_logged_at_error_and_kept_as_evidence(
    storage: HqStore, enrolled: SealingTerminal, caplog: pytest.LogCaptureFixture
) -> None:
    enrolled.seal(2)
    run(storage, enrolled.bodies())
    clone = enrolled.forge(2, envelope_hash(enrolled.body(1)), card="2099000000019")
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        result = run(storage, [clone])
    assert codes(result) == {2: "fork"}
    assert result.update.acked_through == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "FORK" in message and f"stream={enrolled.stream.hex()}" in message
    assert "seq=2" in message and "terminal=0042-07" in message
    assert "2099000000019" not in caplog.text  # headers only, never a card
    logged = storage.rejections(enrolled.terminal)
    assert [(r.seq, r.code, r.evidence) for r in logged] == [(2, "fork", clone)]
    assert [s.body for s in storage.envelopes()] == enrolled.bodies()  # original kept


def test_prev_that_does_not_link_is_a_chain_rejection(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(1)
    run(storage, enrolled.bodies())
    wrong = enrolled.forge(2, bytes(range(32)))
    result = run(storage, [wrong])
    assert codes(result) == {2: "chain"}
    assert result.update.acked_through == 1


def test_first_envelope_must_link_to_the_zero_hash(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    result = run(storage, [enrolled.forge(1, bytes([1]) * 32)])
    assert codes(result) == {1: "chain"}


# --- purges -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


DAY = 86_400


@pytest.fixture
def aged(tmp_path: Any, hq_keys: Any, storage: HqStore) -> tuple[SealingTerminal, Clock]:
    """A terminal whose seqs 1..2 reached HQ, 3..6 are 40 days old and unsent, 7..10 fresh
    and unsent: `purge_expired(30)` deletes 3..6 and seals purge seq 11 for them."""
    clock = Clock(1_760_000_000)
    t = SealingTerminal.create(tmp_path / "aged.db", hq_keys, clock=clock)
    storage.enroll(t.terminal, t.public_raw)
    t.seal(2)
    assert run(storage, t.bodies()).update.acked_through == 2
    t.outbox.ack(2)
    t.seal(4)
    clock.now += 40 * DAY
    t.seal(4)
    return t, clock


def test_purge_ahead_of_its_turn_explains_the_gap_then_the_chain_continues(
    storage: HqStore, aged: tuple[SealingTerminal, Clock]
) -> None:
    t, _ = aged
    old = {seq: t.body(seq) for seq in range(3, 7)}
    sealed = t.outbox.purge_expired(30)
    assert sealed is not None and sealed.seq == 11
    pending = t.bodies(after=2)
    assert [decode(b).header.seq for b in pending] == [7, 8, 9, 10, 11]
    purge = decode(pending[-1])
    assert purge.header.purged == Purged(3, 6, envelope_hash(old[6]))

    first = run(storage, [pending[-1]])  # the purge alone, first
    assert first.answer()["rejected"] == []
    assert first.update.acked_through == 6  # 3..6 explained
    assert storage.purges(t.terminal, t.stream)[0].first_seq == 3

    rest = run(storage, pending)  # 7..10 chain onto last_hash; 11's prev checked now
    assert rest.answer()["rejected"] == []
    assert rest.update.acked_through == 11
    assert rest.update.duplicates == (11,)
    assert storage.stored_seqs(t.terminal, t.stream) == [1, 2, 7, 8, 9, 10, 11]

    late = run(storage, [old[4]])  # a purged envelope turning up late is not stored
    assert codes(late) == {4: "purged"} and "purge seq 11" in reasons(late)[4]


def test_purge_in_the_same_batch_as_what_follows_it(
    storage: HqStore, aged: tuple[SealingTerminal, Clock]
) -> None:
    t, _ = aged
    t.outbox.purge_expired(30)
    result = run(storage, t.bodies(after=2))
    assert result.answer()["rejected"] == []
    assert result.update.acked_through == 11


def test_envelopes_after_a_purged_range_before_the_purge_arrives_are_a_gap(
    storage: HqStore, aged: tuple[SealingTerminal, Clock]
) -> None:
    t, _ = aged
    t.outbox.purge_expired(30)
    pending = t.bodies(after=2)
    early = run(storage, pending[:-1])  # 7..10 without their purge
    assert set(codes(early).values()) == {"gap"} and early.update.acked_through == 2
    assert run(storage, pending[-1:]).update.acked_through == 6
    assert run(storage, pending).update.acked_through == 11


def test_purge_whose_prev_does_not_link_is_dropped_when_its_turn_comes(
    storage: HqStore, aged: tuple[SealingTerminal, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    t, _ = aged
    last_hash = envelope_hash(t.body(6))
    bad_purge = t.forge(11, bytes(32), purged=Purged(3, 6, last_hash))
    assert run(storage, [bad_purge]).update.acked_through == 6  # accepted on its signature
    seven_to_ten = [t.body(s) for s in range(7, 11)]
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        result = run(storage, seven_to_ten)
    assert codes(result) == {11: "chain"}
    assert result.update.acked_through == 10
    assert 11 not in storage.stored_seqs(t.terminal, t.stream)
    assert "CHAIN" in caplog.text
    [logged] = storage.rejections(t.terminal)
    assert logged.evidence == bad_purge  # the removed envelope is kept as evidence


def test_purge_claiming_another_hash_for_a_stored_envelope_is_a_fork(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    enrolled.seal(3)
    run(storage, enrolled.bodies())
    liar = enrolled.forge(6, bytes(32), purged=Purged(2, 3, bytes(32)))
    result = run(storage, [liar])
    assert codes(result) == {6: "fork"}
    assert result.update.acked_through == 3


def test_purge_overlapping_what_hq_already_holds(
    storage: HqStore, aged: tuple[SealingTerminal, Clock]
) -> None:
    """HQ stored 3..4 but the answer was lost; the terminal then purged 3..6."""
    t, _ = aged
    assert run(storage, [t.body(3), t.body(4)]).update.acked_through == 4
    t.outbox.purge_expired(30)  # the terminal still believes acked_through == 2
    result = run(storage, t.bodies(after=2)[-1:])
    assert result.answer()["rejected"] == [] and result.update.acked_through == 6
    assert run(storage, t.bodies(after=2)).update.acked_through == 11


def test_a_rejected_envelope_bridged_by_a_one_seq_purge_unblocks_the_stream(
    storage: HqStore, enrolled: SealingTerminal
) -> None:
    """The agent dead-letters the envelope blocking its stream and seals a purge for exactly
    that seq, `last_hash` being the hash of the bytes it holds (and chained on)."""
    one = enrolled.forge(1, ZERO_HASH)
    env = decode(enrolled.forge(2, envelope_hash(one)))
    bad = cbor.dumps(env.header.to_cbor(env.ct, bytes(64)))  # sealed with a broken signer
    three = enrolled.forge(3, envelope_hash(bad))
    first = run(storage, [one, bad, three])
    assert codes(first) == {2: "signature", 3: "gap"} and first.update.acked_through == 1
    bridge = enrolled.forge(4, envelope_hash(three), purged=Purged(2, 2, envelope_hash(bad)))
    assert run(storage, [bridge]).update.acked_through == 2
    last = run(storage, [three, bridge])
    assert last.answer()["rejected"] == [] and last.update.acked_through == 4
    assert storage.stored_seqs(enrolled.terminal, enrolled.stream) == [1, 3, 4]


# --- the pure core ------------------------------------------------------------------------------


def test_decide_is_pure_over_its_snapshot(enrolled: SealingTerminal) -> None:
    from hq.ingest import check_keys

    enrolled.seal(3)
    elements = check_keys(
        enrolled.terminal,
        [read_element(i, b) for i, b in enumerate(enrolled.bodies())],
        {sig_kid(enrolled.public_raw): enrolled.public_raw},
    )
    snap = StreamSnapshot(enrolled.terminal, enrolled.stream, 0, {}, (), {})
    first, second = decide(snap, elements), decide(snap, elements)
    assert first == second and first.acked_through == 3 and len(first.new_envelopes) == 3
