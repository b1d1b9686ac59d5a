"""`cumulus-agent diag`: what is wrong and what to do, without any customer's data.

Exit status: 0 all good, 1 warnings, 2 failures. Works whether the daemon runs or not (the
database is read read-only; live state comes from the daemon's Unix socket when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from agent.cli.context import Context
from agent.cli.daemon_link import daemon_state
from agent.cli.env import Environment, ExitStatus
from agent.config import Config
from agent.diag import Level, run_checks
from agent.diag.checks import Finding, Status, fail, ok, systemd_state, warn
from agent.readers import ReaderDriver, build, pcsc_driver
from drivers.events import CardRead


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diag", help="health check for technicians", parents=[common])
    p.add_argument(
        "--level",
        choices=[lv.value for lv in Level],
        default="internal",
        help="internal: change nothing; external: also readers and HQ; "
        "interactive: also present a test card to each reader",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--card-timeout",
        type=float,
        default=20.0,
        help="interactive: seconds to wait for a card at each reader",
    )
    p.set_defaults(handler=_diag)


def _pcsc_names() -> list[str]:
    return pcsc_driver().list_reader_names()


def _diag(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    level = Level(args.level)
    live = daemon_state(ctx.config, env.environ)
    findings = run_checks(
        ctx.config, level, live=live, systemd_state=systemd_state(), pcsc_names=_pcsc_names
    )
    if level is Level.INTERACTIVE:
        findings += _interactive(ctx.config, live, args.card_timeout, env)
    worst = max((f.status for f in findings), default=Status.OK)
    if args.json:
        env.json(
            {
                "level": level.value,
                "status": worst.name.lower(),
                "checks": [f.to_json() for f in findings],
            }
        )
    else:
        for f in findings:
            env.out(f"{f.status.mark} {f.check}: {f.finding}")
            if f.remedy:
                env.out(f"    → {f.remedy}")
    return {
        Status.OK: ExitStatus.OK,
        Status.WARN: ExitStatus.WARNING,
        Status.FAIL: ExitStatus.FAILURE,
    }[worst]


def _interactive(config: Config, live: Any, timeout: float, env: Environment) -> list[Finding]:
    """Ask for a test card at each reader in turn; show the masked number read."""
    if live is not None:
        return [
            warn(
                "card test",
                "the daemon holds the readers",
                "present a card and watch the cashier page, or stop the agent "
                "(systemctl stop cumulus-agent) and run this again",
            )
        ]
    out = []
    for driver in build(config):
        print(
            f"Present a test card to {driver.name} (waiting {timeout:.0f} s) …",
            file=sys.stderr,
            flush=True,
        )
        read = asyncio.run(_one_read(driver, timeout))
        if read is None:
            out.append(
                fail(
                    f"card test {driver.name}",
                    f"no card read in {timeout:.0f} s",
                    "check the reader's statistics: cumulus-agent readers list",
                )
            )
        else:
            out.append(ok(f"card test {driver.name}", f"read {read.masked} ({read.source})"))
    return out


async def _one_read(driver: ReaderDriver, timeout: float) -> CardRead | None:
    got: asyncio.Future[CardRead] = asyncio.get_running_loop().create_future()

    def emit(read: CardRead) -> None:
        if not got.done():
            got.set_result(read)

    task = asyncio.create_task(driver.run(emit))
    try:
        return await asyncio.wait_for(asyncio.shield(got), timeout)
    except TimeoutError:
        return None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
