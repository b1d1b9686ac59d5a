"""`cumulus-agent outbox status`: what waits for HQ, without showing any content."""

from __future__ import annotations

import argparse
import time
from typing import Any

from agent.cli.context import Context
from agent.cli.env import Environment, ExitStatus
from agent.outbox import connect, read_status


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("outbox", help="the local outbox", parents=[common])
    o = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    s = o.add_parser(
        "status", help="stream, next seq, envelopes waiting, oldest age, bytes", parents=[common]
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(handler=_status)


def _status(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    if not ctx.db_path.exists():
        env.err(f"no outbox yet at {ctx.db_path} (it is made by 'keys init' or the daemon)")
        return ExitStatus.UNAVAILABLE
    conn = connect(ctx.db_path, readonly=True)
    try:
        st = read_status(conn, ctx.config.outbox.max_bytes)
    finally:
        conn.close()
    age = None if st.oldest_waiting_ts is None else max(0, int(time.time()) - st.oldest_waiting_ts)
    data = {
        "stream": st.stream.hex(),
        "next_seq": st.next_seq,
        "waiting": st.waiting,
        "oldest_waiting_age_s": age,
        "acked_through": st.acked_through,
        "bytes_waiting": st.unsent_bytes,
        "max_bytes": st.max_bytes,
        "dead_letters": st.dead_letters,
        "bytes_on_disk": _disk_bytes(ctx),
    }
    if args.json:
        env.json(data)
    else:
        for k, v in data.items():
            env.out(f"{k:<22}{'-' if v is None else v}")
    return ExitStatus.OK


def _disk_bytes(ctx: Context) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = ctx.db_path.with_name(ctx.db_path.name + suffix)
        if p.exists():
            total += p.stat().st_size
    return total
