"""A throw-away PostgreSQL cluster on 127.0.0.1, for the HQ tests and bench/hq_ingest.py.

Debian's server binaries (`/usr/lib/postgresql/<major>/bin`, or `$CUMULUS_PG_BINDIR`) make a
cluster in a fresh temporary directory, listening on a free loopback port and a private
socket directory; `stop()` kills it and removes everything. `initdb` refuses to run as root,
so as root the cluster belongs to the `postgres` user (`runuser`), as the test rig notes say.

`durable=False` (tests) turns fsync off: the tests prove logic and concurrency, not disks.
The bench uses `durable=True`, PostgreSQL's defaults, so its figures include real commits.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    configured = os.environ.get("CUMULUS_PG_BINDIR")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").exists() else None
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @staticmethod
    def _as_owner(argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else [*argv]

    @classmethod
    def start(cls, bindir: Path, *, durable: bool = False) -> PgCluster:
        root = Path(tempfile.mkdtemp(prefix="cumulus-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        cluster = cls(bindir, root, 0)
        try:
            subprocess.run(
                cls._as_owner(
                    [str(bindir / "initdb"), "-D", str(cluster.data), "-A", "trust",
                     "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
                ),
                check=True,
                capture_output=True,
            )  # fmt: skip
            options = [f"-c listen_addresses=127.0.0.1 -k {root} -c max_connections=200"]
            if not durable:
                options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            for _attempt in range(3):  # a free port can be taken between probe and bind
                cluster.port = free_port()
                started = subprocess.run(
                    cls._as_owner(
                        [str(bindir / "pg_ctl"), "-D", str(cluster.data), "-l",
                         str(root / "server.log"), "-w", "-t", "60", "-o",
                         " ".join([*options, f"-p {cluster.port}"]), "start"]
                    ),
                    capture_output=True,
                )  # fmt: skip
                if started.returncode == 0:
                    return cluster
            log = (root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr!r}\n{log}")
        except BaseException:
            cluster.stop()
            raise

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "hq") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                     "-w", "stop"]
                ),
                capture_output=True,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
