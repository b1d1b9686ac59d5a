"""`make demo`: what exists so far, end to end on one machine, with nothing to set up.

Today: makes an HQ key pair and a terminal key in a fresh directory, writes an agent.toml,
seals a few recorded purchases into the outbox, shows that the database holds no card number,
and opens the envelopes with HQ's private key as the reader tier would. It grows with the
project into the full demo (emulated readers, cashier page, embedded HQ, sync).
"""

from __future__ import annotations

import base64
import random
import sys
import tempfile
import time
from pathlib import Path

from agent import keys
from agent.config import load
from agent.envelope import Consent, Item, PurchasePayload, decode, open_payload, verify
from agent.envelope.suites import X25519_SUITE, load_private_key
from agent.ids import rfc3339_ms, uuid7
from agent.outbox import DB_NAME, Outbox, SealingKeys
from hq import keys as hq_keys

DEMO_CARDS = ("2099123456786", "2099000000019", "2099555555552")
DEMO_GTINS = ("7612345678900", "4006381333931", "5901234123457")


def mask(card: str) -> str:
    return card[:4] + "*" * (len(card) - 6) + card[-2:]


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="cumulus-demo-"))
    hq_key = hq_keys.init(root / "hq-state", "hq-demo", X25519_SUITE)
    cfg_path = root / "agent.toml"
    cfg_path.write_text(
        f'[terminal]\nid = "0042-07"\nstore = "0042"\nstate_dir = "state"\n\n'
        f'[hq]\nurl = "http://127.0.0.1:8443"\nenc_kid = "{hq_key.kid}"\n'
        f'enc_public_key = "{hq_key.public_b64}"\n'
    )
    cfg = load(cfg_path)
    tkey = keys.init(cfg.terminal.state_dir)
    print(f"demo directory   {root}")
    print(f"terminal         {cfg.terminal.id}, sig_kid {tkey.sig_kid}")
    print(f"HQ key           {hq_key.kid} ({X25519_SUITE})")
    sk = SealingKeys.build(
        cfg.terminal.id, tkey.private, hq_key.kid, X25519_SUITE, hq_key.public_raw
    )
    rng = random.Random()  # noqa: S311 - demo basket amounts, not secrets
    db = cfg.terminal.state_dir / DB_NAME
    with Outbox(db, sk) as ob:
        for card in DEMO_CARDS:
            items = tuple(Item(g, 1000, rng.randint(100, 990)) for g in DEMO_GTINS[:2])
            now = rfc3339_ms(time.time())
            sealed = ob.seal_purchase(
                PurchasePayload(
                    event_id=uuid7(),
                    occurred_at=now,
                    store=cfg.terminal.store,
                    terminal=cfg.terminal.id,
                    card=card,
                    receipt=f"R{rng.randint(1000, 9999)}",
                    currency="CHF",
                    total=sum(i.amount for i in items),
                    items=items,
                    consent=Consent(decided_at=now, latency_ms=rng.randint(400, 3000)),
                )
            )
            print(f"recorded         card {mask(card)} -> seq {sealed.seq}, {sealed.size} bytes")
        bodies = [e.body for e in ob.all_envelopes()]
    on_disk = b"".join(p.read_bytes() for p in db.parent.glob(DB_NAME + "*"))
    leaked = [mask(c) for c in DEMO_CARDS if c.encode() in on_disk]
    print(
        f"database         {len(on_disk)} bytes on disk; card numbers in clear: {leaked or 'none'}"
    )
    priv = load_private_key(X25519_SUITE, hq_key.private_raw)
    for body in bodies:
        env = decode(body)
        verify(env, base64.b64decode(tkey.public_b64))
        p = open_payload(env, X25519_SUITE, priv)
        assert isinstance(p, PurchasePayload)
        print(
            f"HQ reader tier   seq {env.header.seq}: card {mask(p.card)}, "
            f"{len(p.items)} items, CHF {p.total / 100:.2f} (signature and chain verified)"
        )
    print("next: the daemon, readers, cashier page and sync join this demo as they land")
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
