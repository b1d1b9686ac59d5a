"""Small file-system guarantees the agent relies on: atomic private writes, safe permissions.

A key or a token half-written by a power cut, or left readable by others, is a security
incident on a terminal that stands in a public shop; these helpers make both impossible.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafePermissions(Exception):
    """A secret file can be read by group or others (or is not a regular file)."""


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path) -> bytes:
    """Read a secret, refusing it when group or others could read or write it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePermissions(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise UnsafePermissions(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be accessible "
                f"to group or others: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
