"""The checkout session machine: the customer's choice, and every basket answered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.session import (
    REASON_NO_CARD,
    REASON_REPLACED,
    REASON_SKIPPED,
    REASON_TIMEOUT,
    REASON_VOIDED,
    TRANSITIONS,
    Answer,
    BasketClosed,
    CardPresented,
    Changed,
    Count,
    DecisionMade,
    Refused,
    Seal,
    Session,
    State,
    Tick,
    Voided,
)
from tests.fuzzing import scaled

CARD = "2099123456786"


def card(at: float = 0.0, number: str = CARD) -> CardPresented:
    return CardPresented(number, "scanner-1", at, 1_764_000_000 + at)


def decide(d: str, at: float) -> DecisionMade:
    return DecisionMade(d, at, 1_764_000_000 + at)  # type: ignore[arg-type]


def basket(n: int, at: float) -> BasketClosed:
    return BasketClosed(n, at, 1_764_000_000 + at)


def test_every_state_and_event_has_a_transition() -> None:
    events = {CardPresented, DecisionMade, Tick, BasketClosed, Voided}
    assert set(TRANSITIONS) == set(State)
    assert all(set(row) == events for row in TRANSITIONS.values())


def test_record_then_basket_seals_with_the_latency() -> None:
    s = Session(timeout_s=20)
    assert s.handle(card(0)) == [Changed()]
    assert s.state is State.PROMPT
    assert s.handle(decide("record", 1.5)) == [Count("record", 1_764_000_001.5), Changed()]
    assert s.handle(basket(1, 3)) == [Seal(1, CARD, 1_764_000_001.5, 1500), Changed()]
    assert s.state is State.IDLE and s.card is None


def test_skip_then_basket_records_nothing_and_forgets_the_card() -> None:
    s = Session()
    s.handle(card(0))
    s.handle(decide("skip", 1))
    assert s.card is None
    assert s.handle(basket(1, 2))[0] == Answer(1, REASON_SKIPPED)


def test_timeout_means_skip() -> None:
    s = Session(timeout_s=20)
    s.handle(card(0))
    assert s.handle(Tick(19.9, 0)) == []
    effects = s.handle(Tick(20.0, 0))
    assert effects[0] == Count("timeout", 0)
    assert s.handle(basket(1, 25))[0] == Answer(1, REASON_TIMEOUT)


def test_basket_during_prompt_waits_for_the_answer() -> None:
    s = Session()
    s.handle(card(0))
    assert s.handle(basket(7, 1)) == [Changed()]
    assert s.state is State.WAITING
    effects = s.handle(decide("record", 2))
    assert Seal(7, CARD, 1_764_000_002, 2000) in effects
    assert s.state is State.IDLE


def test_waiting_basket_is_answered_at_timeout() -> None:
    s = Session(timeout_s=5)
    s.handle(card(0))
    s.handle(basket(3, 1))
    assert Answer(3, REASON_TIMEOUT) in s.handle(Tick(5, 0))


def test_new_card_replaces_the_open_prompt() -> None:
    s = Session()
    s.handle(card(0))
    s.handle(basket(4, 1))
    effects = s.handle(card(2, "2099000000019"))
    assert Answer(4, REASON_REPLACED) in effects
    assert s.card == "2099000000019" and s.state is State.PROMPT
    assert s.deadline == 22


def test_void_discards_everything() -> None:
    s = Session()
    s.handle(card(0))
    s.handle(basket(5, 1))
    assert Answer(5, REASON_VOIDED) in s.handle(Voided(2, 0))
    assert s.state is State.IDLE and s.card is None


def test_basket_without_card_and_decision_without_prompt_are_refused_clearly() -> None:
    s = Session()
    assert s.handle(basket(1, 0)) == [Answer(1, REASON_NO_CARD)]
    assert s.handle(decide("record", 0)) == [Refused("no prompt is open")]
    s.handle(card(1))
    s.handle(decide("skip", 2))
    assert s.handle(decide("record", 3)) == [Refused("the customer has already answered")]


def test_a_click_after_the_deadline_is_a_timeout() -> None:
    s = Session(timeout_s=20)
    s.handle(card(0))
    effects = s.handle(decide("record", 20.5))
    assert effects[0] == Count("timeout", 1_764_000_020.5)
    assert isinstance(effects[-1], Refused)
    assert s.handle(basket(1, 21))[0] == Answer(1, REASON_TIMEOUT)


def test_view_masks_the_card() -> None:
    s = Session()
    s.handle(card(0))
    view = s.view(5, lambda c: c[:4] + "*" * 7 + c[-2:])
    assert view["card"] == "2099*******86" and view["remaining_s"] == 15.0


events = st.one_of(
    st.just("card"),
    st.just("record"),
    st.just("skip"),
    st.just("tick"),
    st.just("basket"),
    st.just("void"),
)


@settings(max_examples=scaled(500))
@given(st.lists(st.tuples(events, st.floats(0, 30)), max_size=40))
def test_nothing_is_recorded_without_an_explicit_record_and_every_basket_is_answered(
    steps: list[tuple[str, float]],
) -> None:
    s = Session(timeout_s=20)
    now = 0.0
    next_basket = 0
    answered: dict[int, int] = {}
    sent: list[int] = []
    record_since_card = False  # an explicit record for the card now open
    for name, dt in steps:
        now += dt
        if name == "card":
            effects = s.handle(card(now))
            record_since_card = False
        elif name in ("record", "skip"):
            effects = s.handle(decide(name, now))
            if name == "record" and not any(isinstance(e, Refused) for e in effects):
                record_since_card = True
        elif name == "tick":
            effects = s.handle(Tick(now, 0))
        elif name == "basket":
            next_basket += 1
            sent.append(next_basket)
            effects = s.handle(basket(next_basket, now))
        else:
            effects = s.handle(Voided(now, 0))
            record_since_card = False
        for e in effects:
            if isinstance(e, Seal):
                assert record_since_card, "sealed without an explicit record"
                record_since_card = False
            if isinstance(e, Seal | Answer):
                answered[e.basket_id] = answered.get(e.basket_id, 0) + 1
        if s.state is State.IDLE:
            record_since_card = False
    for e in s.handle(Tick(now + 10_000, 0)):  # let any open prompt time out
        assert not isinstance(e, Seal) or record_since_card
        if isinstance(e, Seal | Answer):
            answered[e.basket_id] = answered.get(e.basket_id, 0) + 1
    assert answered == {b: 1 for b in sent}, "a basket went unanswered or was answered twice"
