"""`make demo` end to end, unattended: scanner → prompt → decision → basket → HQ."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripted_demo_records_half_reaches_hq_and_leaks_no_card(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "demo", "--script", "6", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "cashier page:   http://127.0.0.1:" in text
    assert text.count("POS: basket") == 6
    assert "POS answers: {'recorded': 3, 'not recorded (customer declined)': 3}" in text
    assert text.count("HQ reader tier:") == 3
    assert "'purchase': 3" in text
    if "contactless:    vpcd slot" in text:  # where pcscd and vpcd are installed (CI)
        assert text.count("contactless: 2099") == 2
    assert not re.search(r"\b\d{13}\b", text + out.stderr), "an unmasked card number"
