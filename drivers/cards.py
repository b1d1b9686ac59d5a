"""Cumulus card-number rules and masking: the one place they live (spec/interfaces.md).

A Cumulus card number is exactly 13 ASCII digits, its last digit is the EAN-13 check digit of
the first twelve, and it begins with a configured prefix (default ``2099``). Anything else
read from a reader is rejected with one of `CARD_REJECTS` and counted, never recorded.
Outside the encrypted payload a card number is only ever shown masked: first 4 and last 2
digits (``2099*******82``); `mask` never raises, so it is safe on any string a log may see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, get_args

CARD_LENGTH: Final = 13
DEFAULT_PREFIXES: Final[tuple[str, ...]] = ("2099",)

CardReject = Literal[
    "not-digits",  # anything but the ASCII digits 0-9
    "bad-length",  # not 13 digits
    "bad-check-digit",  # EAN-13 check digit wrong (a misread digit)
    "bad-prefix",  # a valid EAN-13 but not ours (a product barcode, say)
]
CARD_REJECTS: Final[frozenset[str]] = frozenset(get_args(CardReject))

_DIGITS: Final = frozenset("0123456789")


class CardRejectedError(ValueError):
    """A string that is not a Cumulus card number; ``reason`` is one of CARD_REJECTS."""

    def __init__(self, reason: CardReject) -> None:
        super().__init__(f"not a Cumulus card number: {reason}")
        self.reason: CardReject = reason


def normalize_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Validated prefixes as a tuple; ValueError for none, or one that is not 1-12 digits."""
    result = tuple(prefixes)
    if not result:
        raise ValueError("at least one card prefix is needed")
    for prefix in result:
        if not (isinstance(prefix, str) and 1 <= len(prefix) < CARD_LENGTH and _all_digits(prefix)):
            raise ValueError(f"card prefix must be 1-12 digits, not {prefix!r}")
    return result


def _all_digits(text: str) -> bool:
    # str.isdigit() accepts '²' and Arabic-Indic digits; card numbers are ASCII only.
    return bool(text) and all(c in _DIGITS for c in text)


def ean13_check_digit(first12: str) -> int:
    """The EAN-13 check digit of 12 ASCII digits (weights 1,3,1,3… from the left)."""
    if len(first12) != CARD_LENGTH - 1 or not _all_digits(first12):
        raise ValueError("need exactly 12 ASCII digits")
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(first12))
    return (10 - total % 10) % 10


def check_card(text: str, prefixes: Iterable[str] | None = DEFAULT_PREFIXES) -> CardReject | None:
    """None when ``text`` is a Cumulus card number, else why not.

    Checks run in this order so the reason is the most useful one: digits, length, check
    digit (a misread), prefix (someone else's valid barcode). ``prefixes=None`` checks the
    structure only (for code that does not know the configuration).
    """
    if not _all_digits(text):
        return "not-digits"
    if len(text) != CARD_LENGTH:
        return "bad-length"
    if int(text[-1]) != ean13_check_digit(text[:-1]):
        return "bad-check-digit"
    if prefixes is not None and not text.startswith(tuple(prefixes)):
        return "bad-prefix"
    return None


def validate_card(text: str, prefixes: Iterable[str] = DEFAULT_PREFIXES) -> str:
    """``text`` if it is a Cumulus card number, else CardRejectedError with the reason."""
    reason = check_card(text, prefixes)
    if reason is not None:
        raise CardRejectedError(reason)
    return text


def is_card(text: str, prefixes: Iterable[str] = DEFAULT_PREFIXES) -> bool:
    return check_card(text, prefixes) is None


def mask(card: str) -> str:
    """``2099*******82``: first 4 and last 2 characters kept, the rest starred.

    Strings shorter than 13 characters are starred entirely: too little would be hidden.
    """
    if len(card) < CARD_LENGTH:
        return "*" * len(card)
    return card[:4] + "*" * (len(card) - 6) + card[-2:]
