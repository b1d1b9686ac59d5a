"""The SQLite outbox: sealing, chaining, ack, purge, dead letters, size cap, privacy at rest."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import ZERO_HASH, decode, envelope_hash, open_payload, verify
from agent.envelope.suites import load_private_key
from agent.outbox import AckOutOfRange, Outbox, OutboxFull, SealingKeys
from tests.factories import HqKeyPair, purchase, random_card, random_gtin


def chain_ok(outbox: Outbox, key: Ed25519PrivateKey) -> list[int]:
    """Verify every stored envelope's signature and prev link; return the seqs."""
    envs = [decode(e.body) for e in outbox.all_envelopes()]
    prev = None
    for env in envs:
        verify(env, key.public_key())
        if prev is not None:
            assert env.header.seq == prev.header.seq + 1
            assert env.header.prev == envelope_hash(prev.encoded)
        elif env.header.seq == 1:
            assert env.header.prev == ZERO_HASH
        prev = env
    return [e.header.seq for e in envs]


def test_seal_allocates_contiguous_seqs_and_chains(
    outbox: Outbox, sealing_keys: SealingKeys
) -> None:
    seqs = [outbox.seal_purchase(purchase("2099123456786", [])).seq for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert chain_ok(outbox, sealing_keys.signing_key) == seqs
    assert all(decode(e.body).header.stream == outbox.stream for e in outbox.all_envelopes())


def test_stream_id_is_made_once_and_survives_reopening(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    with Outbox(tmp_path / "a.db", sealing_keys) as first:
        stream = first.stream
        first.seal_purchase(purchase("2099123456786", []))
    with Outbox(tmp_path / "a.db", sealing_keys) as again:
        assert again.stream == stream
        assert again.seal_purchase(purchase("2099123456786", [])).seq == 2
    with Outbox(tmp_path / "b.db", sealing_keys) as other:
        assert other.stream != stream


def test_payload_opens_at_hq(outbox: Outbox, hq_keys: HqKeyPair) -> None:
    p = purchase("2099123456786", ["7612345678900"])
    outbox.seal_purchase(p)
    env = decode(outbox.all_envelopes()[0].body)
    assert (
        open_payload(env, hq_keys.suite, load_private_key(hq_keys.suite, hq_keys.private_raw)) == p
    )


def test_ack_deletes_exactly_the_acknowledged(outbox: Outbox) -> None:
    for _ in range(6):
        outbox.seal_purchase(purchase("2099123456786", []))
    assert outbox.ack(4) == 4
    assert [e.seq for e in outbox.all_envelopes()] == [5, 6]
    assert outbox.ack(3) == 0  # stale ack changes nothing
    st = outbox.status()
    assert (st.acked_through, st.waiting, st.next_seq) == (4, 2, 7)
    assert st.unsent_bytes == sum(len(e.body) for e in outbox.all_envelopes())


def test_ack_beyond_what_we_made_deletes_nothing(outbox: Outbox) -> None:
    outbox.seal_purchase(purchase("2099123456786", []))
    with pytest.raises(AckOutOfRange):
        outbox.ack(2)
    assert outbox.status().waiting == 1


def test_size_cap_refuses_new_purchases_and_keeps_old_ones(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    with Outbox(tmp_path / "c.db", sealing_keys, max_bytes=2000) as ob:
        made = 0
        with pytest.raises(OutboxFull, match="cap 2000"):
            while True:
                ob.seal_purchase(purchase("2099123456786", ["7612345678900"]))
                made += 1
        assert made >= 1
        assert ob.status().waiting == made
        ob.ack(made)
        assert ob.seal_purchase(purchase("2099123456786", [])).seq == made + 1


def test_dead_letter_moves_the_envelope_aside_and_audits(outbox: Outbox) -> None:
    for _ in range(3):
        outbox.seal_purchase(purchase("2099123456786", []))
    assert outbox.dead_letter(2, "fork at seq 2")
    assert [e.seq for e in outbox.all_envelopes()] == [1, 3]
    assert outbox.status().dead_letters == 1
    actions = [r[0] for r in outbox.conn.execute("SELECT action FROM audit")]
    assert actions == ["hq-rejection"]


def test_purge_removes_oldest_unsent_and_seals_an_explanation(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    now = [1_000_000_000.0]
    with Outbox(tmp_path / "p.db", sealing_keys, clock=lambda: now[0]) as ob:
        for _ in range(3):
            ob.seal_purchase(purchase("2099123456786", []))
        hash3 = envelope_hash(ob.all_envelopes()[-1].body)
        now[0] += 40 * 86400
        ob.seal_purchase(purchase("2099123456786", []))  # seq 4, young
        sealed = ob.purge_expired(30)
        assert sealed is not None and sealed.seq == 5
        left = [decode(e.body) for e in ob.all_envelopes()]
        assert [e.header.seq for e in left] == [4, 5]
        purge = left[1]
        assert purge.header.kind == "purge"
        assert purge.header.purged is not None
        assert (
            purge.header.purged.first_seq,
            purge.header.purged.last_seq,
            purge.header.purged.last_hash,
        ) == (1, 3, hash3)
        assert ob.purge_expired(30) is None  # nothing more is old enough
        # 40 days later, both the young purchase and the purge envelope are old: they merge.
        now[0] += 40 * 86400
        again = ob.purge_expired(30)
        assert again is not None
        merged = decode(ob.all_envelopes()[-1].body)
        assert merged.header.purged is not None
        assert (merged.header.purged.first_seq, merged.header.purged.last_seq) == (1, 5)
        assert [r[0] for r in ob.conn.execute("SELECT action FROM audit")] == ["purge", "purge"]


def test_consent_stats_counts_days_and_seals_each_once(outbox: Outbox, hq_keys: HqKeyPair) -> None:
    d1, d2 = date(2026, 11, 27), date(2026, 11, 28)
    for outcome in ("record", "skip", "skip", "timeout"):
        outbox.count_decision(outcome, d1)  # type: ignore[arg-type]
    outbox.count_decision("skip", d2)
    sealed = outbox.seal_consent_stats(before=d2)
    assert len(sealed) == 1
    assert outbox.seal_consent_stats(before=d2) == []
    env = decode(outbox.all_envelopes()[0].body)
    payload = open_payload(env, hq_keys.suite, load_private_key(hq_keys.suite, hq_keys.private_raw))
    assert payload.to_cbor() == {"day": "2026-11-27", "record": 1, "skip": 2, "timeout": 1}


def test_no_card_number_or_gtin_is_ever_on_disk(tmp_path: Path, sealing_keys: SealingKeys) -> None:
    rng = random.Random(7)
    cards, gtins = set(), set()
    db = tmp_path / "state" / "agent.db"
    with Outbox(db, sealing_keys) as ob:
        for _ in range(1000):
            card = random_card(rng)
            items = [random_gtin(rng) for _ in range(rng.randint(1, 4))]
            cards.add(card)
            gtins.update(items)
            ob.seal_purchase(purchase(card, items))
        ob.ack(200)  # deleted rows linger in free pages: they must be ciphertext too
        files = [p for p in db.parent.iterdir() if p.name.startswith("agent.db")]
        assert {p.name for p in files} >= {"agent.db", "agent.db-wal", "agent.db-shm"}
        blob = b"".join(p.read_bytes() for p in files)
    assert len(blob) > 100_000
    for secret in cards | gtins:
        assert secret.encode() not in blob, "plaintext found at rest"


def test_a_second_sealing_writer_is_refused_until_the_first_closes(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    from agent.outbox import OutboxLocked

    with Outbox(tmp_path / "w.db", sealing_keys):
        with pytest.raises(OutboxLocked, match="another process"):
            Outbox(tmp_path / "w.db", sealing_keys)
        with Outbox(tmp_path / "w.db", None) as reader:  # readers need no lock
            assert reader.status().next_seq == 1
    with Outbox(tmp_path / "w.db", sealing_keys) as again:
        assert again.seal_purchase(purchase("2099123456786", [])).seq == 1


def test_dead_letter_with_bridge_explains_the_gap_with_a_purge(
    outbox: Outbox, sealing_keys: SealingKeys
) -> None:
    for _ in range(3):
        outbox.seal_purchase(purchase("2099123456786", []))
    hash2 = envelope_hash(outbox.all_envelopes()[1].body)
    assert outbox.dead_letter(2, "signature does not verify", bridge=True)
    envs = [decode(e.body) for e in outbox.all_envelopes()]
    assert [e.header.seq for e in envs] == [1, 3, 4]
    purge = envs[-1]
    assert purge.header.kind == "purge"
    assert purge.header.purged is not None
    assert (purge.header.purged.first_seq, purge.header.purged.last_seq) == (2, 2)
    assert purge.header.purged.last_hash == hash2
    assert [e.seq for e in outbox.purges()] == [4]
    detail = outbox.conn.execute("SELECT detail FROM audit").fetchone()[0]
    assert '"purge_seq":4' in detail
