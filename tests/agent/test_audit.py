"""The audit log's chain finds edited, deleted, reordered and truncated rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent import audit
from agent.outbox import Outbox
from tests.conftest import CliRunner


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.executescript(audit.SCHEMA)
    for n in range(1, 6):
        audit.append(c, "purge", {"first_seq": n, "last_seq": n})
    return c


def test_intact_chain_verifies(conn: sqlite3.Connection) -> None:
    report = audit.verify(conn)
    assert report.ok and report.rows == 5


def test_edited_row_is_detected(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit SET detail = '{\"first_seq\":9}' WHERE id = 3")
    report = audit.verify(conn)
    assert [(p.row_id, "edited" in p.problem) for p in report.problems] == [(3, True)]


def test_deleted_row_is_detected(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit WHERE id = 2")
    report = audit.verify(conn)
    assert not report.ok
    assert any(p.row_id == 3 and "missing" in p.problem for p in report.problems)


def test_reordered_rows_are_detected(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT id, at, action, detail, prev, hash FROM audit").fetchall()
    conn.execute("DELETE FROM audit WHERE id IN (2, 3)")
    r2, r3 = rows[1], rows[2]
    conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)", (2, *r3[1:]))
    conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)", (3, *r2[1:]))
    report = audit.verify(conn)
    assert {p.row_id for p in report.problems} >= {2, 3}


def test_rows_cut_off_the_end_are_detected(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit WHERE id = 5")
    report = audit.verify(conn)
    assert any(p.row_id is None and "cut off" in p.problem for p in report.problems)


def test_cli_audit_verify_fails_on_a_corrupted_row(agent_config: Path, cli: CliRunner) -> None:
    cli("keys", "init", "--config", str(agent_config))
    with Outbox(agent_config.parent / "state" / "agent.db", None) as ob:
        ob.audit("config-loaded", {"config_sha256": "ab"})
        ob.conn.execute("UPDATE audit SET action = 'nothing' WHERE id = 1")
    r = cli("audit", "verify", "--json", "--config", str(agent_config))
    assert r.status == 65
    data = json.loads(r.stdout)
    assert not data["ok"] and data["problems"][0]["id"] == 1
    human = cli("audit", "verify", "--config", str(agent_config))
    assert "✗" in human.stdout and "row 1" in human.stdout
