"""What every `cumulus-hq` command shares: exit statuses, option bundles, opening the store.

httpie's habit: one `ExitStatus` enum, and exceptions become exit codes in one place
(`hq.cli.main`). Data goes to stdout, diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

from hq.storage import HqStore, StorageError, UnsupportedDatabase, open_storage, parse_db


class ExitStatus(IntEnum):
    OK = 0
    USAGE = 2  # as argparse: a flag or value is wrong
    DATAERR = 65  # the input is well-formed but refused (key of another terminal, key in use)
    NOINPUT = 66  # a file it needs is missing (keys, database)
    UNAVAILABLE = 69  # the database or the port cannot be used
    CANTCREAT = 73  # would overwrite (keys init)
    CONFIG = 78  # TLS files unreadable


class CliError(Exception):
    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keys, registry, default database ($CUMULUS_HQ_STATE or ./hq-state)",
    )
    return common


def db_options() -> argparse.ArgumentParser:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        help="database: a path, sqlite:///path or postgresql://user@host/db "
        "(default <state-dir>/hq.db)",
    )
    return db


def json_option() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print JSON (for programs)")
    return out


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("CUMULUS_HQ_STATE") or "./hq-state")


def open_store(args: argparse.Namespace, *, must_exist: bool = False) -> HqStore:
    """The store `--db` names; with `must_exist`, a missing SQLite file is NOINPUT (a
    reader-tier job on an empty path is a typo, not a new database)."""
    try:
        target = parse_db(args.db, state_dir(args))
    except UnsupportedDatabase as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    if must_exist and target.path is not None and not target.path.exists():
        raise CliError(f"no HQ database at {target.path}", ExitStatus.NOINPUT)
    try:
        return open_storage(args.db, state_dir(args))
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None


def actor() -> str:
    """Who runs the command, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def say(message: str) -> None:
    print(f"cumulus-hq: {message}", file=sys.stderr)
