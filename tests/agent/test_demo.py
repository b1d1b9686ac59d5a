"""`make demo` end to end, unattended: scanner → prompt → decision → basket → HQ."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripted_demo_records_half_reaches_hq_and_leaks_no_card(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "demo", "--script", "4", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "cashier page:   http://127.0.0.1:" in text
    assert text.count("POS: basket") == 4
    assert "POS answers: {'recorded': 2, 'not recorded (customer declined)': 2}" in text
    assert text.count("HQ reader tier:") == 2
    assert "'purchase': 2" in text
    assert not re.search(r"\b\d{13}\b", text + out.stderr), "an unmasked card number"
