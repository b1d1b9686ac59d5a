"""The checkout session, sans-I/O: card → prompt → decision → basket → sealed or discarded.

The customer's promise lives here: nothing is recorded without an explicit **record**; no
answer before the timeout is **skip**; skip, timeout and void leave no personal trace (only
the day's counters change). The machine does no I/O and reads no clock: events carry the
time, and `handle()` returns effects for the adapter to carry out (seal, count, answer the
POS, tell the page). All transitions are the table `TRANSITIONS` below, as data (h11's habit).

States: IDLE (no card) → PROMPT (card read, waiting for the cashier) → DECIDED (record or
skip/timeout known, waiting for the basket) → IDLE. A basket that arrives during PROMPT is
parked (WAITING) and answered the moment the decision is made or the prompt times out.
A new card replaces whatever was open; a void discards it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["record", "skip"]
Outcome = Literal["record", "skip", "timeout"]


class State(enum.StrEnum):
    IDLE = "idle"
    PROMPT = "prompt"
    WAITING = "waiting"  # prompt open and the basket already here
    DECIDED = "decided"


# --- events (inputs) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardPresented:
    card: str  # validated by drivers.cards before it gets here
    source: str  # reader name, or "pos"
    at: float  # monotonic seconds
    wall: float  # Unix seconds (for decided_at / occurred_at)


@dataclass(frozen=True, slots=True)
class DecisionMade:
    decision: Decision
    at: float
    wall: float
    by: str = "cashier"


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    wall: float


@dataclass(frozen=True, slots=True)
class BasketClosed:
    basket_id: int
    at: float
    wall: float


@dataclass(frozen=True, slots=True)
class Voided:
    at: float
    wall: float


Event = CardPresented | DecisionMade | Tick | BasketClosed | Voided


# --- effects (outputs) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Count:
    """Add one to the day's consent counter (the only trace a skip or timeout leaves)."""

    outcome: Outcome
    wall: float


@dataclass(frozen=True, slots=True)
class Seal:
    """Seal this basket with this card and consent, then answer the POS with the seq."""

    basket_id: int
    card: str
    decided_wall: float
    latency_ms: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the POS for this basket without recording anything."""

    basket_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Changed:
    """The visible session changed: push it to the cashier page."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The event was not valid now (e.g. a decision with no prompt open); say why."""

    reason: str


Effect = Count | Seal | Answer | Changed | Refused

REASON_NO_CARD = "no card presented"
REASON_SKIPPED = "customer declined"
REASON_TIMEOUT = "no answer (timeout means skip)"
REASON_VOIDED = "transaction voided"
REASON_REPLACED = "another card was presented"


@dataclass
class Session:
    """The one open checkout transaction of this terminal."""

    timeout_s: float = 20.0
    state: State = State.IDLE
    card: str | None = None
    source: str | None = None
    opened_at: float = 0.0
    deadline: float = 0.0
    outcome: Outcome | None = None
    decided_wall: float = 0.0
    latency_ms: int = 0
    parked_basket: int | None = None
    seq_of_change: int = 0
    last_outcome: Outcome | None = field(default=None)
    decisions: int = 0  # concluded prompts so far: the page flashes each new one

    # --- the one entry point ----------------------------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Apply `event`; return what the adapter must do, in order."""
        action = TRANSITIONS[self.state][type(event)]
        effects: list[Effect] = action(self, event)
        if any(isinstance(e, Changed) for e in effects):
            self.seq_of_change += 1
        return effects

    def remaining_s(self, now: float) -> float:
        return max(0.0, self.deadline - now) if self.state in (State.PROMPT, State.WAITING) else 0

    def view(self, now: float, mask: Callable[[str], str]) -> dict[str, object]:
        """What the page and `GET /v1/session` show (the card masked, never in clear)."""
        return {
            "state": self.state.value,
            "card": mask(self.card) if self.card else None,
            "source": self.source,
            "remaining_s": round(self.remaining_s(now), 1),
            "timeout_s": self.timeout_s,
            "outcome": self.outcome,
            "last_outcome": self.last_outcome,
            "basket_waiting": self.parked_basket is not None,
            "decision_no": self.decisions,
            "version": self.seq_of_change,
        }

    # --- actions ----------------------------------------------------------------------------

    def _open(self, ev: CardPresented) -> list[Effect]:
        out: list[Effect] = []
        if self.parked_basket is not None:  # a new card replaces the open one
            out.append(Answer(self.parked_basket, REASON_REPLACED))
        self._reset()
        self.state = State.PROMPT
        self.card, self.source = ev.card, ev.source
        self.opened_at, self.deadline = ev.at, ev.at + self.timeout_s
        return [*out, Changed()]

    def _decide(self, ev: DecisionMade) -> list[Effect]:
        if ev.at >= self.deadline:  # a click after the countdown ran out is not consent
            late = self._conclude("timeout", self.deadline, ev.wall)
            return [*late, Refused("too late: the prompt had timed out (skip)")]
        return self._conclude(ev.decision, ev.at, ev.wall)

    def _tick(self, ev: Tick) -> list[Effect]:
        if ev.at < self.deadline:
            return []
        return self._conclude("timeout", self.deadline, ev.wall)

    def _conclude(self, outcome: Outcome, at: float, wall: float) -> list[Effect]:
        self.outcome = outcome
        self.last_outcome = outcome
        self.decisions += 1
        self.decided_wall = wall
        self.latency_ms = max(0, int((at - self.opened_at) * 1000))
        out: list[Effect] = [Count(outcome, wall)]
        if self.parked_basket is not None:
            basket, self.parked_basket = self.parked_basket, None
            out.append(self._close(basket))
        else:
            self.state = State.DECIDED
            if outcome != "record":
                self.card = None  # nothing will be recorded: forget the number now
        return [*out, Changed()]

    def _park(self, ev: BasketClosed) -> list[Effect]:
        if self.parked_basket is not None:
            return [Answer(ev.basket_id, "a basket is already waiting for the decision")]
        self.parked_basket = ev.basket_id
        self.state = State.WAITING
        return [Changed()]

    def _basket_after_decision(self, ev: BasketClosed) -> list[Effect]:
        return [self._close(ev.basket_id), Changed()]

    def _close(self, basket_id: int) -> Effect:
        """The transaction ends: seal only an explicit record; forget the card either way."""
        card, outcome = self.card, self.outcome
        effect: Effect
        if outcome == "record" and card is not None:
            effect = Seal(basket_id, card, self.decided_wall, self.latency_ms)
        else:
            effect = Answer(basket_id, REASON_TIMEOUT if outcome == "timeout" else REASON_SKIPPED)
        self._reset()
        return effect

    def _basket_without_card(self, ev: BasketClosed) -> list[Effect]:
        return [Answer(ev.basket_id, REASON_NO_CARD)]

    def _void(self, ev: Voided) -> list[Effect]:
        out: list[Effect] = []
        if self.parked_basket is not None:
            out.append(Answer(self.parked_basket, REASON_VOIDED))
        self._reset()
        return [*out, Changed()]

    def _reset(self) -> None:
        self.state = State.IDLE
        self.card = self.source = None
        self.outcome = None
        self.parked_basket = None
        self.opened_at = self.deadline = 0.0


def _refusal(reason: str) -> Callable[[Session, Event], list[Effect]]:
    def refuse(session: Session, event: Event) -> list[Effect]:
        return [Refused(reason)]

    return refuse


def _nothing(session: Session, event: Event) -> list[Effect]:
    return []


_no_prompt = _refusal("no prompt is open")
_already = _refusal("the customer has already answered")

#: (state, event type) → action. Every pair is listed: an unlisted pair is a bug, not a guess.
TRANSITIONS: dict[State, dict[type, Callable[..., list[Effect]]]] = {
    State.IDLE: {
        CardPresented: Session._open,
        DecisionMade: _no_prompt,
        Tick: _nothing,
        BasketClosed: Session._basket_without_card,
        Voided: Session._void,
    },
    State.PROMPT: {
        CardPresented: Session._open,
        DecisionMade: Session._decide,
        Tick: Session._tick,
        BasketClosed: Session._park,
        Voided: Session._void,
    },
    State.WAITING: {
        CardPresented: Session._open,
        DecisionMade: Session._decide,
        Tick: Session._tick,
        BasketClosed: Session._park,
        Voided: Session._void,
    },
    State.DECIDED: {
        CardPresented: Session._open,
        DecisionMade: _already,
        Tick: _nothing,
        BasketClosed: Session._basket_after_decision,
        Voided: Session._void,
    },
}
