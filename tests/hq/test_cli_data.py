"""`cumulus-hq reader run | retention run | export | stats | audit`, in-process, both backends."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from hq.cli import main
from hq.ingest import ingest
from hq.storage import open_storage
from tests.factories import HqKeyPair
from tests.hq.support import SealingTerminal, install_hq_key

CARD = "2099123456786"
DAY = 86_400
YEAR = 365 * DAY


@pytest.fixture
def state(tmp_path: Path, hq_keys: HqKeyPair, db_url: str) -> Path:
    """HQ holding 12 households' purchases last week, and CARD's six years ago."""
    state = tmp_path / "hq-state"
    install_hq_key(state, hq_keys)
    now = time.time()
    clock = [now - 6 * YEAR]  # the terminal seals when the purchase occurs
    t = SealingTerminal.create(tmp_path / "t.db", hq_keys, clock=lambda: clock[0])
    t.seal(card=CARD, at=clock[0])
    clock[0] = now - 7 * DAY
    t.seal(card=CARD, at=clock[0])
    t.seal(11, at=clock[0])
    with open_storage(db_url, state) as s:
        s.enroll(t.terminal, t.public_raw)
        assert ingest(s, t.bodies()).update.rejections == ()
    t.close()
    return state


def cli(state: Path, db_url: str, *argv: str) -> int:
    return main([*argv, "--state-dir", str(state), "--db", db_url])


def test_reader_then_retention_then_audit(
    state: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(state, db_url, "reader", "run", "--json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["stored"] == 13
    assert "1 stored unlinked" in out.err and CARD not in out.err

    assert cli(state, db_url, "retention", "run", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["counts"]["envelopes_deleted"] == 1
    assert dry["policy"] == {"purchase_link": "5y", "accounting": "10y", "envelopes": "5y"}
    assert cli(state, db_url, "retention", "run") == 0
    assert "envelopes deleted" in capsys.readouterr().out
    assert cli(state, db_url, "retention", "run", "--json") == 0
    assert set(json.loads(capsys.readouterr().out)["counts"].values()) == {0}

    assert cli(state, db_url, "audit", "--json") == 0
    log = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in log] == [
        "reader.run",
        "retention.dry-run",
        "retention.run",
        "retention.run",
    ]
    assert log[2]["detail"]["counts"]["envelopes_deleted"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--envelopes", "6y"], "longer than the card link"),
        (["--accounting", "ten years"], "--accounting"),
    ],
)
def test_retention_refuses_periods_that_break_the_promises(
    state: Path, db_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli(state, db_url, "retention", "run", *argv) == 2
    assert message in capsys.readouterr().err


def test_export_as_html_to_a_private_file_and_audited_masked(
    state: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "report.html"
    assert cli(state, db_url, "export", "--card", CARD, "--format", "html", "-o", str(target)) == 0
    page = target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "1 purchase" in page and "2099*******86" in page
    assert capsys.readouterr().out == ""
    assert cli(state, db_url, "export", "--card", CARD) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1  # six years ago: not exported
    assert cli(state, db_url, "audit", "--action", "export", "--json") == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["detail"]["card"] for e in entries] == ["2099*******86"] * 2
    assert [e["detail"]["format"] for e in entries] == ["html", "json"]


def test_stats_show_only_groups_of_at_least_k_households(
    state: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(state, db_url, "reader", "run") == 0
    assert cli(state, db_url, "stats", "--by", "store", "--k", "12", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(g["store"], g["households"], g["purchases"]) for g in doc["groups"]] == [
        ("0042", 12, 12)  # last year only: the purchase of six years ago is outside
    ]
    assert cli(state, db_url, "stats", "--by", "store", "--k", "13", "--json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["groups"] == [] and "1 below k=13" in out.err
    assert cli(state, db_url, "stats", "--k", "5") == 2
    assert "single people out" in capsys.readouterr().err
    assert cli(state, db_url, "stats", "--by", "store,nope") == 2


def test_data_commands_need_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["reader", "run"], ["retention", "run"], ["stats"], ["audit"]):
        assert main([*argv, "--state-dir", str(tmp_path / "none")]) == 66
        assert "no HQ database" in capsys.readouterr().err
