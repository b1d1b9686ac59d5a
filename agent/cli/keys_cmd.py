"""`cumulus-agent keys init|show|rotate`: the terminal's signing key, for enrolment at HQ."""

from __future__ import annotations

import argparse
from typing import Any

from agent import keys
from agent.cli.context import Context
from agent.cli.env import Environment, ExitStatus


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("keys", help="terminal signing key", parents=[common])
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, fn, text in (
        ("init", _init, "make the signing key (refuses to overwrite)"),
        ("show", _show, "print the public key (base64) and sig_kid for enrolment at HQ"),
        ("rotate", _rotate, "replace the key; the old public key stays listed as retired"),
    ):
        sp = ks.add_parser(name, help=text, parents=[common])
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(handler=fn)


def _describe(env: Environment, key: keys.TerminalKey, as_json: bool, terminal: str) -> None:
    env.err(f"enrol at HQ: cumulus-hq enroll --terminal {terminal} --pubkey {key.public_b64}")
    if as_json:
        env.json(
            {
                "terminal": terminal,
                "public_key": key.public_b64,
                "sig_kid": key.sig_kid,
                "retired": [
                    {
                        "sig_kid": r.sig_kid,
                        "public_key": r.public_key_b64,
                        "retired_at": r.retired_at,
                    }
                    for r in key.retired
                ],
            }
        )
        return
    env.out(f"terminal   {terminal}")
    env.out(f"public_key {key.public_b64}")
    env.out(f"sig_kid    {key.sig_kid}")
    for r in key.retired:
        env.out(f"retired    {r.sig_kid} {r.public_key_b64} (since {r.retired_at})")


def _init(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    key = keys.init(ctx.state_dir)
    with ctx.open_outbox() as outbox:
        outbox.audit("key-made", {"sig_kid": key.sig_kid})
    _describe(env, key, args.json, ctx.config.terminal.id)
    return ExitStatus.OK


def _show(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    _describe(env, keys.load(ctx.state_dir), args.json, ctx.config.terminal.id)
    return ExitStatus.OK


def _rotate(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    key, retired = keys.rotate(ctx.state_dir)
    with ctx.open_outbox() as outbox:
        outbox.audit("key-rotated", {"sig_kid": key.sig_kid, "retired_sig_kid": retired.sig_kid})
    _describe(env, key, args.json, ctx.config.terminal.id)
    return ExitStatus.OK
