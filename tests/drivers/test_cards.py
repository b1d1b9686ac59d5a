"""Card-number rules and masking (spec/interfaces.md, "Card numbers")."""

from __future__ import annotations

import pytest

from drivers.cards import (
    CARD_REJECTS,
    CardRejectedError,
    check_card,
    ean13_check_digit,
    is_card,
    mask,
    normalize_prefixes,
    validate_card,
)
from tests.drivers.helpers import CARD, CARD2, PRODUCT

CHECKS = [
    (CARD, None),
    (CARD2, None),
    ("2099987654328", None),
    ("2099123456782", "bad-check-digit"),  # one digit misread
    ("2099123456768", "bad-check-digit"),  # two digits swapped
    (PRODUCT, "bad-prefix"),  # a valid EAN-13 that is not ours
    ("209912345678", "bad-length"),
    ("20991234567860", "bad-length"),
    ("", "not-digits"),
    ("2099 12345678", "not-digits"),
    ("209912345678\n", "not-digits"),
    ("２０９９１２３４５６７８６", "not-digits"),  # fullwidth digits are not ASCII digits
    ("209912345678²", "not-digits"),  # str.isdigit() would accept this
    ("]E02099123456786", "not-digits"),
]


@pytest.mark.parametrize(("text", "reason"), CHECKS)
def test_card_rules_give_the_most_useful_reason(text: str, reason: str | None) -> None:
    assert check_card(text) == reason
    assert is_card(text) is (reason is None)


def test_every_card_reject_reason_is_reachable() -> None:
    assert {reason for _, reason in CHECKS} - {None} == CARD_REJECTS


def test_validate_card_raises_with_the_reason() -> None:
    assert validate_card(CARD) == CARD
    with pytest.raises(CardRejectedError) as caught:
        validate_card(PRODUCT)
    assert caught.value.reason == "bad-prefix"


def test_configured_prefixes_replace_the_default() -> None:
    assert check_card(PRODUCT, prefixes=("40",)) is None
    assert check_card(CARD, prefixes=("40", "2099")) is None
    assert check_card(CARD, prefixes=("40",)) == "bad-prefix"


def test_no_prefixes_checks_the_structure_only() -> None:
    assert check_card(PRODUCT, prefixes=None) is None


@pytest.mark.parametrize("prefixes", [(), ("20a9",), ("",), ("2099123456786",)])
def test_bad_prefix_configuration_is_refused(prefixes: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="prefix"):
        normalize_prefixes(prefixes)


@pytest.mark.parametrize(
    ("first12", "digit"), [("209912345678", 6), ("400638133393", 1), ("000000000000", 0)]
)
def test_ean13_check_digit(first12: str, digit: int) -> None:
    assert ean13_check_digit(first12) == digit


def test_every_single_digit_error_is_caught() -> None:
    for position in range(13):
        for digit in "0123456789":
            if digit != CARD[position]:
                wrong = CARD[:position] + digit + CARD[position + 1 :]
                assert check_card(wrong) in ("bad-check-digit", "bad-prefix")
                assert not is_card(wrong)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("2099123456782", "2099*******82"),
        (CARD, "2099*******86"),
        ("20991234567860", "2099********60"),
        ("209912345678", "************"),  # too short to show anything
        ("", ""),
    ],
)
def test_mask_keeps_first_four_and_last_two(text: str, masked: str) -> None:
    assert mask(text) == masked
