"""The chaos suite, shortened for CI (`make chaos` runs it in full: 200 kills, 20,000 baskets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import main
from tests.drivers.pcsc_rig import Pcscd


@pytest.mark.slow
@pytest.mark.pcsc  # it runs its own pcscd when it can: not beside the other PC/SC tests
def test_short_chaos_run_loses_nothing_duplicates_nothing_invents_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pcscd: Pcscd
) -> None:
    status = main(
        ["--baskets", "400", "--kills", "8", "--seed", "2026", "--dir", str(tmp_path)], pcscd=pcscd
    )  # the test session's pcscd, lent to be killed and restarted
    out = capsys.readouterr().out
    assert (
        "verdict: 0 lost, 0 duplicated, 0 invented; stream verifies from seq 1; counters "
        "match; agent exit 0 -> PASS" in out
    ), out
    assert status == 0
    assert " 8 agent kills" in out
    for event in ("HQ outages", "HQ faults", "scanner unplugs", "pcscd restarts"):
        assert f" 0 {event}" not in out, event
