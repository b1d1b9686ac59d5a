"""`cumulus-hq`: the parser, and the one place where failures become exit statuses.

Thin wrappers over the library (sqlite-utils' habit): `hq.keys`, `hq.storage`,
`hq.server.HqServer`, `hq.reader`, `hq.retention`, `hq.export`, `hq.stats`. `main()` runs
in-process for tests; `serve` takes a `shutdown_trigger` so a test can stop it without
signals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hq.cli import data, ingest, keys
from hq.cli.common import CliError, ExitStatus, common_options, db_options
from hq.cli.ingest import ShutdownTrigger


def build_parser() -> argparse.ArgumentParser:
    common, db = common_options(), db_options()
    parser = argparse.ArgumentParser(prog="cumulus-hq", description="Cumulus HQ receiver.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    keys.register(sub, common, db)
    ingest.register(sub, common, db)
    data.register(sub, common, db)
    return parser


def main(
    argv: Sequence[str] | None = None, *, shutdown_trigger: ShutdownTrigger | None = None
) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.handler is ingest.serve:
            return int(ingest.serve(args, shutdown_trigger))
        return int(args.handler(args))
    except CliError as exc:
        print(f"cumulus-hq: {exc}", file=sys.stderr)
        return int(exc.status)


__all__ = ["ExitStatus", "build_parser", "main"]
