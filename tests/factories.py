"""Builders for test data: valid card numbers, GTINs, purchases, configs, HQ keys."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from pathlib import Path

from agent.envelope import Consent, Item, PurchasePayload
from agent.envelope.suites import X25519_SUITE, generate_private_key
from agent.ids import rfc3339_ms, uuid7


def ean13(body12: str) -> str:
    """Append the EAN-13 check digit (weights 1,3 from the left)."""
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body12))
    return body12 + str((10 - total % 10) % 10)


def random_card(rng: random.Random, prefix: str = "2099") -> str:
    return ean13(prefix + "".join(rng.choice("0123456789") for _ in range(12 - len(prefix))))


def random_gtin(rng: random.Random) -> str:
    return ean13("76" + "".join(rng.choice("0123456789") for _ in range(10)))


def purchase(
    card: str,
    gtins: list[str],
    *,
    terminal: str = "0042-07",
    store: str = "0042",
    at: float = 1_764_000_000.0,
) -> PurchasePayload:
    items = tuple(Item(g, 1000 * (n + 1), 100 * (n + 1) + 95) for n, g in enumerate(gtins))
    return PurchasePayload(
        event_id=uuid7(),
        occurred_at=rfc3339_ms(at),
        store=store,
        terminal=terminal,
        card=card,
        receipt=f"R-{int(at)}",
        currency="CHF",
        total=sum(i.amount for i in items),
        items=items,
        consent=Consent(decided_at=rfc3339_ms(at - 2), latency_ms=1800),
    )


@dataclass(frozen=True)
class HqKeyPair:
    suite: str
    kid: str
    private_raw: bytes
    public_raw: bytes

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()


def hq_key_pair(suite: str = X25519_SUITE, kid: str = "hq-2026a") -> HqKeyPair:
    priv, pub = generate_private_key(suite)
    return HqKeyPair(suite, kid, priv, pub)


#: Loopback, port 9 (discard): tests never resolve or reach a name outside this machine.
HQ_URL = "https://127.0.0.1:9"


def write_config(
    directory: Path, hq: HqKeyPair, extra: str = "", *, terminal: str = "0042-07"
) -> Path:
    """A complete, valid agent.toml in `directory` (state under directory/state)."""
    path = directory / "agent.toml"
    path.write_text(
        f"""
[terminal]
id = "{terminal}"
store = "0042"
state_dir = "state"

[hq]
url = "{HQ_URL}"
enc_kid = "{hq.kid}"
enc_suite = "{hq.suite}"
enc_public_key = "{hq.public_b64}"
{extra}
"""
    )
    return path
