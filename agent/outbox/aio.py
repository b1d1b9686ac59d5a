"""The outbox for asyncio code: every call runs on one dedicated thread.

Why a thread of its own: an fsync'd commit takes milliseconds, and the event loop also serves
the cashier page and the POS; a sqlite3 connection is also bound to one thread, so a single
worker thread gives both the ordering and the thread affinity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from functools import partial
from pathlib import Path
from typing import TypeVar

from agent.envelope import PurchasePayload
from agent.outbox.store import Outbox, OutboxStatus, Outcome, Sealed, SealingKeys, StoredEnvelope

T = TypeVar("T")


class AsyncOutbox:
    """Same operations as `Outbox`, awaitable; open with `await AsyncOutbox.open(...)`."""

    def __init__(self, executor: ThreadPoolExecutor, outbox: Outbox) -> None:
        self._executor = executor
        self._outbox = outbox

    @classmethod
    async def open(cls, path: Path, keys: SealingKeys | None, **kwargs: object) -> AsyncOutbox:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            outbox = await loop.run_in_executor(
                executor,
                partial(Outbox, path, keys, **kwargs),  # type: ignore[arg-type]
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, outbox)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def stream(self) -> bytes:
        return self._outbox.stream

    async def seal_purchase(self, payload: PurchasePayload) -> Sealed:
        return await self._run(partial(self._outbox.seal_purchase, payload))

    async def count_decision(self, outcome: Outcome, day: date) -> None:
        await self._run(partial(self._outbox.count_decision, outcome, day))

    async def seal_consent_stats(self, before: date) -> list[Sealed]:
        return await self._run(partial(self._outbox.seal_consent_stats, before))

    async def purge_expired(self, max_age_days: int) -> Sealed | None:
        return await self._run(partial(self._outbox.purge_expired, max_age_days))

    async def pending(self, after: int = 0, limit: int = 1000) -> list[StoredEnvelope]:
        return await self._run(partial(self._outbox.pending, after, limit))

    async def ack(self, acked_through: int) -> int:
        return await self._run(partial(self._outbox.ack, acked_through))

    async def purges(self) -> list[StoredEnvelope]:
        return await self._run(self._outbox.purges)

    async def dead_letter(
        self, seq: int, reason: str, *, bridge: bool = False, purge_reason: str = "rejected-by-hq"
    ) -> bool:
        return await self._run(
            partial(self._outbox.dead_letter, seq, reason, bridge=bridge, purge_reason=purge_reason)
        )

    async def last_seq(self) -> int:
        """The newest seq made: the in-memory chain head, no table scan (sync asks per batch)."""
        return await self._run(lambda: self._outbox.last_seq)

    async def explain_missing(self) -> list[tuple[int, int]]:
        from agent.outbox.recovery import explain_missing

        return await self._run(partial(explain_missing, self._outbox))

    async def set_keys(self, keys: SealingKeys) -> None:
        """Seal from now on with `keys` (HQ rotated its key); applied between two seals."""

        def swap() -> None:
            self._outbox.keys = keys

        await self._run(swap)

    async def audit(self, action: str, detail: dict[str, object]) -> None:
        await self._run(partial(self._outbox.audit, action, detail))

    async def status(self) -> OutboxStatus:
        return await self._run(self._outbox.status)

    async def close(self) -> None:
        """Close after the work already queued (a commit in progress finishes first)."""
        await self._run(self._outbox.close)
        self._executor.shutdown(wait=True)
