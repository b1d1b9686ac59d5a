"""The terminal's Ed25519 signing key: made once, kept private, rotated with a memory.

Layout under `<state_dir>/keys/`: `signing.key` (PKCS#8 PEM, mode 0600, written atomically)
and `retired.json` (public keys and `sig_kid`s of keys rotated out, so HQ can still verify
envelopes signed before a rotation; the retired private keys are destroyed). A key file that
group or others can read is refused: a copy of it would let anyone forge this terminal.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import sig_kid
from agent.fsutil import UnsafePermissions, read_private, write_private

__all__ = ["KeyExists", "KeyMissing", "RetiredKey", "TerminalKey", "UnsafePermissions"]


class KeyMissing(Exception):
    """No signing key yet: `cumulus-agent keys init` makes one."""


class KeyExists(Exception):
    """`keys init` would overwrite a key: refuse, rotation is a separate, audited act."""


class KeyCorrupt(Exception):
    """The key file exists but is not an Ed25519 PKCS#8 key."""


@dataclass(frozen=True, slots=True)
class RetiredKey:
    sig_kid: str
    public_key_b64: str
    retired_at: str


@dataclass(frozen=True, slots=True)
class TerminalKey:
    private: Ed25519PrivateKey
    retired: tuple[RetiredKey, ...] = ()

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    @property
    def sig_kid(self) -> str:
        return sig_kid(self.public_raw)


def key_dir(state_dir: Path) -> Path:
    return state_dir / "keys"


def _key_path(state_dir: Path) -> Path:
    return key_dir(state_dir) / "signing.key"


def _retired_path(state_dir: Path) -> Path:
    return key_dir(state_dir) / "retired.json"


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load(state_dir: Path) -> TerminalKey:
    """Load the current key and the retired list; refuse unsafe permissions."""
    path = _key_path(state_dir)
    try:
        pem = read_private(path)
    except FileNotFoundError:
        raise KeyMissing(f"no signing key at {path}: run 'cumulus-agent keys init'") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyCorrupt(f"{path} is not a readable private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyCorrupt(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return TerminalKey(key, _load_retired(state_dir))


def _load_retired(state_dir: Path) -> tuple[RetiredKey, ...]:
    path = _retired_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise KeyCorrupt(f"{path} is unreadable: {exc}") from None
    try:
        return tuple(RetiredKey(r["sig_kid"], r["public_key"], r["retired_at"]) for r in data)
    except (KeyError, TypeError) as exc:
        raise KeyCorrupt(f"{path} has an unexpected structure: {exc}") from None


def init(state_dir: Path) -> TerminalKey:
    """Make the first signing key; refuse if one exists."""
    path = _key_path(state_dir)
    if path.exists():
        raise KeyExists(f"a signing key already exists at {path}; use 'keys rotate'")
    key = Ed25519PrivateKey.generate()
    write_private(path, _pem(key))
    return TerminalKey(key)


def rotate(state_dir: Path, now: datetime | None = None) -> tuple[TerminalKey, RetiredKey]:
    """Replace the signing key; the old public key joins the retired list (written first)."""
    old = load(state_dir)
    retired = RetiredKey(
        old.sig_kid, old.public_b64, (now or datetime.now(UTC)).isoformat(timespec="seconds")
    )
    listing = [*old.retired, retired]
    write_private(
        _retired_path(state_dir),
        json.dumps(
            [
                {"sig_kid": r.sig_kid, "public_key": r.public_key_b64, "retired_at": r.retired_at}
                for r in listing
            ],
            indent=2,
        ).encode(),
    )
    new = Ed25519PrivateKey.generate()
    write_private(_key_path(state_dir), _pem(new))
    return TerminalKey(new, tuple(listing)), retired
