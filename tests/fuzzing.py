"""One knob for every fuzz target: `make fuzz` sets CUMULUS_FUZZ_SCALE (e.g. 50) to run the
same hypothesis targets with that many times more examples; `make test` runs them short."""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("CUMULUS_FUZZ_SCALE", "1")))


def scaled(n: int) -> int:
    return n * SCALE
