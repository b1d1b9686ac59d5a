"""`cumulus-agent run`: the daemon's entry point (systemd ExecStart).

This build validates everything the daemon needs (config, signing key with safe permissions,
an outbox that opens and migrates) and records the configuration load in the audit log; the
long-running service that follows (readers, session, local API, sync) is not part of it yet,
so it says so and exits EX_UNAVAILABLE instead of pretending to run.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from agent.cli.context import Context
from agent.cli.env import CommandError, Environment, ExitStatus


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", help="the daemon (systemd ExecStart)", parents=[common])
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    keys = ctx.sealing_keys()
    digest = hashlib.sha256(ctx.config.path.read_bytes()).hexdigest()[:16]
    with ctx.open_outbox() as outbox:
        outbox.audit("config-loaded", {"config_sha256": digest, "sig_kid": keys.sig_kid})
        status = outbox.status()
    env.err(
        f"configuration valid: terminal {ctx.config.terminal.id}, stream "
        f"{status.stream.hex()}, {status.waiting} envelope(s) waiting"
    )
    raise CommandError("the daemon service is not part of this build yet", ExitStatus.UNAVAILABLE)
