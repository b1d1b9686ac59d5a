"""`cumulus-agent audit verify`: check the local hash-chained audit log."""

from __future__ import annotations

import argparse
from typing import Any

from agent import audit
from agent.cli.context import Context
from agent.cli.env import Environment, ExitStatus
from agent.outbox import connect


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="the local audit log", parents=[common])
    a = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = a.add_parser(
        "verify", help="verify the hash chain (edited, deleted, reordered rows)", parents=[common]
    )
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    if not ctx.db_path.exists():
        report = audit.AuditReport(0)
    else:
        conn = connect(ctx.db_path, readonly=True)
        try:
            report = audit.verify(conn)
        finally:
            conn.close()
    if args.json:
        env.json(report.to_json())
    else:
        mark = "✓" if report.ok else "✗"
        env.out(
            f"{mark} audit log: {report.rows} rows, "
            f"{'chain intact' if report.ok else f'{len(report.problems)} problem(s)'}"
        )
        for p in report.problems:
            where = f"row {p.row_id}" if p.row_id is not None else "chain"
            env.out(f"  {where}: {p.problem}")
    return ExitStatus.OK if report.ok else ExitStatus.DATAERR
