"""Validation of the POS's JSON bodies: one clear message per problem, nothing half-read.

The POS is someone else's software; its bugs must become a 400 with a message its developer
can act on ("items[3].gtin: check digit should be 4"), never a 500 and never a wrong record.
Amounts are integers in minor units, quantities integers in thousandths; the total must equal
the sum of the item amounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.envelope import Item

MAX_BODY = 256 * 1024
MAX_ITEMS = 500
CURRENCIES = frozenset({"CHF", "EUR"})
GTIN_LENGTHS = (8, 12, 13, 14)
RECEIPT_RE = re.compile(r"[\x21-\x7e]{1,64}")
AMOUNT_LIMIT = 10**9  # CHF 10 million in Rappen: anything larger is a POS bug


class BodyError(ValueError):
    """The body is not acceptable; `str()` is the message for the POS developer."""


@dataclass(frozen=True, slots=True)
class Basket:
    receipt: str
    currency: str
    total: int
    items: tuple[Item, ...]


def gtin_check_ok(gtin: str) -> bool:
    """GS1 check digit: weights 3,1 from the right, excluding the check digit."""
    body, check = gtin[:-1], int(gtin[-1])
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def _int(value: Any, where: str, *, minimum: int, maximum: int = AMOUNT_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(
            f"{where}: must be an integer (minor units / thousandths), got {type(value).__name__}"
        )
    if not minimum <= value <= maximum:
        raise BodyError(f"{where}: {value} is out of range {minimum}..{maximum}")
    return value


def parse_basket(data: Any) -> Basket:
    if not isinstance(data, dict):
        raise BodyError("body: must be a JSON object")
    allowed = {"receipt", "currency", "total", "items"}
    for key in data:
        if key not in allowed:
            raise BodyError(f"{key}: unknown field")
    for key in sorted(allowed):
        if key not in data:
            raise BodyError(f"{key}: missing")
    receipt = data["receipt"]
    if not isinstance(receipt, str) or not RECEIPT_RE.fullmatch(receipt):
        raise BodyError("receipt: must be 1 to 64 printable ASCII characters")
    currency = data["currency"]
    if currency not in CURRENCIES:
        raise BodyError(f"currency: must be one of {', '.join(sorted(CURRENCIES))}")
    raw_items = data["items"]
    if not isinstance(raw_items, list):
        raise BodyError("items: must be an array")
    if not raw_items:
        raise BodyError("items: at least one item")
    if len(raw_items) > MAX_ITEMS:
        raise BodyError(f"items: at most {MAX_ITEMS} items, got {len(raw_items)}")
    items = []
    for n, it in enumerate(raw_items):
        where = f"items[{n}]"
        if not isinstance(it, dict) or set(it) != {"gtin", "qty", "amount"}:
            raise BodyError(f"{where}: must be an object with exactly gtin, qty, amount")
        gtin = it["gtin"]
        if (
            not isinstance(gtin, str)
            or not gtin.isascii()
            or not gtin.isdigit()
            or len(gtin) not in GTIN_LENGTHS
        ):
            raise BodyError(f"{where}.gtin: must be 8, 12, 13 or 14 digits")
        if not gtin_check_ok(gtin):
            raise BodyError(f"{where}.gtin: {gtin!r} has a wrong check digit")
        qty = _int(it["qty"], f"{where}.qty", minimum=-(10**7), maximum=10**7)
        if qty == 0:
            raise BodyError(f"{where}.qty: must not be 0")
        amount = _int(it["amount"], f"{where}.amount", minimum=-AMOUNT_LIMIT)
        items.append(Item(gtin, qty, amount))
    total = _int(data["total"], "total", minimum=-AMOUNT_LIMIT)
    expected = sum(i.amount for i in items)
    if total != expected:
        raise BodyError(f"total: {total} is not the sum of the item amounts ({expected})")
    return Basket(receipt, currency, total, tuple(items))


def parse_decision(data: Any) -> str:
    if not isinstance(data, dict) or set(data) != {"decision"}:
        raise BodyError('body: must be {"decision": "record" | "skip"}')
    if data["decision"] not in ("record", "skip"):
        raise BodyError('decision: must be "record" or "skip"')
    return str(data["decision"])


def parse_card_body(data: Any) -> str:
    if not isinstance(data, dict) or set(data) != {"card"} or not isinstance(data["card"], str):
        raise BodyError('body: must be {"card": "<13 digits>"}')
    return str(data["card"])
