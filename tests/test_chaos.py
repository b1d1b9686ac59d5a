"""The chaos suite, shortened for CI (`make chaos` runs it in full: 200 kills, 20,000 baskets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import main


@pytest.mark.slow
def test_short_chaos_run_loses_nothing_duplicates_nothing_invents_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--baskets", "400", "--kills", "8", "--seed", "2026", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert (
        "verdict: 0 lost, 0 duplicated, 0 invented; stream verifies from seq 1; counters "
        "match; agent exit 0 -> PASS" in out
    ), out
    assert status == 0
    assert " 8 agent kills" in out
    for event in ("HQ outages", "HQ faults", "scanner unplugs"):
        assert f" 0 {event}" not in out, event
