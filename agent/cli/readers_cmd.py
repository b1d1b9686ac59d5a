"""`cumulus-agent readers list|watch`: a technician's bench tools, with or without a config.

`list` shows the serial ports (with their stable /dev/serial/by-id names) and PC/SC readers
present, matched against the configured readers, with each configured reader's statistics
from the running daemon when there is one. `watch` opens readers itself and prints each card
read, one line each (masked unless `--unmask`), and the statistics when stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agent import config as config_mod
from agent.cli.context import Context
from agent.cli.daemon_link import daemon_state
from agent.cli.env import CommandError, Environment, ExitStatus
from agent.config import Config, PcscReaderConfig, SerialReaderConfig
from agent.readers import ReaderDriver, SerialDriver, pcsc_driver
from drivers.events import CardRead
from drivers.serial import SerialReader

BY_ID = Path("/dev/serial/by-id")
FRAMINGS = ("auto", "crlf", "stx-etx", "aim", "magstripe")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("readers", help="card readers: list and watch", parents=[common])
    rs = p.add_subparsers(dest="readers_command", metavar="ACTION", required=True)
    ls = rs.add_parser(
        "list", help="serial ports and PC/SC readers, and the configured ones", parents=[common]
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=_list)
    w = rs.add_parser("watch", help="print each card read (Ctrl-C to stop)", parents=[common])
    w.add_argument(
        "--serial",
        action="append",
        metavar="PORT",
        default=[],
        help="a serial port to open (repeatable)",
    )
    w.add_argument("--framing", choices=FRAMINGS, default="auto")
    w.add_argument("--baud", type=int, default=9600)
    w.add_argument(
        "--pcsc",
        nargs="?",
        const="*",
        metavar="NAME",
        help="PC/SC readers matching NAME (a glob, default all)",
    )
    w.add_argument("--json", action="store_true", help="one JSON object per read")
    w.add_argument("--unmask", action="store_true", help="show full card numbers")
    w.add_argument("--count", type=int, default=0, help="stop after N reads (0: never)")
    w.add_argument("--seconds", type=float, default=0.0, help="stop after S seconds (0: never)")
    w.set_defaults(handler=_watch)


def _optional_config(env: Environment, explicit: str | None) -> Config | None:
    """These tools work without a config; a config that is given must still be valid."""
    path = config_mod.config_path(explicit, env.environ)
    if explicit is None and not path.exists():
        return None
    return Context.load(env, explicit).config


# --- list -------------------------------------------------------------------------------------


def serial_ports() -> list[dict[str, Any]]:
    from serial.tools import list_ports

    by_id: dict[str, str] = {}
    if BY_ID.is_dir():
        for link in BY_ID.iterdir():
            with contextlib.suppress(OSError):
                by_id[os.path.realpath(link)] = str(link)
    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        out.append(
            {
                "device": p.device,
                "by_id": by_id.get(os.path.realpath(p.device)),
                "description": p.description if p.description != "n/a" else None,
                "hwid": p.hwid if p.hwid != "n/a" else None,
            }
        )
    return out


def pcsc_readers() -> dict[str, Any]:
    try:
        names = pcsc_driver().list_reader_names()
    except Exception as exc:  # pcscd absent, pyscard missing: say so, do not fail the list
        return {"available": False, "error": str(exc), "readers": []}
    return {"available": True, "error": None, "readers": names}


def _list(args: argparse.Namespace, env: Environment) -> int:
    cfg = _optional_config(env, args.config)
    ports = serial_ports()
    pcsc = pcsc_readers()
    live = daemon_state(cfg, env.environ) if cfg else None
    configured = []
    for r in cfg.readers if cfg else ():
        entry: dict[str, Any] = {"kind": r.kind, "name": r.name}
        if isinstance(r, SerialReaderConfig):
            # the device node (or its by-id link) exists exactly while the scanner is plugged
            entry |= {"port": r.port, "framing": r.framing, "present": os.path.exists(r.port)}
        elif isinstance(r, PcscReaderConfig):
            entry["matches"] = [n for n in pcsc["readers"] if fnmatch.fnmatchcase(n, r.name)]
            entry["present"] = bool(entry["matches"])
        if live is not None:
            entry["stats"] = {
                k: v
                for k, v in live.get("readers", {}).items()
                if k == entry["name"] or k in entry.get("matches", [])
            }
        configured.append(entry)
    data = {
        "serial_ports": ports,
        "pcsc": pcsc,
        "configured": configured,
        "daemon_running": live is not None,
    }
    if args.json:
        env.json(data)
        return ExitStatus.OK
    env.out("Serial ports:")
    for p in ports or [{"device": "(none)", "by_id": None, "description": None}]:
        env.out(f"  {p['device']:<16} {p['by_id'] or ''} {p['description'] or ''}".rstrip())
    env.out("PC/SC readers:" + ("" if pcsc["available"] else f" unavailable ({pcsc['error']})"))
    for n in pcsc["readers"]:
        env.out(f"  {n}")
    if cfg is not None:
        env.out("Configured:")
        for c in configured:
            mark = "✓" if c["present"] else "✗"
            env.out(f"  {mark} {c['kind']:<6} {c['name']}")
            for name, st in c.get("stats", {}).items():
                env.out(
                    f"      {name}: {st.get('state')}, {st.get('good_reads')} reads, "
                    f"rejects {st.get('rejects')}"
                )
    return ExitStatus.OK


# --- watch ------------------------------------------------------------------------------------


def _drivers(args: argparse.Namespace, cfg: Config | None) -> list[ReaderDriver]:
    prefixes = cfg.cards.prefixes if cfg else ("2099",)
    drivers: list[ReaderDriver] = [
        SerialDriver(SerialReader(port, port, args.baud, args.framing, prefixes))
        for port in args.serial
    ]
    if args.pcsc is not None:
        drivers.append(pcsc_driver().from_config(PcscReaderConfig(args.pcsc), prefixes))
    if not drivers and cfg is not None:
        from agent.readers import build

        drivers = build(cfg)
    if not drivers:
        raise CommandError(
            "nothing to watch: give --serial PORT and/or --pcsc [NAME], "
            "or a config with [[readers]]",
            ExitStatus.USAGE,
        )
    return drivers


def _watch(args: argparse.Namespace, env: Environment) -> int:
    cfg = _optional_config(env, args.config)
    drivers = _drivers(args, cfg)
    try:
        asyncio.run(_watch_async(drivers, args, env))
    except KeyboardInterrupt:
        pass
    stats = {k: v for d in drivers for k, v in d.snapshots().items()}
    if args.json:
        print(json.dumps({"stats": stats}, sort_keys=True), file=env.stderr)
    else:
        for name, st in stats.items():
            env.err(
                f"{name}: {st.get('state')}, {st.get('good_reads')} reads, rejects "
                f"{st.get('rejects')}, reconnects {st.get('reconnects')}"
            )
    return ExitStatus.OK


def printer(as_json: bool, unmask: bool, out: TextIO) -> Callable[[CardRead], None]:
    """One line per read: JSON (`reader`, `source`, `card`, `at`, `symbology`) or text."""

    def emit(read: CardRead) -> None:
        if as_json:
            print(json.dumps(read.to_json(unmask=unmask)), file=out, flush=True)
        else:
            card = read.card if unmask else read.masked
            sym = f" {read.symbology}" if read.symbology else ""
            print(
                f"{read.at.isoformat(timespec='milliseconds')} {read.source:<6} "
                f"{read.reader}: {card}{sym}",
                file=out,
                flush=True,
            )

    return emit


async def _watch_async(
    drivers: list[ReaderDriver], args: argparse.Namespace, env: Environment
) -> None:
    done = asyncio.Event()
    seen = 0
    show = printer(args.json, args.unmask, env.stdout)

    def emit(read: CardRead) -> None:
        nonlocal seen
        show(read)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    tasks = [asyncio.create_task(d.run(emit)) for d in drivers]
    try:
        if args.seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), args.seconds)
        else:
            await done.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
