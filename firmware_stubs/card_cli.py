"""``cumulus-stub card``: a contactless Cumulus card presented to vpcd until stopped.

A thin wrapper over `firmware_stubs.vpcd_card.VirtualCard`. `register` adds the ``card``
subcommand to ``cumulus-stub``'s subparsers (`firmware_stubs.cli`); `main` runs it on its own
(``python -m firmware_stubs.card_cli --number N``).

Output: one line on stdout each time the card is presented to vpcd (``presented <masked> to
HOST:PORT``; again after pcscd restarts), diagnostics on stderr; card numbers masked. Runs until
SIGINT/SIGTERM. The number is presented even if it breaks the card rules (to try rejects), with
a note on stderr.

Exit status: 0 stopped normally, 2 usage error. (An unreachable vpcd is not an error: the card
waits for it, as a card lying on a reader waits for the reader to be switched on.)

``--die-on select|read`` is fault injection for tests: the process SIGKILLs itself when that
command arrives, i.e. the card stub dies mid-exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import TextIO

from drivers.cards import check_card, mask
from firmware_stubs.vpcd_card import DEFAULT_UID, VPCD_PORTS, VirtualCard


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _uid(text: str) -> bytes:
    try:
        uid = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--uid must be hex, not {text!r}") from None
    if not 4 <= len(uid) <= 10:
        raise argparse.ArgumentTypeError("--uid must be 4 to 10 bytes (ISO 14443 UIDs)")
    return uid


def _number(text: str) -> str:
    if not text or len(text) > 255 or not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError("--number must be 1-255 printable ASCII characters")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--number",
        required=True,
        type=_number,
        metavar="N",
        help="the card number the applet returns",
    )
    parser.add_argument(
        "--vpcd",
        type=_host_port,
        default=("127.0.0.1", VPCD_PORTS[0]),
        metavar="HOST:PORT",
        help=f"vpcd slot to present to (default 127.0.0.1:{VPCD_PORTS[0]}, "
        f"reader 'Virtual PCD 00 00'; {VPCD_PORTS[1]} is 'Virtual PCD 00 01')",
    )
    parser.add_argument(
        "--not-cumulus",
        action="store_true",
        help="a card without the Cumulus applet (answers SELECT with 6A 82)",
    )
    parser.add_argument(
        "--uid",
        type=_uid,
        default=DEFAULT_UID,
        metavar="HEX",
        help=f"answer to GET UID (FF CA 00 00), default {DEFAULT_UID.hex()}",
    )
    parser.add_argument("--die-on", choices=("select", "read"), help=argparse.SUPPRESS)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``card`` subcommand to an argparse subparsers object; returns its parser.
    The parsed namespace's ``run(args, stdin, stdout, stderr) -> int`` runs it."""
    parser = subparsers.add_parser(
        "card",
        help="a contactless Cumulus card presented to vpcd (pcscd's virtual reader)",
        description="A contactless Cumulus card presented to the vpcd virtual reader of "
        "pcscd until stopped; reconnects when pcscd restarts.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cumulus-stub card",
        description="A contactless Cumulus card presented to vpcd until stopped.",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: the ``card`` options without the subcommand word."""
    args = build_parser().parse_args(argv)
    return run(args, sys.stdin, sys.stdout, sys.stderr)


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    reason = check_card(args.number)
    if reason is not None:
        print(
            f"cumulus-stub card: note: {mask(args.number)} is not a Cumulus card number "
            f"({reason}); presenting it anyway",
            file=stderr,
            flush=True,
        )
    try:
        return asyncio.run(_serve(args, stdout, stderr))
    except KeyboardInterrupt:
        return 0


async def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    host, port = args.vpcd
    die_on = args.die_on

    def on_command(command: bytes) -> None:
        if die_on is not None and command[:2] == (
            b"\x00\xa4" if die_on == "select" else b"\x80\xca"
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    card = VirtualCard(
        args.number,
        host=host,
        port=port,
        applet=not args.not_cumulus,
        uid=args.uid,
        on_command=on_command,
    )
    print(
        f"cumulus-stub card: presenting {mask(args.number)} to vpcd at {host}:{port} "
        "(waits for pcscd if needed); Ctrl-C to stop",
        file=stderr,
        flush=True,
    )
    card.present()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            connected = asyncio.ensure_future(card.wait_connected())
            await asyncio.wait({connected, stopping}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if stop.is_set():
                break
            print(f"presented {mask(args.number)} to {host}:{port}", file=stdout, flush=True)
            gone = asyncio.ensure_future(card.wait_gone())
            await asyncio.wait({gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not stop.is_set():
                print(
                    "cumulus-stub card: vpcd dropped the card; presenting again",
                    file=stderr,
                    flush=True,
                )
    finally:
        stopping.cancel()
        await card.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
