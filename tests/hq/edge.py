"""The terminal's side of the wire, for HQ tests: real envelopes, and batches posted.

`SealingTerminal` seals through a real `agent.outbox.Outbox` (so chains, purges and seqs are
the agent's own) and can `forge` hand-made envelopes (forks, broken chains, other keys).
`post_raw`/`post_batch` talk to `/v1/envelopes` and decode the answer strictly.
"""

from __future__ import annotations

import gzip as gzip_mod
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import (
    Header,
    Payload,
    Purged,
    PurgePayload,
    cbor,
    decode,
    seal,
    sig_kid,
)
from agent.outbox import Outbox, SealingKeys
from tests.factories import HqKeyPair, purchase, random_card, random_gtin

CBOR = "application/cbor"


@dataclass
class SealingTerminal:
    """A terminal's sealing side: a real outbox, its signing key, real envelopes."""

    outbox: Outbox
    signing_key: Ed25519PrivateKey
    keys: SealingKeys
    cards: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        path: Path,
        hq_key: HqKeyPair,
        terminal: str = "0042-07",
        clock: Callable[[], float] | None = None,
    ) -> SealingTerminal:
        key = Ed25519PrivateKey.generate()
        keys = SealingKeys.build(terminal, key, hq_key.kid, hq_key.suite, hq_key.public_raw)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        return cls(Outbox(path, keys, **extra), key, keys)

    @property
    def terminal(self) -> str:
        return self.keys.terminal

    @property
    def stream(self) -> bytes:
        return self.outbox.stream

    @property
    def public_raw(self) -> bytes:
        return self.signing_key.public_key().public_bytes_raw()

    def seal(
        self, n: int = 1, *, card: str | None = None, at: float | None = None, seed: int = 7
    ) -> list[int]:
        """Seal `n` purchases (random card unless given, occurred `at` if given); return
        their seqs."""
        rng = random.Random(seed + len(self.cards))
        seqs = []
        for _ in range(n):
            c = card or random_card(rng)
            self.cards.append(c)
            gtins = [random_gtin(rng)]
            p = (
                purchase(c, gtins, terminal=self.terminal)
                if at is None
                else purchase(c, gtins, terminal=self.terminal, at=at)
            )
            seqs.append(self.outbox.seal_purchase(p).seq)
        return seqs

    def forge(
        self,
        seq: int,
        prev: bytes,
        *,
        purged: Purged | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        card: str = "2099123456786",
        ts: int = 1_764_000_000,
    ) -> bytes:
        """A hand-made envelope of this terminal and stream (forks, bad chains, purges,
        other keys), sealed exactly as the outbox would seal it."""
        key = signing_key or self.signing_key
        header = Header(
            terminal=self.terminal,
            stream=self.stream,
            seq=seq,
            kind="purge" if purged is not None else "purchase",
            ts=ts,
            prev=prev,
            sig_kid=sig_kid(key.public_key()),
            enc_kid=self.keys.enc_kid,
            purged=purged,
        )
        payload: Payload = (
            PurgePayload("max-age", purged.last_seq - purged.first_seq + 1)
            if purged is not None
            else purchase(card, [], terminal=self.terminal)
        )
        return seal(
            header,
            payload,
            signing_key=key,
            suite_name=self.keys.enc_suite,
            hq_key=self.keys.hq_public,
        )

    def bodies(self, after: int = 0, limit: int = 1000) -> list[bytes]:
        return [e.body for e in self.outbox.pending(after, limit)]

    def body(self, seq: int) -> bytes:
        found = [e.body for e in self.outbox.all_envelopes() if e.seq == seq]
        if not found:
            raise KeyError(seq)
        return found[0]

    def close(self) -> None:
        self.outbox.close()


# --- a client's side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def acked_through(self) -> int:
        return int(self.body["acked_through"])

    @property
    def rejected(self) -> dict[int, str]:
        return {int(r["seq"]): str(r["reason"]) for r in self.body["rejected"]}


def batch_body(elements: Sequence[bytes]) -> bytes:
    return cbor.dumps(list(elements))


async def post_raw(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    content_type: str | None = CBOR,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST bytes to /v1/envelopes and decode the CBOR answer strictly."""
    h = dict(headers or {})
    if content_type is not None:
        h["Content-Type"] = content_type
    data = io.BytesIO(body) if len(body) > 1 << 20 else body  # aiohttp: large → a stream
    async with session.post(f"{url}/v1/envelopes", data=data, headers=h) as resp:
        raw = await resp.read()
        assert resp.content_type == CBOR, (resp.status, raw[:200])
        return Reply(resp.status, cbor.loads(raw, what="answer"), dict(resp.headers))


async def post_batch(
    session: aiohttp.ClientSession, url: str, elements: Sequence[bytes], *, gzip: bool = False
) -> Reply:
    body = batch_body(elements)
    if gzip:
        return await post_raw(
            session, url, gzip_mod.compress(body), headers={"Content-Encoding": "gzip"}
        )
    return await post_raw(session, url, body)


def seq_of(body: bytes) -> int:
    return decode(body).header.seq
