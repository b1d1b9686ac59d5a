"""``cumulus-stub``: emulated reader firmware for development and tests.

A thin wrapper over the libraries (`firmware_stubs.serial_stub`); one subcommand per device:

- ``cumulus-stub serial``: a scanner on a pseudo-terminal. Prints the device path on stdout
  (the ``--link`` path when given), then sends each line read on stdin as one scan. Lines
  starting with ``!`` are commands (``!help``). Diagnostics go to stderr, card numbers masked.
  Runs until SIGINT/SIGTERM (or end of stdin with ``--exit-on-eof``).
- ``cumulus-stub card``: a contactless Cumulus card presented to pcscd's vpcd virtual reader
  until stopped (`firmware_stubs.card_cli`).

Exit status: 0 stopped normally, 1 the device could not be created, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import TextIO

from firmware_stubs import card_cli
from firmware_stubs.framing import AIM_IDS, FRAMINGS, TERMINATORS, FramingOptions
from firmware_stubs.serial_stub import FAULTS, Faults, SerialStub

_COMMANDS = """\
commands (one per line on stdin):
  CARDNUMBER        send one scan of that text (any text: test the rejects too)
  !unplug SECONDS   unplug the pty, wait, plug it in again
  !noise [N]        send N noise bytes (default 8)
  !overlong         send a 300-digit frame
  !raw HEX          send bytes as they are, e.g. !raw 02 41 03
  !framing NAME     switch framing (crlf, stx-etx, aim, magstripe, mixed)
  !help             this text"""


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cumulus-stub", description="Emulated reader firmware for development and tests."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serial = commands.add_parser(
        "serial",
        help="a barcode/magstripe scanner on a pseudo-terminal",
        description="A scanner on a pseudo-terminal: prints the device path, then sends "
        "each line typed on stdin as one scan.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serial.add_argument(
        "--link",
        metavar="PATH",
        help="keep a symlink to the device here (stable across !unplug; without it a "
        "replugged device gets a new /dev/pts name)",
    )
    serial.add_argument("--framing", choices=[*FRAMINGS, "mixed"], default="crlf")
    serial.add_argument(
        "--baud", type=int, default=9600, metavar="N", help="set on the pty (9600; not paced)"
    )
    serial.add_argument("--terminator", choices=sorted(TERMINATORS), default="crlf")
    serial.add_argument("--no-bcc", action="store_true", help="stx-etx without the BCC byte")
    serial.add_argument("--aim-id", default=AIM_IDS[0], metavar="ID", help="e.g. ]E0, ]C0")
    faults = serial.add_argument_group("faults (probability per scan, 0..1)")
    for name, text in (
        ("split", "write the frame in several pieces"),
        ("noise", "send noise bytes before the frame"),
        ("bitflip", "flip one bit of the frame"),
        ("overlong", "send a 300-digit frame before the scan"),
        ("double", "send the frame twice (scanner double read)"),
    ):
        faults.add_argument(f"--{name}", type=_probability, default=0.0, metavar="P", help=text)
    faults.add_argument("--seed", type=int, help="random seed, for reproducible faults")
    faults.add_argument(
        "--unplug-every", type=int, default=0, metavar="K", help="after every K scans, unplug"
    )
    faults.add_argument(
        "--unplug-for", type=float, default=3.0, metavar="S", help="for S seconds (3)"
    )
    serial.add_argument("--exit-on-eof", action="store_true", help="stop at the end of stdin")
    serial.set_defaults(run=_serial)

    card_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args, sys.stdin, sys.stdout, sys.stderr))


def _serial(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    try:
        options = FramingOptions(
            terminator=TERMINATORS[args.terminator], bcc=not args.no_bcc, aim_id=args.aim_id
        )
        stub = SerialStub(
            link=args.link,
            framing=args.framing,
            baud=args.baud,
            options=options,
            faults=Faults(**{name: getattr(args, name) for name in FAULTS}),
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"cumulus-stub serial: {exc}", file=stderr)
        return 2
    try:
        stub.plug()
    except OSError as exc:
        print(f"cumulus-stub serial: cannot create the device: {exc}", file=stderr)
        return 1
    try:
        return asyncio.run(_serve(stub, args, stdin, stdout, stderr))
    except KeyboardInterrupt:
        return 0
    finally:
        stub.pull()


async def _serve(
    stub: SerialStub, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_pump_lines, args=(stdin, loop, lines), daemon=True).start()

    print(stub.path, file=stdout, flush=True)
    print(
        f"cumulus-stub serial: scanner on {stub.tty} ({args.framing}, {stub.baud} baud); "
        "one card number per line, !help for commands, Ctrl-C to stop",
        file=stderr,
        flush=True,
    )
    scans = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            getting = asyncio.ensure_future(lines.get())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                getting.cancel()
                return 0
            line = getting.result()
            if line is None:
                if args.exit_on_eof:
                    return 0
                await stopping
                return 0
            line = line.rstrip("\r\n")
            if not line:
                continue
            if line.startswith("!"):
                await _command(stub, line, stderr)
                continue
            try:
                sent = await stub.scan(line)
            except ValueError as exc:
                print(f"cumulus-stub serial: {exc}", file=stderr, flush=True)
                continue
            scans += 1
            print(f"sent {sent!r}", file=stderr, flush=True)
            if args.unplug_every and scans % args.unplug_every == 0:
                await _unplug(stub, args.unplug_for, stderr)
    finally:
        stopping.cancel()


async def _command(stub: SerialStub, line: str, stderr: TextIO) -> None:
    word, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    try:
        if word == "unplug":
            await _unplug(stub, float(rest or "3"), stderr)
        elif word == "noise":
            count = int(rest or "8")
            await stub.send_raw(bytes(b"!#%&*+-@~"[i % 9] for i in range(count)))
        elif word == "overlong":
            await stub.scan("1" * 300)
        elif word == "raw":
            await stub.send_raw(bytes.fromhex(rest))
        elif word == "framing":
            if rest not in (*FRAMINGS, "mixed"):
                raise ValueError(f"unknown framing {rest!r}")
            stub.framing = rest
        elif word == "help":
            print(_COMMANDS, file=stderr, flush=True)
            return
        else:
            raise ValueError(f"unknown command !{word} (try !help)")
    except ValueError as exc:
        print(f"cumulus-stub serial: {exc}", file=stderr, flush=True)
        return
    print(f"done: !{word}", file=stderr, flush=True)


async def _unplug(stub: SerialStub, seconds: float, stderr: TextIO) -> None:
    print(f"unplugged for {seconds:g} s", file=stderr, flush=True)
    await stub.unplug(seconds)
    print(f"plugged in again: {stub.path} -> {stub.tty}", file=stderr, flush=True)


def _pump_lines(
    stdin: TextIO, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]
) -> None:
    """Blocking stdin reads live on a daemon thread: works for ttys, pipes and files alike."""
    try:
        for line in stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop already gone
        pass
    finally:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lines.put_nowait, None)
