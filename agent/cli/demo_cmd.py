"""`cumulus-agent demo`: everything on one machine with no hardware (see agent/demo.py)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.env import Environment


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", help="run the local demo (no hardware, no config needed)")
    p.add_argument(
        "--script",
        type=int,
        default=0,
        metavar="N",
        help="run N transactions unattended, then stop",
    )
    p.add_argument("--dir", help="where to put the demo's state (default: a new temp dir)")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, env: Environment) -> int:
    from agent import demo

    argv = ["--script", str(args.script)] + (["--dir", args.dir] if args.dir else [])
    return demo.main(argv)
