"""`cumulus-hq`: the reference headquarters receiver's commands.

Thin wrappers over the library (sqlite-utils' habit): `hq.keys`, `hq.storage`,
`hq.server.HqServer`, `hq.export`. Data goes to stdout, diagnostics to stderr, and every
failure becomes one line and one `ExitStatus` here. `main()` runs in-process for tests;
`serve` takes a `shutdown_trigger` so a test can stop it without signals.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from enum import IntEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.envelope.model import TERMINAL_RE
from agent.envelope.suites import SUITE_NAMES, X25519_SUITE
from hq import keys
from hq.export import ExportError, MissingKey, export_card, parse_period
from hq.server import DEFAULT_LISTEN, HqServer, parse_listen, server_ssl_context
from hq.storage import (
    EnrolmentConflict,
    Storage,
    StorageError,
    UnsupportedDatabase,
    open_storage,
    sqlite_path,
)

ShutdownTrigger = Callable[[], Awaitable[object]]


class ExitStatus(IntEnum):
    OK = 0
    USAGE = 2  # as argparse: a flag or value is wrong
    DATAERR = 65  # the input is well-formed but refused (key of another terminal)
    NOINPUT = 66  # a file it needs is missing (keys, database)
    UNAVAILABLE = 69  # the database or the port cannot be used
    CANTCREAT = 73  # would overwrite (keys init)
    CONFIG = 78  # TLS files unreadable


class CliError(Exception):
    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keys, registry, default database ($CUMULUS_HQ_STATE or ./hq-state)",
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        help="database: a path or sqlite:///path (default <state-dir>/hq.db)",
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

    en = sub.add_parser(
        "enroll", help="register a terminal's Ed25519 signing key", parents=[common, db]
    )
    en.add_argument("--terminal", required=True, metavar="ID", help="terminal id, e.g. 0042-07")
    en.add_argument(
        "--pubkey", required=True, metavar="B64", help="base64 of the raw 32-byte public key"
    )
    en.set_defaults(handler=_enroll)

    sv = sub.add_parser("serve", help="the ingest API (envelope-v1)", parents=[common, db])
    sv.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; plain HTTP only on loopback)",
    )
    sv.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    sv.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    sv.set_defaults(handler=_serve)

    ex = sub.add_parser(
        "export",
        help="a customer's own purchase records as JSON (reader tier)",
        parents=[common, db],
    )
    ex.add_argument("--card", required=True, metavar="NUMBER", help="13-digit card number")
    ex.add_argument(
        "--since", default="2y", metavar="PERIOD", help="how far back: 2y, 18m, 30d (default 2y)"
    )
    ex.add_argument(
        "--kid",
        action="append",
        metavar="ID",
        help="decrypt with this key only (repeatable; default every key under <state-dir>/keys)",
    )
    ex.set_defaults(handler=_export)
    return parser


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CUMULUS_HQ_STATE") or "./hq-state")


def _keys_init(args: argparse.Namespace) -> ExitStatus:
    try:
        key = keys.init(state_dir(args), args.kid, args.suite)
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc), ExitStatus.CANTCREAT) from None
    print(key.public_b64)
    print(
        f'terminals\' agent.toml: [hq] enc_kid = "{key.kid}", enc_suite = "{key.suite}", '
        "enc_public_key = the line above",
        file=sys.stderr,
    )
    return ExitStatus.OK


def _enroll(args: argparse.Namespace) -> ExitStatus:
    if not TERMINAL_RE.fullmatch(args.terminal):
        raise CliError(
            f"--terminal {args.terminal!r}: expected ^[A-Za-z0-9._-]{{1,64}}$", ExitStatus.USAGE
        )
    try:
        public = base64.b64decode(args.pubkey, validate=True)
    except binascii.Error:
        raise CliError("--pubkey: not base64", ExitStatus.USAGE) from None
    if len(public) != 32:
        raise CliError(
            f"--pubkey: an Ed25519 public key is 32 bytes, got {len(public)}", ExitStatus.USAGE
        )
    try:
        Ed25519PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise CliError(f"--pubkey: not an Ed25519 public key ({exc})", ExitStatus.USAGE) from None
    storage = _open(args)
    try:
        enrolment = storage.enroll(args.terminal, public)
    except EnrolmentConflict as exc:
        raise CliError(str(exc), ExitStatus.DATAERR) from None
    finally:
        storage.close()
    print(enrolment.sig_kid)
    what = "enrolled" if enrolment.new else "already enrolled"
    print(f"{what}: terminal {args.terminal}, sig_kid {enrolment.sig_kid}", file=sys.stderr)
    return ExitStatus.OK


def _open(args: argparse.Namespace) -> Storage:
    try:
        return open_storage(args.db, state_dir(args))
    except UnsupportedDatabase as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None


async def _signals() -> None:
    """Wait for SIGINT or SIGTERM (hypercorn's habit: the handler only sets an event)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _serve(args: argparse.Namespace, shutdown_trigger: ShutdownTrigger | None = None) -> ExitStatus:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", ExitStatus.USAGE)
    context = None
    if args.tls_cert is not None:
        try:
            context = server_ssl_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"TLS certificate or key unusable: {exc}", ExitStatus.CONFIG) from None
    try:
        sqlite_path(args.db, state_dir(args))
        server = HqServer.for_db(
            args.db, state_dir(args), host=host, port=port, ssl_context=context
        )
    except (UnsupportedDatabase, ValueError) as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(server.serve_until(shutdown_trigger or _signals))
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc}", ExitStatus.UNAVAILABLE) from None
    return ExitStatus.OK


def _export(args: argparse.Namespace) -> ExitStatus:
    try:
        period = parse_period(args.since)
        path = sqlite_path(args.db, state_dir(args))
    except (ExportError, UnsupportedDatabase) as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    if not path.exists():
        raise CliError(f"no HQ database at {path}", ExitStatus.NOINPUT)
    storage = _open(args)
    try:
        report = export_card(storage, state_dir(args), args.card, period, kids=args.kid)
    except MissingKey as exc:
        raise CliError(str(exc), ExitStatus.NOINPUT) from None
    except ExportError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    finally:
        storage.close()
    print(json.dumps(report.document(), indent=2, ensure_ascii=False))
    print(f"cumulus-hq: {report.summary()}", file=sys.stderr)
    return ExitStatus.OK


def main(
    argv: Sequence[str] | None = None, *, shutdown_trigger: ShutdownTrigger | None = None
) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.handler is _serve:
            return int(_serve(args, shutdown_trigger))
        return int(args.handler(args))
    except CliError as exc:
        print(f"cumulus-hq: {exc}", file=sys.stderr)
        return int(exc.status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
