"""A running local API on a free loopback port (real sockets), for API and browser tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agent.api.app import make_app, serve
from agent.api.checkout import Checkout
from agent.outbox import AsyncOutbox, SealingKeys

POS_TOKEN = "pos-secret-token-for-tests"
VALID_BASKET = {
    "receipt": "R-1",
    "currency": "CHF",
    "total": 1290,
    "items": [
        {"gtin": "7612345678900", "qty": 1000, "amount": 990},
        {"gtin": "4006381333931", "qty": 2000, "amount": 300},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Agent:
    url: str
    port: int
    checkout: Checkout
    outbox: AsyncOutbox
    http: aiohttp.ClientSession
    socket_path: Path

    def pos_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {POS_TOKEN}"}

    async def post(self, path: str, body: object, **kw: object) -> tuple[int, dict[str, object]]:
        headers = {**self.pos_headers(), **kw.pop("headers", {})}  # type: ignore[dict-item]
        async with self.http.post(self.url + path, json=body, headers=headers, **kw) as r:
            return r.status, await r.json()


@asynccontextmanager
async def running_agent(
    tmp_path: Path, keys: SealingKeys, *, timeout_s: float = 20.0, max_bytes: int = 1 << 28
) -> AsyncIterator[Agent]:
    outbox = await AsyncOutbox.open(tmp_path / "agent.db", keys, max_bytes=max_bytes)
    checkout = Checkout(outbox, terminal="0042-07", store="0042", timeout_s=timeout_s)
    port = free_port()
    sock = tmp_path / "api.sock"
    runner = await serve(
        make_app(checkout, port=port, pos_token=POS_TOKEN, lang="en"), "127.0.0.1", port, sock
    )
    http = aiohttp.ClientSession()
    try:
        yield Agent(f"http://127.0.0.1:{port}", port, checkout, outbox, http, sock)
    finally:
        await http.close()
        await checkout.drain()  # closes the pages' event streams, so cleanup need not wait
        await runner.cleanup()
        await outbox.close()
