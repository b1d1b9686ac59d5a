from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def link(tmp_path: Path) -> Path:
    """Where a stub keeps the symlink to its pty (stable across unplug/replug)."""
    return tmp_path / "scanner"
