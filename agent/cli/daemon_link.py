"""Ask the running daemon for its live state over its Unix socket (diag, readers list).

Returns None when no daemon answers: commands then work from the files alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from agent.config import Config


def daemon_state(config: Config, environ: Mapping[str, str], timeout: float = 2.0) -> Any:
    from agent.service import socket_path

    path = socket_path(config, environ)
    if not path.exists():
        return None

    async def fetch() -> Any:
        conn = aiohttp.UnixConnector(path=str(path))
        async with (
            aiohttp.ClientSession(
                connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as s,
            s.get("http://localhost/v1/agent/state") as r,
        ):
            if r.status != 200:
                return None
            return await r.json()

    try:
        return asyncio.run(fetch())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
