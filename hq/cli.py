"""`cumulus-hq`: the reference headquarters receiver's commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.envelope.suites import SUITE_NAMES, X25519_SUITE
from hq import keys


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keys, registry, default database ($CUMULUS_HQ_STATE or ./hq-state)",
    )
    parser = argparse.ArgumentParser(prog="cumulus-hq", description="Cumulus HQ receiver.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    k = sub.add_parser("keys", help="HPKE key pairs of the reader tier", parents=[common])
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    ki = ks.add_parser(
        "init", help="make an HPKE key pair; print the public part", parents=[common]
    )
    ki.add_argument("--kid", required=True, help="key id, e.g. hq-2026a")
    ki.add_argument("--suite", default=X25519_SUITE, choices=SUITE_NAMES)
    ki.set_defaults(handler=_keys_init)
    return parser


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CUMULUS_HQ_STATE") or "./hq-state")


def _keys_init(args: argparse.Namespace) -> int:
    try:
        key = keys.init(state_dir(args), args.kid, args.suite)
    except (FileExistsError, ValueError) as exc:
        print(f"cumulus-hq: {exc}", file=sys.stderr)
        return 73
    print(key.public_b64)
    print(
        f'terminals\' agent.toml: [hq] enc_kid = "{key.kid}", enc_suite = "{key.suite}", '
        "enc_public_key = the line above",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
