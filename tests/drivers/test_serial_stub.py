"""The scanner stub as a library and as ``cumulus-stub serial``."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

import pytest

from drivers.events import CardRead
from drivers.serial import SerialReader
from firmware_stubs.cli import main
from firmware_stubs.framing import FramingOptions, encode
from firmware_stubs.serial_stub import Faults, SerialStub, StubUnpluggedError
from tests.drivers.helpers import CARD, CARD2, online, reading, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_link_follows_the_pty_across_unplug_and_replug(link: Path) -> None:
    stub = SerialStub(link=link)
    with stub:
        first = stub.tty
        assert os.path.realpath(link) == first
        stub.pull()
        assert not link.exists()
        assert not stub.plugged
        stub.plug()
        assert os.path.realpath(link) == stub.tty
    assert not link.exists()


async def test_sending_while_unplugged_is_an_error(link: Path) -> None:
    stub = SerialStub(link=link)
    with pytest.raises(StubUnpluggedError):
        await stub.scan(CARD)


async def test_stub_writes_exactly_the_encoded_frame(link: Path) -> None:
    options = FramingOptions(bcc=False)
    async with SerialStub(link=link, framing="stx-etx", options=options) as stub:
        sent = await stub.scan(CARD)
        assert sent.wire == encode(CARD, "stx-etx", options).wire
        assert stub.bytes_written == len(sent.wire)
        assert sent.readable


async def test_only_a_bitflip_makes_a_scan_unreadable(link: Path) -> None:
    async with SerialStub(link=link, settle=lambda: asyncio.sleep(0)) as stub:
        for faults in (["split"], ["noise"], ["overlong"], ["double"]):
            assert (await stub.scan(CARD, faults=faults)).readable
        assert not (await stub.scan(CARD, faults=["bitflip"])).readable


def test_fault_probabilities_must_be_probabilities() -> None:
    with pytest.raises(ValueError, match="bitflip"):
        Faults(bitflip=1.5)


async def test_unknown_fault_names_are_refused(link: Path) -> None:
    async with SerialStub(link=link) as stub:
        with pytest.raises(ValueError, match="unknown faults"):
            await stub.scan(CARD, faults=["gremlin"])


def test_cli_help_lists_the_framings_and_fault_switches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serial", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in (
        "--link",
        "--framing",
        "--baud",
        "magstripe",
        "--split",
        "--noise",
        "--bitflip",
        "--overlong",
        "--unplug-every",
        "!unplug",
    ):
        assert word in out


@pytest.mark.parametrize(
    "argv", [[], ["serial", "--bitflip", "2"], ["serial", "--framing", "morse"], ["card"]]
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_cli_prints_the_device_then_serves_stdin_until_eof(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{CARD}\n!noise 3\n!bogus\n!help\n"))
    assert main(["serial", "--exit-on-eof", "--framing", "aim"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("/dev/")
    assert "unknown command !bogus" in captured.err
    assert CARD not in captured.err  # masked in diagnostics


async def test_cli_sends_each_line_on_stdin_as_one_scan_to_a_reader(link: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_stubs",
        "serial",
        "--link",
        str(link),
        "--framing",
        "magstripe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        path = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        assert path == str(link)
        reads: list[CardRead] = []
        reader = SerialReader("front", path)
        async with reading(reader, reads):
            await online(reader)
            process.stdin.write(f"{CARD}\n".encode())
            await process.stdin.drain()
            await wait_until(lambda: len(reads) == 1)
            process.stdin.write(b"!unplug 0.2\n")  # bytes not yet read would die with the pty
            await process.stdin.drain()
            await wait_until(lambda: reader.stats.reconnects == 1, what="replugged")
            process.stdin.write(f"{CARD2}\n".encode())
            await process.stdin.drain()
            await wait_until(lambda: len(reads) == 2)
        assert [read.card for read in reads] == [CARD, CARD2]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), timeout=30)
    assert status == 0
    assert not await asyncio.to_thread(link.exists)
