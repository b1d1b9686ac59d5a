"""`make demo` runs what exists end to end and never prints a card number in clear."""

from __future__ import annotations

import re

import pytest

from agent import demo


def test_demo_records_opens_at_hq_and_leaks_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "card numbers in clear: none" in out
    assert out.count("signature and chain verified") == len(demo.DEMO_CARDS)
    assert not re.search(r"\b\d{13}\b", out), "an unmasked card number was printed"
