"""The signed keyset: format, verification against a pinned key, GET /v1/keys, rotation CLI."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from pathlib import Path

import aiohttp
import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import cbor
from hq.cli import main
from hq.keyset import Keyset, KeysetError, KeysetKey, sign_keyset, signer_id, verify_keyset
from hq.server import HqServer
from hq.storage import SqliteStorage
from tests.factories import hq_key_pair
from tests.hq.support import SealingTerminal, install_hq_key

NOW = 1_790_000_000


def keyset(signing: Ed25519PrivateKey, **changes: object) -> Keyset:
    a, b = hq_key_pair(kid="hq-2026a"), hq_key_pair(kid="hq-2027a")
    base = Keyset(
        seq=3,
        issued=NOW - 10,
        expires=NOW + 86_400,
        current="hq-2027a",
        keys=(KeysetKey(a.kid, a.suite, a.public_raw), KeysetKey(b.kid, b.suite, b.public_raw)),
        signer=signer_id(signing.public_key()),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def signing() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_signed_keyset_verifies_against_the_pinned_key(signing: Ed25519PrivateKey) -> None:
    ks = keyset(signing)
    data = sign_keyset(ks, signing)
    pinned = signing.public_key().public_bytes_raw()
    assert verify_keyset(data, pinned, now=NOW, min_seq=3) == ks
    assert verify_keyset(data, pinned, now=NOW).current_key.kid == "hq-2027a"
    raw = cbor.loads(data)
    assert set(raw) == {"v", "seq", "issued", "expires", "current", "keys", "signer", "sig"}


def _tamper(data: bytes, **fields: object) -> bytes:
    raw = cbor.loads(data)
    raw.update(fields)
    return cbor.dumps(raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d, s: d[:-1] + bytes([d[-1] ^ 1]), "signature does not verify"),
        (lambda d, s: _tamper(d, current="hq-2026a"), "signature does not verify"),
        (lambda d, s: _tamper(d, extra=1), "expected exactly the fields"),
        (lambda d, s: cbor2.dumps(dict(reversed(cbor.loads(d).items()))), "not deterministic"),
        (lambda d, s: d + b"\x00", "not deterministic"),
        (lambda d, s: sign_keyset(keyset(s, expires=NOW), s), "expired"),
        (lambda d, s: sign_keyset(keyset(s, seq=2), s), "older than seq 3"),
    ],
)
def test_a_bad_keyset_is_refused(signing: Ed25519PrivateKey, mutate: object, message: str) -> None:
    data = mutate(sign_keyset(keyset(signing), signing), signing)  # type: ignore[operator]
    with pytest.raises(KeysetError, match=message):
        verify_keyset(data, signing.public_key(), now=NOW, min_seq=3)


def test_a_keyset_of_another_signer_is_refused(signing: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    data = sign_keyset(keyset(other), other)
    with pytest.raises(KeysetError, match="pinned HQ signing key is"):
        verify_keyset(data, signing.public_key(), now=NOW)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"current": "hq-2099x"}, "not among keyset.keys"),
        ({"expires": NOW - 10}, "expires must be after"),
    ],
)
def test_an_inconsistent_keyset_is_never_signed(
    signing: Ed25519PrivateKey, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(KeysetError, match=message):
        sign_keyset(keyset(signing, **changes), signing)


def run(state: Path, *argv: str) -> int:
    return main([argv[0], *argv[1:], "--state-dir", str(state)])


def test_rotation_with_the_cli_publishes_keysets_served_by_get_v1_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "hq-state"
    assert main(["keys", "signing-init", "--state-dir", str(state)]) == 0
    pinned = base64.b64decode(capsys.readouterr().out.strip())
    assert stat.S_IMODE((state / "signing-key.json").stat().st_mode) == 0o600
    assert main(["keys", "signing-init", "--state-dir", str(state)]) == 73
    for kid in ("hq-2026a", "hq-2027a"):
        assert main(["keys", "init", "--kid", kid, "--state-dir", str(state)]) == 0
    sign = ["keys", "sign-keyset", "--state-dir", str(state)]
    assert main([*sign, "--current", "hq-2026a"]) == 0
    assert main([*sign, "--current", "hq-2027a", "--also", "hq-2026a"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["seq"] == 2
    assert main([*sign, "--current", "hq-2099x"]) == 66
    assert "missing" in capsys.readouterr().err

    published = (state / "keyset.cbor").read_bytes()
    ks = verify_keyset(published, pinned, now=NOW, min_seq=2)
    assert (ks.seq, ks.current, [k.kid for k in ks.keys]) == (
        2,
        "hq-2027a",
        ["hq-2026a", "hq-2027a"],
    )


async def test_get_v1_keys_serves_the_published_bytes_or_404(tmp_path: Path) -> None:
    state = tmp_path / "hq-state"
    async with HqServer.for_db(None, state) as server, aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/v1/keys") as resp:
            assert resp.status == 404 and resp.content_type == "application/cbor"
            assert cbor.loads(await resp.read())["error"].startswith("not-found: no keyset")
        assert main(["keys", "signing-init", "--state-dir", str(state)]) == 0
        assert main(["keys", "init", "--kid", "hq-2026a", "--state-dir", str(state)]) == 0
        assert (
            main(["keys", "sign-keyset", "--current", "hq-2026a", "--state-dir", str(state)]) == 0
        )
        async with s.get(f"{server.url}/v1/keys") as resp:
            assert resp.status == 200 and resp.content_type == "application/cbor"
            assert await resp.read() == (state / "keyset.cbor").read_bytes()


def test_a_key_is_retired_only_when_unoffered_and_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "hq-state"
    old, new = hq_key_pair(kid="hq-2026a"), hq_key_pair(kid="hq-2027a")
    for k in (old, new):
        install_hq_key(state, k)
    assert run(state, "keys", "signing-init") == 0
    assert run(state, "keys", "sign-keyset", "--current", "hq-2027a", "--also", "hq-2026a") == 0
    terminal = SealingTerminal.create(tmp_path / "t.db", old)
    terminal.seal(2)
    from hq.ingest import ingest

    with SqliteStorage(state / "hq.db") as s:
        s.enroll(terminal.terminal, terminal.public_raw)
        ingest(s, terminal.bodies())
    terminal.close()
    capsys.readouterr()
    assert run(state, "keys", "retire", "--kid", "hq-2026a") == 65
    assert "still offered" in capsys.readouterr().err
    assert run(state, "keys", "sign-keyset", "--current", "hq-2027a") == 0
    capsys.readouterr()
    assert run(state, "keys", "list", "--json") == 0
    listing = json.loads(capsys.readouterr().out)["keys"]
    assert [(k["kid"], k["keyset"], k["envelopes"]) for k in listing] == [
        ("hq-2026a", "-", 2),
        ("hq-2027a", "current", 0),
    ]
    assert run(state, "keys", "retire", "--kid", "hq-2026a") == 65
    assert "2 stored envelopes are sealed to hq-2026a" in capsys.readouterr().err
    with SqliteStorage(state / "hq.db") as s:  # as retention will have done, years later
        s.execute("DELETE FROM envelopes")
    assert run(state, "keys", "retire", "--kid", "hq-2026a") == 0
    assert not (state / "keys" / "hq-2026a.json").exists()
    with SqliteStorage(state / "hq.db") as s:
        assert [e.action for e in s.audit_log()] == ["keys.retire"]
