"""HQ's key files: HPKE key records (one JSON file per `enc_kid`) and the signing key.

Only the reader tier holds these, each mode 0600 and refused when group or others can read
it; the ingest tier never needs them (it serves the signed keyset, `keyset.cbor`, as bytes).
Several kids can be valid at once (rotation); old ones are kept for reading until their
data has expired, then retired (the private key deleted).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import cbor
from agent.envelope.suites import PrivateKey, generate_private_key, load_private_key, suite
from agent.fsutil import fsync_dir, read_private, write_private
from hq.keyset import Keyset, KeysetKey, sign_keyset, signer_id

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


def all_keys(state_dir: Path) -> list[HqKey]:
    """Every reader-tier key under `<state-dir>/keys`, by kid."""
    return [load(state_dir, p.stem) for p in sorted((state_dir / "keys").glob("*.json"))]


def retire(state_dir: Path, kid: str) -> Path:
    """Delete the private key of `kid`: what it encrypted can never be read again.

    The caller (`cumulus-hq keys retire`) checks first that no stored envelope is sealed to
    it and that the published keyset no longer offers it."""
    path = key_path(state_dir, kid)
    if not path.exists():
        raise FileNotFoundError(f"no key {kid!r} at {path}")
    path.unlink()
    fsync_dir(path.parent)
    return path


# --- the HQ signing key (keysets) ---------------------------------------------------------------

SIGNING_KEY_FILE = "signing-key.json"
KEYSET_FILE = "keyset.cbor"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """HQ's Ed25519 key that signs keysets; terminals pin its public half."""

    private: Ed25519PrivateKey
    created_at: str

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    @property
    def kid(self) -> str:
        return signer_id(self.public_raw)


def signing_key_path(state_dir: Path) -> Path:
    return state_dir / SIGNING_KEY_FILE


def init_signing_key(state_dir: Path) -> SigningKey:
    path = signing_key_path(state_dir)
    if path.exists():
        raise FileExistsError(f"an HQ signing key already exists at {path}")
    key = SigningKey(Ed25519PrivateKey.generate(), datetime.now(UTC).isoformat(timespec="seconds"))
    raw = key.private.private_bytes_raw()
    record = {
        "kid": key.kid,
        "created_at": key.created_at,
        "private_key": base64.b64encode(raw).decode(),
        "public_key": key.public_b64,
    }
    write_private(path, json.dumps(record, indent=2).encode())
    return key


def load_signing_key(state_dir: Path) -> SigningKey:
    """The signing key, refused if group or others can read its file."""
    record = json.loads(read_private(signing_key_path(state_dir)))
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(record["private_key"]))
    return SigningKey(private, record["created_at"])


def keyset_path(state_dir: Path) -> Path:
    return state_dir / KEYSET_FILE


def published_keyset(state_dir: Path) -> bytes | None:
    path = keyset_path(state_dir)
    return path.read_bytes() if path.exists() else None


def publish_keyset(
    state_dir: Path,
    current: str,
    also: Sequence[str],
    valid_for: timedelta,
    *,
    now: datetime | None = None,
) -> tuple[Keyset, bytes]:
    """Sign a keyset offering `current` (and `also`) and write it where `serve` reads it.

    `seq` is one more than the keyset published before (terminals refuse to go back)."""
    signing = load_signing_key(state_dir)
    kids = sorted({current, *also})
    keys = tuple(
        KeysetKey(k.kid, k.suite, k.public_raw) for k in map(partial(load, state_dir), kids)
    )
    previous = published_keyset(state_dir)
    seq = 1
    if previous is not None:
        seq = int(cbor.loads(previous, what="keyset")["seq"]) + 1  # signer may have changed
    issued = now or datetime.now(UTC)
    keyset = Keyset(
        seq=seq,
        issued=int(issued.timestamp()),
        expires=int((issued + valid_for).timestamp()),
        current=current,
        keys=keys,
        signer=signing.kid,
    )
    data = sign_keyset(keyset, signing.private)
    path = keyset_path(state_dir)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)  # public: the ingest tier serves it
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return keyset, data
