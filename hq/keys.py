"""HQ's HPKE key records (reader tier): one JSON file per `enc_kid`, mode 0600.

Only the reader tier holds these; the ingest tier never needs them. Several kids can be
valid at once (rotation); old ones are kept for reading until their data has expired.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.envelope.suites import PrivateKey, generate_private_key, load_private_key, suite
from agent.fsutil import read_private, write_private

KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class HqKey:
    kid: str
    suite: str
    private_raw: bytes
    public_raw: bytes
    created_at: str

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def private_key(self) -> PrivateKey:
        return load_private_key(self.suite, self.private_raw)


def key_path(state_dir: Path, kid: str) -> Path:
    return state_dir / "keys" / f"{kid}.json"


def init(state_dir: Path, kid: str, suite_name: str) -> HqKey:
    if not KID_RE.fullmatch(kid):
        raise ValueError(f"kid {kid!r} must match [A-Za-z0-9._-]{{1,64}}")
    suite(suite_name)
    path = key_path(state_dir, kid)
    if path.exists():
        raise FileExistsError(f"key {kid!r} already exists at {path}")
    priv, pub = generate_private_key(suite_name)
    key = HqKey(kid, suite_name, priv, pub, datetime.now(UTC).isoformat(timespec="seconds"))
    record = {
        "kid": kid,
        "suite": suite_name,
        "created_at": key.created_at,
        "private_key": base64.b64encode(priv).decode(),
        "public_key": key.public_b64,
    }
    write_private(path, json.dumps(record, indent=2).encode())
    return key


def load(state_dir: Path, kid: str) -> HqKey:
    record = json.loads(read_private(key_path(state_dir, kid)))
    key = HqKey(
        record["kid"],
        record["suite"],
        base64.b64decode(record["private_key"]),
        base64.b64decode(record["public_key"]),
        record["created_at"],
    )
    key.private_key()  # validates length and encoding
    return key
