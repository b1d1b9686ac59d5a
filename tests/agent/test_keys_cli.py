"""Terminal keys and the `keys`, `audit verify`, `outbox status` and `run` commands."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from agent import keys
from agent.envelope import sig_kid
from agent.fsutil import UnsafePermissions
from tests.conftest import CliRunner


def test_keys_init_writes_a_0600_key_and_prints_public_key_and_kid(
    agent_config: Path, cli: CliRunner
) -> None:
    r = cli("keys", "init", "--json", "--config", str(agent_config))
    assert r.status == 0, r.stderr
    out = json.loads(r.stdout)
    pub = base64.b64decode(out["public_key"])
    assert len(pub) == 32 and out["sig_kid"] == sig_kid(pub)
    key_file = agent_config.parent / "state" / "keys" / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not list(key_file.parent.glob(".*tmp*"))  # atomic write left no temp file
    assert "cumulus-hq enroll --terminal 0042-07 --pubkey" in r.stderr


def test_keys_init_refuses_to_overwrite(agent_config: Path, cli: CliRunner) -> None:
    assert cli("keys", "init", "--config", str(agent_config)).status == 0
    r = cli("keys", "init", "--config", str(agent_config))
    assert r.status == 73 and "already exists" in r.stderr


def test_keys_show_matches_init_and_refuses_a_group_readable_key(
    agent_config: Path, cli: CliRunner
) -> None:
    made = json.loads(cli("keys", "init", "--json", "--config", str(agent_config)).stdout)
    shown = json.loads(cli("keys", "show", "--json", "--config", str(agent_config)).stdout)
    assert shown["public_key"] == made["public_key"]
    key_file = agent_config.parent / "state" / "keys" / "signing.key"
    key_file.chmod(0o644)
    r = cli("keys", "show", "--config", str(agent_config))
    assert r.status == 77
    assert "mode 0644" in r.stderr and "chmod 600" in r.stderr
    with pytest.raises(UnsafePermissions):
        keys.load(agent_config.parent / "state")


def test_keys_rotate_keeps_retired_public_keys(agent_config: Path, cli: CliRunner) -> None:
    first = json.loads(cli("keys", "init", "--json", "--config", str(agent_config)).stdout)
    second = json.loads(cli("keys", "rotate", "--json", "--config", str(agent_config)).stdout)
    third = json.loads(cli("keys", "rotate", "--json", "--config", str(agent_config)).stdout)
    assert len({first["sig_kid"], second["sig_kid"], third["sig_kid"]}) == 3
    assert [r["sig_kid"] for r in third["retired"]] == [first["sig_kid"], second["sig_kid"]]
    assert third["retired"][0]["public_key"] == first["public_key"]
    shown = cli("keys", "show", "--config", str(agent_config)).stdout
    assert first["sig_kid"] in shown and "retired" in shown


def test_keys_show_without_a_key_says_how_to_make_one(agent_config: Path, cli: CliRunner) -> None:
    r = cli("keys", "show", "--config", str(agent_config))
    assert r.status == 69 and "keys init" in r.stderr


def test_audit_records_key_actions_and_verifies(agent_config: Path, cli: CliRunner) -> None:
    cli("keys", "init", "--config", str(agent_config))
    cli("keys", "rotate", "--config", str(agent_config))
    r = cli("audit", "verify", "--json", "--config", str(agent_config))
    assert r.status == 0
    assert json.loads(r.stdout) == {"ok": True, "rows": 2, "problems": []}


def test_run_refuses_to_start_without_a_signing_key(agent_config: Path, cli: CliRunner) -> None:
    """The daemon itself is exercised as a subprocess in tests/agent/test_daemon.py."""
    r = cli("run", "--config", str(agent_config))
    assert r.status == 69
    assert "keys init" in r.stderr


def test_outbox_status_reports_counts_without_content(agent_config: Path, cli: CliRunner) -> None:
    assert cli("outbox", "status", "--config", str(agent_config)).status == 69
    cli("keys", "init", "--config", str(agent_config))
    r = cli("outbox", "status", "--json", "--config", str(agent_config))
    assert r.status == 0
    data = json.loads(r.stdout)
    assert data["next_seq"] == 1 and data["waiting"] == 0 and len(data["stream"]) == 32
    assert data["bytes_on_disk"] > 0
    human = cli("outbox", "status", "--config", str(agent_config))
    assert "next_seq" in human.stdout


def test_usage_errors_exit_64(cli: CliRunner) -> None:
    r = cli("frobnicate")
    assert r.status == 64 and "invalid choice" in r.stderr


def test_help_exits_0_for_every_command(cli: CliRunner) -> None:
    for argv in (
        ["--help"],
        ["keys", "--help"],
        ["keys", "init", "--help"],
        ["audit", "verify", "--help"],
        ["outbox", "status", "--help"],
        ["run", "--help"],
    ):
        assert cli(*argv).status == 0, argv


def test_write_private_is_atomic_and_private(tmp_path: Path) -> None:
    from agent.fsutil import read_private, write_private

    target = tmp_path / "d" / "secret"
    write_private(target, b"one")
    write_private(target, b"two")
    assert read_private(target) == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["secret"]
