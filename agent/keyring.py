"""Which HQ key the terminal seals to: the config's, or the current one of a signed keyset.

HQ rotates its HPKE keys by publishing a keyset (`GET /v1/keys`) signed by an HQ signing
key whose public half is pinned in `hq.keyset_public_key`. A fetched keyset is accepted
only if it verifies against the pin, has not expired, and is not older than the one held
(no rollback); it is then kept in `<state_dir>/hq-keyset.cbor`, so a restart without HQ
keeps sealing to the latest key. A kept copy is re-verified (signature, structure) at
start but not refused for having expired meanwhile: a terminal cut off from HQ must go on
recording, and HQ keeps old keys for reading until their data expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.envelope.keyset import Keyset, KeysetError, verify_keyset
from agent.fsutil import write_private

KEYSET_FILE = "hq-keyset.cbor"


@dataclass(frozen=True, slots=True)
class HqKeyChoice:
    kid: str
    suite: str
    public_raw: bytes
    keyset_seq: int | None  # None: from the config


def keyset_file(state_dir: Path) -> Path:
    return state_dir / KEYSET_FILE


def held_keyset(config: Config) -> Keyset | None:
    pin = config.hq.keyset_public_key
    path = keyset_file(config.terminal.state_dir)
    if pin is None or not path.exists():
        return None
    try:
        return verify_keyset(path.read_bytes(), pin, now=0)
    except KeysetError:
        return None  # a damaged or foreign copy: fall back to the config, fetch again


def choose(config: Config, keyset: Keyset | None) -> HqKeyChoice:
    if keyset is None:
        hq = config.hq
        return HqKeyChoice(hq.enc_kid, hq.enc_suite, hq.enc_public_key, None)
    key = keyset.current_key
    return HqKeyChoice(key.kid, key.suite, key.public_raw, keyset.seq)


def accept(config: Config, data: bytes, now: int, held: Keyset | None) -> Keyset | None:
    """Verify a fetched keyset; keep it when it is newer. Raises `KeysetError` if refused."""
    pin = config.hq.keyset_public_key
    if pin is None:
        return None
    keyset = verify_keyset(data, pin, now=now, min_seq=held.seq if held else 0)
    if held is not None and keyset.seq == held.seq:
        return None
    write_private(keyset_file(config.terminal.state_dir), data)
    return keyset
