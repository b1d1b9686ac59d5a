"""`cumulus-agent readers watch|list` over a real pty, with and without a config."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from firmware_stubs.serial_stub import SerialStub
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]
CARDS = ["2099123456786", "2099000000019", "2099555555552"]


async def test_watch_json_prints_each_valid_read_masked_without_a_config(tmp_path: Path) -> None:
    with SerialStub(framing="crlf") as stub:
        port = stub.path
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.cli.main",
            "readers",
            "watch",
            "--serial",
            stub.path,
            "--json",
            "--count",
            "3",
            "--seconds",
            "30",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "CUMULUS_AGENT_CONFIG": str(tmp_path / "absent")},
        )
        await asyncio.sleep(1.0)  # let it open the port (bytes before open are flushed)
        await stub.scan("12345")  # not a card: rejected, never printed
        for card in CARDS:
            await stub.scan(card)
            await asyncio.sleep(0.05)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    reads = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["card"] for r in reads] == ["2099*******86", "2099*******19", "2099*******52"]
    assert {r["source"] for r in reads} == {"serial"}
    assert all(r["reader"] == port and r["at"].endswith("Z") for r in reads)
    stats = json.loads(err.decode().strip().splitlines()[-1])["stats"][port]
    assert stats["good_reads"] == 3 and sum(stats["rejects"].values()) >= 1
    assert "2099123456786" not in out.decode() + err.decode()


def test_watch_without_anything_to_watch_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("readers", "watch", environ={"CUMULUS_AGENT_CONFIG": str(tmp_path / "absent")})
    assert r.status == 64 and "--serial PORT" in r.stderr


def test_list_works_without_a_config_and_matches_configured_readers(
    cli: CliRunner, tmp_path: Path, agent_config: Path
) -> None:
    r = cli("readers", "list", "--json", environ={"CUMULUS_AGENT_CONFIG": str(tmp_path / "x")})
    assert r.status == 0
    data = json.loads(r.stdout)
    assert "serial_ports" in data and data["configured"] == []
    with SerialStub() as stub:
        port = stub.path
        text = agent_config.read_text() + (
            f'\n[[readers]]\nkind = "serial"\nport = "{stub.path}"\n'
            '\n[[readers]]\nkind = "serial"\nport = "/dev/ttyNOPE9"\n'
        )
        agent_config.write_text(text)
        r = cli("readers", "list", "--json", "--config", str(agent_config))
    configured = json.loads(r.stdout)["configured"]
    assert [(c["name"], c["present"]) for c in configured] == [
        (port, True),
        ("/dev/ttyNOPE9", False),
    ]
    human = cli("readers", "list", "--config", str(agent_config))
    assert "✗ serial /dev/ttyNOPE9" in human.stdout


async def test_watch_json_over_1000_faulty_mixed_scans_reports_exactly_the_valid_ones(
    tmp_path: Path,
) -> None:
    """The stub sends 1,000 scans in mixed framings with every fault on (and two unplugs);
    `readers watch --json`'s output lists exactly the valid ones, in order, once each."""
    import io

    from agent.cli.readers_cmd import printer
    from drivers.serial import SerialReader
    from tests.drivers.helpers import Settler, card_number, online, wait_until
    from tests.drivers.test_end_to_end import FAULTY  # the same fault mix as the driver tests

    out = io.StringIO()
    sent = []
    settler = Settler()
    async with SerialStub(
        link=tmp_path / "scanner", framing="mixed", faults=FAULTY, seed=7, settle=settler
    ) as stub:
        reader = SerialReader(str(tmp_path / "scanner"), stub.path, framing="auto", gap_s=0.02)
        settler.reader, settler.stub = reader, stub
        task = asyncio.create_task(reader.run(printer(True, False, out)))
        try:
            await online(reader)
            for n in range(1000):
                if n in (400, 800):
                    await settler()
                    wanted = reader.stats.reconnects + 1
                    await stub.unplug(0.2)
                    await wait_until(lambda w=wanted: reader.stats.reconnects == w)
                sent.append(await stub.scan(card_number(n)))
            await settler()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = [s.payload for s in sent if s.readable]
    masked = [c[:4] + "*******" + c[-2:] for c in expected]
    assert [r["card"] for r in lines] == masked  # in order, none twice, none invented
    assert len(expected) < 1000  # the faults really destroyed some
    assert {s.framing for s in sent} == {"crlf", "stx-etx", "aim", "magstripe"}
