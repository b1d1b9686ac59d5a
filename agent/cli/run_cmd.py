"""`cumulus-agent run`: the daemon (systemd ExecStart). See agent/service.py."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from agent import keys
from agent.cli.context import Context
from agent.cli.env import Environment


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", help="the daemon (systemd ExecStart)", parents=[common])
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    keys.load(ctx.state_dir)  # fail fast, before anything listens, with the key's own message
    logging.basicConfig(
        level=args.log_level,
        stream=env.stderr if env.stderr is not sys.stderr else sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",  # journald adds time and unit
    )
    from agent import service

    return service.run(ctx.config, env.environ)
