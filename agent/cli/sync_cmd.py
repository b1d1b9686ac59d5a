"""`cumulus-agent sync`: send what waits to HQ now, with a progress bar on a terminal."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from agent.cli.context import Context
from agent.cli.env import Environment, ExitStatus
from agent.outbox import AsyncOutbox
from agent.sync import SyncClient, SyncState


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sync", help="sync the outbox to HQ now", parents=[common])
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    keys = ctx.sealing_keys()  # rejected envelopes are bridged by a signed purge envelope
    state, waiting = asyncio.run(_drain(ctx, keys, args.timeout, env, args.json))
    if args.json:
        env.json({**state.to_json(), "waiting": waiting})
    else:
        mark = "✓" if state.last_error is None and waiting == 0 else "✗"
        env.out(
            f"{mark} sent {state.sent_envelopes} envelope(s); acked_through "
            f"{state.acked_through}; {waiting} waiting; dead letters {state.dead_lettered}"
        )
        if state.last_error:
            env.out(f"  last error: {state.last_error}")
        if state.skew_warning:
            env.out(f"  ⚠ clock differs from HQ by {state.clock_skew_s:.0f} s")
    if state.fatal or state.last_error:
        return ExitStatus.UNAVAILABLE
    return ExitStatus.OK


async def _drain(
    ctx: Context, keys: Any, request_timeout: float, env: Environment, quiet: bool
) -> tuple[SyncState, int]:
    hq = ctx.config.hq
    outbox = await AsyncOutbox.open(ctx.db_path, keys, max_bytes=ctx.config.outbox.max_bytes)
    try:
        show = env.stdout_isatty and not quiet

        def progress(done: int, total: int) -> None:
            if show and total:
                width = 30
                filled = width * done // total
                bar = "#" * filled + "-" * (width - filled)
                print(f"\r[{bar}] {done}/{total}", end="", file=env.stdout, flush=True)

        async with SyncClient(
            outbox,
            ctx.config.terminal.id,
            hq.url,
            ca_file=hq.ca_file,
            total_timeout=request_timeout,
        ) as client:
            state = await client.drain(progress)
        if show:
            print(file=env.stdout)
        return state, (await outbox.status()).waiting
    finally:
        await outbox.close()
