"""`diag` and `support-bundle`: each failure produced for real, diagnosed with a remedy."""

from __future__ import annotations

import json
import os
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import keys
from agent.outbox import Outbox, SealingKeys
from tests.agent.api_rig import POS_TOKEN, free_port
from tests.agent.daemon_rig import DaemonRig
from tests.agent.hq_process import hq_serving
from tests.conftest import CliRunner
from tests.factories import HQ_URL, HqKeyPair, purchase, write_config
from tests.hq.support import make_ca

ROOT = Path(__file__).resolve().parents[2]
CARD = "2099123456786"


def diag(cli: CliRunner, cfg: Path, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    r = cli("diag", "--json", "--config", str(cfg), *extra)
    data = json.loads(r.stdout)
    return r.status, {c["check"]: c for c in data["checks"]}


@pytest.fixture
def terminal(tmp_path: Path, hq_keys: HqKeyPair) -> Path:
    cfg = write_config(tmp_path, hq_keys)
    keys.init(tmp_path / "state")
    with Outbox(tmp_path / "state" / "agent.db", None):
        pass
    return cfg


def sealer(cfg: Path, hq: HqKeyPair) -> SealingKeys:
    key = keys.load(cfg.parent / "state")
    return SealingKeys.build("0042-07", key.private, hq.kid, hq.suite, hq.public_raw)


def test_healthy_terminal_with_running_daemon_exits_0(
    tmp_path: Path, hq_keys: HqKeyPair, cli: CliRunner
) -> None:
    rig = DaemonRig(tmp_path, hq_keys)
    rig.prepare()
    rig.start()
    try:
        rig.wait_for("READY=1")
        status, checks = diag(cli, rig.config)
        assert status == 0, checks
        assert checks["daemon"]["finding"].startswith("running: readers 0/0 online")
        human = cli("diag", "--config", str(rig.config))
        assert "✓ signing key" in human.stdout and "✓ audit log" in human.stdout
    finally:
        rig.stop()


def test_key_file_mode_0644_is_a_failure_with_chmod_remedy(terminal: Path, cli: CliRunner) -> None:
    (terminal.parent / "state" / "keys" / "signing.key").chmod(0o644)
    status, checks = diag(cli, terminal)
    assert status == 2
    assert checks["signing key"]["status"] == "fail"
    assert "mode 0644" in checks["signing key"]["finding"]
    assert checks["signing key"]["remedy"].startswith("chmod 600")


def test_outbox_over_its_age_threshold_fails(
    terminal: Path, hq_keys: HqKeyPair, cli: CliRunner
) -> None:
    with Outbox(
        terminal.parent / "state" / "agent.db",
        sealer(terminal, hq_keys),
        clock=lambda: time.time() - 2 * 86400,
    ) as ob:
        ob.seal_purchase(purchase(CARD, ["7612345678900"]))
    status, checks = diag(cli, terminal)
    assert status == 2
    assert checks["outbox"]["status"] == "fail"
    assert "oldest 2.0 days" in checks["outbox"]["finding"]
    assert "HQ reachable" in checks["outbox"]["remedy"]


def test_corrupted_audit_row_fails(terminal: Path, cli: CliRunner) -> None:
    with Outbox(terminal.parent / "state" / "agent.db", None) as ob:
        ob.audit("config-loaded", {"config_sha256": "x"})
    conn = sqlite3.connect(terminal.parent / "state" / "agent.db")
    conn.execute("UPDATE audit SET detail = '{}' WHERE id = 1")
    conn.commit()
    conn.close()
    status, checks = diag(cli, terminal)
    assert status == 2
    assert checks["audit log"]["status"] == "fail"
    assert "row 1" in checks["audit log"]["finding"]
    assert "data-protection officer" in checks["audit log"]["remedy"]


def test_dead_letter_present_warns(terminal: Path, hq_keys: HqKeyPair, cli: CliRunner) -> None:
    with Outbox(terminal.parent / "state" / "agent.db", sealer(terminal, hq_keys)) as ob:
        ob.seal_purchase(purchase(CARD, ["7612345678900"]))
        ob.dead_letter(1, "signature: does not verify", bridge=True)
    status, checks = diag(cli, terminal)
    assert status >= 1
    assert checks["dead letters"]["status"] == "warn"
    assert "1 envelope(s) rejected by HQ" in checks["dead letters"]["finding"]


def test_serial_port_missing_fails(terminal: Path, cli: CliRunner) -> None:
    terminal.write_text(
        terminal.read_text() + '\n[[readers]]\nkind = "serial"\n'
        'port = "/dev/ttyCUMULUS-GONE"\nname = "lane"\n'
    )
    status, checks = diag(cli, terminal, "--level", "external")
    assert status == 2
    assert checks["reader lane"]["finding"] == "serial port /dev/ttyCUMULUS-GONE is missing"
    assert "plug the scanner in" in checks["reader lane"]["remedy"]


def test_hq_unreachable_fails(terminal: Path, cli: CliRunner) -> None:
    terminal.write_text(terminal.read_text().replace(HQ_URL, f"http://127.0.0.1:{free_port()}"))
    status, checks = diag(cli, terminal, "--level", "external")
    assert status == 2
    assert "unreachable" in checks["HQ"]["finding"]
    assert "outbox keeps everything" in checks["HQ"]["remedy"]


@pytest.fixture
def hq_tls(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with hq_serving(tmp_path / "real") as hq:
        yield hq.url, hq.ca_file


def test_hq_certificate_untrusted_fails_and_trusted_passes(
    tmp_path: Path, terminal: Path, cli: CliRunner, hq_tls: tuple[str, Path]
) -> None:
    url, real_ca = hq_tls
    other = make_ca(tmp_path / "other").ca_file
    base = terminal.read_text().replace(HQ_URL, url)
    terminal.write_text(base.replace("[hq]\n", f'[hq]\nca_file = "{other}"\n'))
    status, checks = diag(cli, terminal, "--level", "external")
    assert status == 2
    assert checks["HQ"]["finding"].startswith("certificate not trusted")
    assert "hq.ca_file" in checks["HQ"]["remedy"]
    terminal.write_text(base.replace("[hq]\n", f'[hq]\nca_file = "{real_ca}"\n'))
    status, checks = diag(cli, terminal, "--level", "external")
    assert checks["HQ"]["status"] == "ok" and checks["clock"]["status"] == "ok"
    assert checks["HQ certificate"]["status"] == "warn"  # the test CA's cert lives one day


def test_support_bundle_has_what_support_needs_and_no_secrets(
    terminal: Path, hq_keys: HqKeyPair, cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "pos-token").write_text(POS_TOKEN)
    terminal.write_text(terminal.read_text() + '\n[api]\ntoken_file = "pos-token"\n')
    with Outbox(terminal.parent / "state" / "agent.db", sealer(terminal, hq_keys)) as ob:
        ob.seal_purchase(purchase(CARD, ["7612345678900"]))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    out = tmp_path / "bundle.tar.gz"
    r = cli("support-bundle", "-o", str(out), "--config", str(terminal))
    assert r.status == 0, r.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    blob = b"".join(files.values())
    assert {
        "cumulus-support/diag.json",
        "cumulus-support/versions.json",
        "cumulus-support/config/agent.toml",
        "cumulus-support/readers.json",
    } <= set(names)
    assert CARD.encode() not in blob
    assert POS_TOKEN.encode() not in blob
    assert b"PRIVATE KEY" not in blob
    assert b"(removed)" in blob  # token_file line redacted
    versions = json.loads(files["cumulus-support/versions.json"])
    assert versions["sqlite"] and versions["openssl"] and versions["python"]
    assert json.loads(files["cumulus-support/diag.json"])["checks"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert os.path.getsize(out) > 0
