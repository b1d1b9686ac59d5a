"""The checkout adapter: runs the sans-I/O `Session` against real time, the outbox and the page.

Readers and the POS feed events in (`present_card`, `decide`, `close_basket`, `void`); the
session's effects come out and are carried out here: `Seal` → a purchase payload sealed and
committed before the POS hears `recorded: true`; `Count` → the day's consent counter; `Answer`
→ the POS's waiting request; `Changed` → every open cashier page (SSE). A timer fires the
prompt's timeout.

Failure rule: if the outbox refuses (disk full, size cap, I/O error), the POS gets a fast
"recording unavailable" and the checkout goes on; the agent keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.api.basket import Basket
from agent.envelope import Consent, PurchasePayload
from agent.ids import rfc3339_ms, uuid7
from agent.outbox import AsyncOutbox, OutboxError
from agent.session import (
    Answer,
    BasketClosed,
    CardPresented,
    Changed,
    Count,
    DecisionMade,
    Effect,
    Event,
    Refused,
    Seal,
    Session,
    Tick,
    Voided,
)
from drivers.cards import mask

log = logging.getLogger("cumulus.checkout")

UNAVAILABLE = "recording unavailable"
SHUTTING_DOWN = "recording unavailable: agent is shutting down"
CLOSING: dict[str, Any] = {"state": "closing"}


@dataclass(frozen=True, slots=True)
class BasketResult:
    recorded: bool
    seq: int | None = None
    reason: str | None = None
    unavailable: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.recorded:
            return {"recorded": True, "seq": self.seq}
        return {"recorded": False, "reason": self.reason}


@dataclass
class CheckoutStats:
    decisions: dict[str, int] = field(
        default_factory=lambda: {"record": 0, "skip": 0, "timeout": 0}
    )
    latencies_ms: list[int] = field(default_factory=list)
    sealed: int = 0
    unavailable: int = 0


class Checkout:
    """One terminal's checkout: the session, its timer, its baskets and its watchers."""

    def __init__(
        self,
        outbox: AsyncOutbox,
        *,
        terminal: str,
        store: str,
        timeout_s: float,
        on_sealed: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.terminal = terminal
        self.store = store
        self.session = Session(timeout_s=timeout_s)
        self.on_sealed = on_sealed
        self.monotonic = monotonic
        self.wall = wall
        self.stats = CheckoutStats()
        self.accepting = True
        self._ids = itertools.count(1)
        self._baskets: dict[int, tuple[Basket, asyncio.Future[BasketResult]]] = {}
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: asyncio.Task[None] | None = None

    # --- inputs -----------------------------------------------------------------------------

    def present_card(self, card: str, source: str) -> None:
        """A validated card from a reader or the POS opens (or replaces) the prompt."""
        if not self.accepting:
            return
        self._apply(CardPresented(card, source, self.monotonic(), self.wall()))
        log.info("card %s from %s: prompt open", mask(card), source)

    async def decide(self, decision: str, by: str = "cashier") -> str | None:
        """Apply the customer's answer; return a refusal reason, or None when taken.

        Returns once the day's counter is committed: an answered decision is a counted one,
        whatever happens to the process next."""
        effects = self._apply(
            DecisionMade(decision, self.monotonic(), self.wall(), by)  # type: ignore[arg-type]
        )
        if self._pending is not None:
            await asyncio.shield(self._pending)
        refused = [e.reason for e in effects if isinstance(e, Refused)]
        return refused[0] if refused else None

    async def close_basket(self, basket: Basket) -> BasketResult:
        """The POS closed the transaction: answer once the decision is known and, for a
        record, once the envelope is committed."""
        bid = next(self._ids)
        fut: asyncio.Future[BasketResult] = asyncio.get_running_loop().create_future()
        self._baskets[bid] = (basket, fut)
        self._apply(BasketClosed(bid, self.monotonic(), self.wall()))
        try:
            return await fut
        finally:
            self._baskets.pop(bid, None)

    def void(self) -> None:
        self._apply(Voided(self.monotonic(), self.wall()))

    def view(self) -> dict[str, Any]:
        view = self.session.view(self.monotonic(), mask)
        view["recording_failures"] = self.stats.unavailable  # the page flashes each new one
        return view

    # --- watchers (SSE) ---------------------------------------------------------------------

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=16)
        self._watchers.add(q)
        q.put_nowait(self.view())
        return q

    def unwatch(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._watchers.discard(q)

    def _broadcast(self) -> None:
        view = self.view()
        for q in list(self._watchers):
            if q.full():  # a stalled page: drop its oldest state, the newest matters
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(view)

    # --- effects ----------------------------------------------------------------------------

    def _apply(self, event: Event) -> list[Effect]:
        """Run the machine, show the change at once, and carry out the effects in order on a
        task (`self._pending`): a counter commits before the basket it concerns is answered,
        a seal commits before the POS hears `recorded: true`."""
        effects = self.session.handle(event)
        for effect in effects:
            if isinstance(effect, Count):
                self.stats.decisions[effect.outcome] += 1
                if effect.outcome != "timeout":
                    self.stats.latencies_ms.append(self.session.latency_ms)
                    del self.stats.latencies_ms[:-1000]
            elif isinstance(effect, Changed):
                self._broadcast()
        self._arm_timer()
        if any(isinstance(e, Count | Seal | Answer) for e in effects):
            self._pending = self._spawn(self._carry_out(effects, self._pending))
        return effects

    async def _carry_out(self, effects: list[Effect], before: asyncio.Task[None] | None) -> None:
        if before is not None:  # effects of earlier events first: answers stay in order
            with contextlib.suppress(Exception):
                await asyncio.shield(before)
        for effect in effects:
            try:
                if isinstance(effect, Count):
                    await self._count(effect)
                elif isinstance(effect, Answer):
                    self._answer(effect.basket_id, BasketResult(False, reason=effect.reason))
                elif isinstance(effect, Seal):
                    await self._seal(effect)
            except Exception:  # a bug here must not silence this basket or the next
                log.exception("carrying out %s failed", type(effect).__name__)
                if isinstance(effect, Seal):
                    self._answer(
                        effect.basket_id, BasketResult(False, reason=UNAVAILABLE, unavailable=True)
                    )

    def _answer(self, basket_id: int, result: BasketResult) -> None:
        entry = self._baskets.get(basket_id)
        if entry is not None and not entry[1].done():
            entry[1].set_result(result)

    async def _seal(self, effect: Seal) -> None:
        entry = self._baskets.get(effect.basket_id)
        if entry is None:
            return  # the POS went away; nothing was promised, nothing is recorded
        basket, _ = entry
        now = self.wall()
        payload = PurchasePayload(
            event_id=uuid7(int(now * 1000)),
            occurred_at=rfc3339_ms(now),
            store=self.store,
            terminal=self.terminal,
            card=effect.card,
            receipt=basket.receipt,
            currency=basket.currency,
            total=basket.total,
            items=basket.items,
            consent=Consent(
                decided_at=rfc3339_ms(effect.decided_wall), latency_ms=effect.latency_ms
            ),
        )
        try:
            sealed = await self.outbox.seal_purchase(payload)
        except OutboxError as exc:
            self.stats.unavailable += 1
            log.error("recording unavailable: %s", exc)
            self._answer(
                effect.basket_id, BasketResult(False, reason=UNAVAILABLE, unavailable=True)
            )
            self._broadcast()
            return
        self.stats.sealed += 1
        self._answer(effect.basket_id, BasketResult(True, seq=sealed.seq))
        self.on_sealed()

    async def _count(self, effect: Count) -> None:
        day = datetime.fromtimestamp(effect.wall, UTC).date()
        try:
            await self.outbox.count_decision(effect.outcome, day)
        except OutboxError as exc:
            log.error("consent counter not saved: %s", exc)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        remaining = self.session.remaining_s(self.monotonic())
        if (
            self.session.deadline
            and remaining >= 0
            and self.session.state.value in ("prompt", "waiting")
        ):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(remaining, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._apply(Tick(self.monotonic(), self.wall()))

    async def drain(self) -> None:
        """Graceful shutdown: no new cards, finish the commits in progress, then answer every
        basket still waiting for a decision (nothing recorded for those) and close the pages'
        event streams."""
        self.accepting = False
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for bid in list(self._baskets):
            self._answer(bid, BasketResult(False, reason=SHUTTING_DOWN, unavailable=True))
        self.close_watchers()

    def close_watchers(self) -> None:
        """Tell every open event stream that the agent is stopping (it then ends)."""
        for q in list(self._watchers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(CLOSING)
