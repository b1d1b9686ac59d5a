"""`readers watch --pcsc`, `readers list` and `diag` against a real pcscd, vpcd and the
card stub (run serially: one pcscd per host)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.drivers.pcsc_rig import CardFactory, Pcscd

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[2]
CARD, CARD2 = "2099123456786", "2099000000019"
R0, R1 = "Virtual PCD 00 00", "Virtual PCD 00 01"


async def start_watch(*extra: str, count: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli.main",
        "readers",
        "watch",
        "--pcsc",
        "--json",
        "--count",
        str(count),
        "--seconds",
        "60",
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "CUMULUS_AGENT_CONFIG": "/nonexistent/agent.toml"},
    )


async def next_read(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line, "watch ended without a read"
    return dict(json.loads(line))


async def test_watch_pcsc_prints_each_read_attributed_to_its_reader(
    pcscd: Pcscd,
    vpcd_card: CardFactory,
) -> None:
    proc = await start_watch(count=2)
    await asyncio.sleep(1.0)  # the watcher lists the readers
    vpcd_card(CARD, slot=0).present()
    first = await next_read(proc)
    vpcd_card(CARD2, slot=1).present()
    second = await next_read(proc)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert (first["reader"], first["card"], first["source"]) == (R0, "2099*******86", "pcsc")
    assert (second["reader"], second["card"]) == (R1, "2099*******19")
    assert CARD not in (out + err).decode()


async def test_pcscd_killed_and_restarted_during_watch_then_the_next_card_is_read(
    pcscd: Pcscd,
    vpcd_card: CardFactory,
) -> None:
    proc = await start_watch(count=2)
    await asyncio.sleep(1.0)
    held = vpcd_card(CARD, slot=0)
    held.present()
    assert (await next_read(proc))["card"] == "2099*******86"
    await held.remove()
    pcscd.kill()
    await asyncio.sleep(1.5)  # the watcher is offline, retrying quietly
    pcscd.start()
    await asyncio.sleep(1.0)
    vpcd_card(CARD2, slot=1).present()
    assert (await next_read(proc))["card"] == "2099*******19"
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert proc.returncode == 0, text
    assert text.count("pcscd unavailable") == 1, text  # one warning per outage
    assert "Traceback" not in text
    stats = json.loads(text.strip().splitlines()[-1])["stats"]
    pcsc = next(v for k, v in stats.items() if k.startswith("pcsc:"))
    assert pcsc["outages"] == 1  # (a stopped watcher reports offline: no state check here)


def test_readers_list_shows_the_pcsc_readers(
    pcscd: Pcscd,
    cli: CliRunner,
    agent_config: Path,
) -> None:
    agent_config.write_text(
        agent_config.read_text() + '\n[[readers]]\nkind = "pcsc"\nname = "Virtual PCD*"\n'
    )
    r = cli("readers", "list", "--json", "--config", str(agent_config))
    data = json.loads(r.stdout)
    assert data["pcsc"]["available"] is True
    assert {R0, R1} <= set(data["pcsc"]["readers"])
    assert data["configured"][0]["matches"] == [R0, R1]


def test_diag_fails_with_remedy_when_pcscd_is_stopped(
    pcscd: Pcscd,
    cli: CliRunner,
    agent_config: Path,
) -> None:
    agent_config.write_text(
        agent_config.read_text() + '\n[[readers]]\nkind = "pcsc"\nname = "Virtual PCD*"\n'
    )
    args = ("diag", "--json", "--level", "external", "--config", str(agent_config))
    checks = {c["check"]: c for c in json.loads(cli(*args).stdout)["checks"]}
    assert checks["reader pcsc:Virtual PCD*"]["status"] == "ok"
    pcscd.stop()
    try:
        r = cli(*args)
        checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
        finding = checks["reader pcsc:Virtual PCD*"]
        assert r.status == 2 and finding["status"] == "fail"
        assert finding["remedy"] == "pcscd is not running: systemctl start pcscd"
    finally:
        pcscd.start()
