"""Damage at rest, found at start: the agent keeps what is good, quarantines the rest, tells
diag, and never crash-loops."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import aiohttp

from agent import keys
from agent.envelope import decode, envelope_hash
from agent.outbox import Outbox, SealingKeys
from agent.outbox.recovery import check_file, explain_missing, missing_ranges
from tests.agent.api_rig import POS_TOKEN, VALID_BASKET
from tests.agent.daemon_rig import DaemonRig
from tests.conftest import CliRunner
from tests.factories import HqKeyPair, purchase

AUTH = {"Authorization": f"Bearer {POS_TOKEN}"}


def seal(db: Path, keys_: SealingKeys, n: int) -> None:
    with Outbox(db, keys_) as ob:
        for _ in range(n):
            ob.seal_purchase(purchase("2099123456786", ["7612345678900"]))


def test_a_row_deleted_mid_stream_is_explained_by_a_purge(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    db = tmp_path / "agent.db"
    seal(db, sealing_keys, 8)
    with Outbox(db, None) as ob:
        hash4 = envelope_hash(ob.all_envelopes()[3].body)
        hash8 = envelope_hash(ob.all_envelopes()[7].body)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM envelopes WHERE seq IN (3, 4, 8)")  # mid-stream and the newest
    conn.commit()
    conn.close()
    with Outbox(db, sealing_keys) as ob:
        assert missing_ranges(ob) == [(3, 4), (8, 8)]
        assert explain_missing(ob) == [(3, 4), (8, 8)]
        assert missing_ranges(ob) == []
        purges = [decode(e.body).header for e in ob.purges()]
        assert [
            (p.purged.first_seq, p.purged.last_seq, p.purged.last_hash)  # type: ignore[union-attr]
            for p in purges
        ] == [(3, 4, hash4), (8, 8, hash8)]
        assert [p.seq for p in purges] == [9, 10]  # the newest seq was never re-issued
        actions = [r[0] for r in ob.conn.execute("SELECT action FROM audit")]
        assert actions == ["rows-lost-at-rest", "rows-lost-at-rest"]


def _flip_page(db: Path, page: int) -> None:
    with open(db, "r+b") as f:
        f.seek(4096 * (page - 1))
        f.write(os.urandom(64))


def test_a_damaged_file_is_quarantined_whole(tmp_path: Path, sealing_keys: SealingKeys) -> None:
    db = tmp_path / "agent.db"
    seal(db, sealing_keys, 50)
    with Outbox(db, None) as ob:
        ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _flip_page(db, 3)
    q = check_file(db)
    assert q is not None
    assert not db.exists()
    assert (q.directory / "agent.db").exists()  # nothing deleted: support may salvage it
    assert check_file(db) is None  # a fresh start has nothing to check


def test_daemon_starts_on_a_damaged_database_and_diag_says_so(
    tmp_path: Path, hq_keys: HqKeyPair, cli: CliRunner
) -> None:
    rig = DaemonRig(tmp_path, hq_keys)
    rig.prepare()
    state = tmp_path / "state"
    key = keys.load(state)
    sk = SealingKeys.build("0042-07", key.private, hq_keys.kid, hq_keys.suite, hq_keys.public_raw)
    seal(state / "agent.db", sk, 50)
    with Outbox(state / "agent.db", None) as ob:
        old_stream = ob.stream
        ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _flip_page(state / "agent.db", 4)
    rig.start()
    try:
        rig.wait_for("READY=1")

        async def record() -> dict[str, object]:
            async with aiohttp.ClientSession() as http:
                await (
                    await http.post(
                        rig.url + "/v1/card", json={"card": "2099123456786"}, headers=AUTH
                    )
                ).read()
                await (
                    await http.post(
                        rig.url + "/v1/decision", json={"decision": "record"}, headers=AUTH
                    )
                ).read()
                r = await http.post(rig.url + "/v1/basket", json=VALID_BASKET, headers=AUTH)
                return dict(await r.json())

        assert asyncio.run(record()) == {"recorded": True, "seq": 1}  # a new stream
    finally:
        rig.stop()
    with Outbox(state / "agent.db", None) as ob:
        assert ob.stream != old_stream
        assert "database-quarantined" in [r[0] for r in ob.conn.execute("SELECT action FROM audit")]
    r = cli("diag", "--json", "--config", str(rig.config))
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["quarantine"]["status"] == "warn"
    assert "support" in checks["quarantine"]["remedy"]


def test_a_wal_cut_short_leaves_a_sound_contiguous_outbox(
    tmp_path: Path, sealing_keys: SealingKeys
) -> None:
    import shutil

    db = tmp_path / "agent.db"
    seal(db, sealing_keys, 20)
    with Outbox(db, sealing_keys) as ob:
        ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(5):  # these live only in the WAL
            ob.seal_purchase(purchase("2099123456786", ["7612345678900"]))
        crash = tmp_path / "damaged"  # a copy of the files, its WAL then cut short
        crash.mkdir()
        shutil.copy(db, crash / "agent.db")
        wal = db.with_name("agent.db-wal").read_bytes()
    (crash / "agent.db-wal").write_bytes(wal[: len(wal) // 2])  # a damaged disk, not a power
    # cut: with synchronous=FULL a power cut can only tear the frame not yet committed
    copy = crash / "agent.db"
    assert check_file(copy) is None  # SQLite ignores the torn tail: the file is sound
    with Outbox(copy, sealing_keys) as ob:
        seqs = [e.seq for e in ob.all_envelopes()]
        assert seqs[:20] == list(range(1, 21))  # everything checkpointed is there
        assert seqs == list(range(1, len(seqs) + 1))  # still contiguous
        assert missing_ranges(ob) == []
        assert ob.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
