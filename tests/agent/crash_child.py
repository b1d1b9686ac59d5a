"""Child process for the crash-safety test: seals forever, printing each committed seq.

Usage: python -m tests.agent.crash_child DB STATE_DIR HQ_PUBLIC_HEX
A seq is printed only after `seal_purchase` returned, i.e. after COMMIT: exactly what the POS
would have been told.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from agent import keys
from agent.envelope.suites import X25519_SUITE
from agent.outbox import Outbox, SealingKeys
from tests.factories import purchase, random_card, random_gtin


def main() -> None:
    db, state, hq_hex = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    key = keys.load(state)
    sk = SealingKeys.build("0042-07", key.private, "hq-2026a", X25519_SUITE, bytes.fromhex(hq_hex))
    rng = random.Random()
    with Outbox(db, sk) as ob:
        while True:
            sealed = ob.seal_purchase(purchase(random_card(rng), [random_gtin(rng)]))
            sys.stdout.write(f"{sealed.seq}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
