"""`cumulus-hq enroll` and `cumulus-hq serve`: the ingest tier's commands."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.envelope.model import TERMINAL_RE
from hq.cli.common import CliError, ExitStatus, open_store, state_dir
from hq.server import DEFAULT_LISTEN, HqServer, parse_listen, server_ssl_context
from hq.storage import EnrolmentConflict, StorageError, UnsupportedDatabase, parse_db

ShutdownTrigger = Callable[[], Awaitable[object]]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    db: argparse.ArgumentParser,
) -> None:
    en = sub.add_parser(
        "enroll", help="register a terminal's Ed25519 signing key", parents=[common, db]
    )
    en.add_argument("--terminal", required=True, metavar="ID", help="terminal id, e.g. 0042-07")
    en.add_argument(
        "--pubkey", required=True, metavar="B64", help="base64 of the raw 32-byte public key"
    )
    en.set_defaults(handler=enroll)

    sv = sub.add_parser("serve", help="the ingest API (envelope-v1)", parents=[common, db])
    sv.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; plain HTTP only on loopback)",
    )
    sv.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    sv.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    sv.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the address with other serve processes (SO_REUSEPORT; the kernel "
        "spreads connections); use with one PostgreSQL database",
    )
    sv.set_defaults(handler=serve)


def enroll(args: argparse.Namespace) -> ExitStatus:
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
    storage = open_store(args)
    try:
        enrolment = storage.enroll(args.terminal, public)
    except EnrolmentConflict as exc:
        raise CliError(str(exc), ExitStatus.DATAERR) from None
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        storage.close()
    print(enrolment.sig_kid)
    what = "enrolled" if enrolment.new else "already enrolled"
    print(f"{what}: terminal {args.terminal}, sig_kid {enrolment.sig_kid}", file=sys.stderr)
    return ExitStatus.OK


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


def serve(args: argparse.Namespace, shutdown_trigger: ShutdownTrigger | None = None) -> ExitStatus:
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
        target = parse_db(args.db, state_dir(args))
        server = HqServer.for_db(
            args.db,
            state_dir(args),
            host=host,
            port=port,
            ssl_context=context,
            reuse_port=args.reuse_port,
        )
    except (UnsupportedDatabase, ValueError) as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hq.server").info("HQ database: %s", target)
    try:
        asyncio.run(server.serve_until(shutdown_trigger or _signals))
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc}", ExitStatus.UNAVAILABLE) from None
    return ExitStatus.OK
