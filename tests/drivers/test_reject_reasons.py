"""Reject reasons are a fixed, documented set of short kebab-case strings."""

from __future__ import annotations

import re
from pathlib import Path

from drivers.cards import CARD_REJECTS
from drivers.protocols import FRAMING_REJECTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "serial.md"


def test_reasons_are_short_kebab_case_and_never_ambiguous() -> None:
    assert not FRAMING_REJECTS & CARD_REJECTS
    for reason in FRAMING_REJECTS | CARD_REJECTS:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", reason), reason
        assert len(reason) <= 16


def test_every_reason_is_documented_in_docs_serial_md() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z-]+)` \| (?:framing|card rules) \|", text, re.M))
    assert documented == FRAMING_REJECTS | CARD_REJECTS
