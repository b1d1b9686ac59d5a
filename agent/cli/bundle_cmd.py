"""`cumulus-agent support-bundle -o FILE`: everything support needs, nothing they must not see.

A gzip tarball of: the config with secrets removed, versions, `diag --json`, the audit
verification, `readers list --json`, and recent logs. Card-number-like digit runs are masked
in everything that goes in (defence in depth: the agent never logs one in clear), and no
token or private key is ever read into it.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import shutil
import sqlite3
import ssl
import subprocess
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.cli import diag_cmd, readers_cmd
from agent.cli.context import Context
from agent.cli.env import Environment, ExitStatus

SECRET_KEY_RE = re.compile(
    r"^\s*([A-Za-z0-9_]*(token|secret|password|private)[A-Za-z0-9_]*)\s*=", re.IGNORECASE
)
DIGITS_RE = re.compile(r"(?<!\d)(\d{4})\d{5,11}(\d{2})(?!\d)")
LOG_DIR = Path("/var/log/cumulus-agent")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "support-bundle", help="a tarball for support, without customer data", parents=[common]
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .tar.gz to write")
    p.set_defaults(handler=_bundle)


def scrub(text: str) -> str:
    """Mask any run of 11-17 digits as first 4 + stars + last 2 (card numbers, GTINs)."""
    return DIGITS_RE.sub(lambda m: m.group(1) + "*" * (len(m.group(0)) - 6) + m.group(2), text)


def redact_config(text: str) -> str:
    lines = []
    for line in text.splitlines():
        m = SECRET_KEY_RE.match(line)
        lines.append(f'{m.group(1)} = "(removed)"' if m else line)
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    pcsc = None
    if shutil.which("pcscd"):
        out = subprocess.run(
            ["pcscd", "--version"], capture_output=True, text=True, check=False, timeout=5
        )
        pcsc = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else None
    return {
        "cumulus-edge": dist("cumulus-edge"),
        "python": platform.python_version(),
        "pyscard": dist("pyscard"),
        "pcsc-lite": pcsc,
        "sqlite": sqlite3.sqlite_version,
        "openssl": ssl.OPENSSL_VERSION,
        "cryptography": dist("cryptography"),
        "aiohttp": dist("aiohttp"),
        "platform": platform.platform(),
    }


def recent_logs() -> str:
    if shutil.which("journalctl"):
        out = subprocess.run(
            ["journalctl", "-u", "cumulus-agent", "-n", "2000", "--no-pager"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout
    parts = []
    if LOG_DIR.is_dir():
        for f in sorted(LOG_DIR.iterdir())[-5:]:
            parts.append(f"== {f.name}\n{f.read_text(errors='replace')[-200_000:]}")
    return "\n".join(parts) or "(no logs found: not under systemd and no log files)\n"


def _capture(handler: Any, argv: list[str], env: Environment) -> str:
    """Run another command of ours in-process and keep its stdout."""
    from agent.cli.main import build_parser

    out, err = io.StringIO(), io.StringIO()
    sub_env = Environment(stdout=out, stderr=err, environ=env.environ)
    args = build_parser().parse_args(argv)
    try:
        handler(args, sub_env)
    except Exception as exc:  # one part failing must not lose the rest of the bundle
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})
    return out.getvalue()


def _bundle(args: argparse.Namespace, env: Environment) -> int:
    ctx = Context.load(env, args.config)
    cfg_arg = ["--config", str(ctx.config.path)]
    files: dict[str, str] = {
        "config/agent.toml": redact_config(ctx.config.path.read_text()),
        "versions.json": json.dumps(versions(), indent=2),
        "diag.json": _capture(diag_cmd._diag, ["diag", "--json", *cfg_arg], env),
        "readers.json": _capture(readers_cmd._list, ["readers", "list", "--json", *cfg_arg], env),
        "logs/agent.log": recent_logs(),
        "README.txt": "cumulus-agent support bundle: no card numbers, tokens or private keys.\n",
    }
    out = Path(args.output)
    with tarfile.open(out, "w:gz") as tar:
        for name, text in files.items():
            data = scrub(text).encode()
            info = tarfile.TarInfo(f"cumulus-support/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    out.chmod(0o600)
    env.err(f"support bundle written to {out} ({out.stat().st_size} bytes)")
    return ExitStatus.OK
