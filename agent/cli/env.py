"""What every command gets from outside, and the one place exit codes are decided.

httpie's habit: streams, environment and isatty are passed in, so tests run commands
in-process with captured streams; an exception type maps to an `ExitStatus` here and only here.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO


class ExitStatus(enum.IntEnum):
    OK = 0
    WARNING = 1  # diag: warnings found
    FAILURE = 2  # diag: failures found; a command that could not do its job
    USAGE = 64  # EX_USAGE: bad command line
    DATAERR = 65  # EX_DATAERR: data failed verification (audit chain broken)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a needed service or device is not there
    SOFTWARE = 70  # EX_SOFTWARE: a bug of ours
    CANTCREAT = 73  # EX_CANTCREAT: refusing to overwrite (key exists)
    IOERR = 74  # EX_IOERR
    NOPERM = 77  # EX_NOPERM: unsafe permissions on a secret
    CONFIG = 78  # EX_CONFIG: configuration refused
    INTERRUPTED = 130


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def stdout_isatty(self) -> bool:
        return bool(getattr(self.stdout, "isatty", lambda: False)())

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def err(self, text: str) -> None:
        print(text, file=self.stderr)

    def json(self, value: Any) -> None:
        print(json.dumps(value, sort_keys=True), file=self.stdout)


class CommandError(Exception):
    """A command failed in a way a person can act on; carries its exit status."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.FAILURE) -> None:
        super().__init__(message)
        self.status = status


def exit_status_for(exc: BaseException) -> tuple[ExitStatus, str]:
    """Map any exception to (status, one-line message). The single source of exit codes."""
    from agent.config import ConfigError
    from agent.fsutil import UnsafePermissions
    from agent.keys import KeyCorrupt, KeyExists, KeyMissing
    from agent.outbox import OutboxError

    if isinstance(exc, CommandError):
        return exc.status, str(exc)
    if isinstance(exc, ConfigError):
        return ExitStatus.CONFIG, f"configuration refused: {exc}"
    if isinstance(exc, UnsafePermissions):
        return ExitStatus.NOPERM, str(exc)
    if isinstance(exc, KeyExists):
        return ExitStatus.CANTCREAT, str(exc)
    if isinstance(exc, KeyMissing | KeyCorrupt):
        return ExitStatus.UNAVAILABLE, str(exc)
    if isinstance(exc, OutboxError):
        return ExitStatus.UNAVAILABLE, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED, "interrupted"
    if isinstance(exc, PermissionError):
        return ExitStatus.NOPERM, str(exc)
    if isinstance(exc, OSError):
        return ExitStatus.IOERR, str(exc)
    return ExitStatus.SOFTWARE, f"internal error: {type(exc).__name__}: {exc}"
