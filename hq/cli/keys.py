"""`cumulus-hq keys …`: HPKE key pairs, the signing key, the published keyset, retirement.

Rotation, in commands (docs/hq.md, "Key rotation"): `keys init --kid NEW`, then
`keys sign-keyset --current NEW --also OLD` (terminals switch as they fetch `GET /v1/keys`),
later `keys sign-keyset --current NEW` (OLD no longer offered, still read), and once
retention has deleted every envelope sealed to OLD, `keys retire --kid OLD`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

from agent.envelope import cbor
from agent.envelope.suites import SUITE_NAMES, X25519_SUITE
from agent.fsutil import UnsafePermissions
from hq import keys
from hq.cli.common import (
    CliError,
    ExitStatus,
    actor,
    json_option,
    open_store,
    print_json,
    state_dir,
)
from hq.keyset import KeysetError
from hq.periods import PeriodError, parse_period
from hq.storage import StorageError, parse_db


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    db: argparse.ArgumentParser,
) -> None:
    k = sub.add_parser(
        "keys", help="HQ keys: HPKE key pairs, signing key, keyset", parents=[common]
    )
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    ki = ks.add_parser(
        "init", help="make an HPKE key pair; print the public part", parents=[common]
    )
    ki.add_argument("--kid", required=True, help="key id, e.g. hq-2026a")
    ki.add_argument("--suite", default=X25519_SUITE, choices=SUITE_NAMES)
    ki.set_defaults(handler=init)

    kl = ks.add_parser(
        "list", help="HPKE keys, whether the keyset offers them, envelopes sealed to them",
        parents=[common, db, json_option()],
    )  # fmt: skip
    kl.set_defaults(handler=list_keys)

    sg = ks.add_parser(
        "signing-init", help="make the HQ signing key; print its public part (to pin)",
        parents=[common],
    )  # fmt: skip
    sg.set_defaults(handler=signing_init)

    sk = ks.add_parser(
        "sign-keyset", help="sign and publish the keyset served as GET /v1/keys", parents=[common]
    )
    sk.add_argument("--current", required=True, metavar="KID", help="the key to seal to now")
    sk.add_argument(
        "--also", action="append", default=[], metavar="KID",
        help="another key terminals may still seal to (repeatable)",
    )  # fmt: skip
    sk.add_argument(
        "--valid-for", default="90d", metavar="PERIOD",
        help="how long terminals accept this keyset (default 90d)",
    )  # fmt: skip
    sk.set_defaults(handler=sign_keyset)

    kr = ks.add_parser(
        "retire", help="delete a private key no stored envelope needs any more",
        parents=[common, db],
    )  # fmt: skip
    kr.add_argument("--kid", required=True)
    kr.set_defaults(handler=retire)


def init(args: argparse.Namespace) -> ExitStatus:
    try:
        key = keys.init(state_dir(args), args.kid, args.suite)
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc), ExitStatus.CANTCREAT) from None
    print(key.public_b64)
    print(
        f'terminals\' agent.toml: [hq] enc_kid = "{key.kid}", enc_suite = "{key.suite}", '
        "enc_public_key = the line above (or publish it: cumulus-hq keys sign-keyset)",
        file=sys.stderr,
    )
    return ExitStatus.OK


def _offered(state: Path) -> tuple[str | None, set[str]]:
    """The published keyset's current kid and every kid it offers (read, not verified:
    this is HQ's own file)."""
    data = keys.published_keyset(state)
    if data is None:
        return None, set()
    raw = cbor.loads(data, what="keyset")
    return str(raw["current"]), {str(k["kid"]) for k in raw["keys"]}


def _envelope_counts(args: argparse.Namespace) -> dict[str, int] | None:
    target = parse_db(args.db, state_dir(args))
    if target.path is not None and not target.path.exists():
        return None
    store = open_store(args)
    try:
        return store.envelope_kids()
    finally:
        store.close()


def list_keys(args: argparse.Namespace) -> ExitStatus:
    state = state_dir(args)
    try:
        held = keys.all_keys(state)
    except (OSError, ValueError, KeyError, UnsafePermissions) as exc:
        raise CliError(f"key files unreadable: {exc}", ExitStatus.NOINPUT) from None
    current, offered = _offered(state)
    counts = _envelope_counts(args) or {}
    rows = [
        {
            "kid": k.kid,
            "suite": k.suite,
            "created_at": k.created_at,
            "keyset": "current" if k.kid == current else "offered" if k.kid in offered else "-",
            "envelopes": counts.get(k.kid, 0),
        }
        for k in held
    ]
    missing = sorted(set(counts) - {k.kid for k in held})
    if args.json:
        print_json({"keys": rows, "envelopes_without_key": {m: counts[m] for m in missing}})
        return ExitStatus.OK
    for r in rows:
        print(f"{r['kid']:<20} {r['suite']:<40} {r['keyset']:<8} {r['envelopes']:>9} envelopes")
    for m in missing:
        print(f"{m:<20} {'(no private key held)':<40} {'-':<8} {counts[m]:>9} envelopes")
    return ExitStatus.OK


def signing_init(args: argparse.Namespace) -> ExitStatus:
    try:
        key = keys.init_signing_key(state_dir(args))
    except FileExistsError as exc:
        raise CliError(str(exc), ExitStatus.CANTCREAT) from None
    print(key.public_b64)
    print(
        f"HQ signing key {key.kid}: pin the line above in terminals' agent.toml "
        "([hq] keyset_public_key)",
        file=sys.stderr,
    )
    return ExitStatus.OK


def sign_keyset(args: argparse.Namespace) -> ExitStatus:
    try:
        period = parse_period(args.valid_for, what="--valid-for")
    except PeriodError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    if period.unit not in ("d", "w"):
        raise CliError("--valid-for: give days or weeks (e.g. 90d)", ExitStatus.USAGE)
    days = period.amount * (7 if period.unit == "w" else 1)
    try:
        keyset, data = keys.publish_keyset(
            state_dir(args), args.current, args.also, timedelta(days=days)
        )
    except FileNotFoundError as exc:
        raise CliError(
            f"{exc.filename}: missing (keys init --kid …, keys signing-init)", ExitStatus.NOINPUT
        ) from None
    except (OSError, ValueError, KeyError, UnsafePermissions, KeysetError) as exc:
        raise CliError(f"cannot sign the keyset: {exc}", ExitStatus.DATAERR) from None
    print(
        json.dumps(
            {"seq": keyset.seq, "current": keyset.current, "keys": [k.kid for k in keyset.keys],
             "expires": keyset.expires, "bytes": len(data)}
        )
    )  # fmt: skip
    print(
        f"published keyset seq {keyset.seq} at {keys.keyset_path(state_dir(args))}: "
        f"terminals seal to {keyset.current}",
        file=sys.stderr,
    )
    return ExitStatus.OK


def retire(args: argparse.Namespace) -> ExitStatus:
    state = state_dir(args)
    _, offered = _offered(state)
    if args.kid in offered:
        raise CliError(
            f"key {args.kid} is still offered by the published keyset; sign a keyset without "
            "it first",
            ExitStatus.DATAERR,
        )
    store = open_store(args)
    try:
        remaining = store.envelope_kids().get(args.kid, 0)
        if remaining:
            raise CliError(
                f"{remaining} stored envelopes are sealed to {args.kid}: retire it once "
                "retention has deleted them (cumulus-hq retention run)",
                ExitStatus.DATAERR,
            )
        try:
            path = keys.retire(state, args.kid)
        except FileNotFoundError as exc:
            raise CliError(str(exc), ExitStatus.NOINPUT) from None
        store.audit("keys.retire", actor(), json.dumps({"kid": args.kid}))
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    print(f"retired {args.kid}: {path} deleted", file=sys.stderr)
    return ExitStatus.OK
