"""`cumulus-hq` in-process: keys init, enroll, serve (over real TLS), export."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.envelope import cbor, sig_kid
from hq.cli import main
from hq.export import ExportError, mask_card, parse_period
from hq.ingest import ingest
from hq.storage import SqliteStorage
from tests.factories import HqKeyPair, hq_key_pair
from tests.hq.support import (
    SealingTerminal,
    client_ssl_context,
    install_hq_key,
    make_ca,
    post_batch,
)

DAY = 86_400
CARD = "2099123456786"
OTHER_CARD = "2099000000019"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "hq-state"


def test_keys_init_prints_the_public_key_and_keeps_the_private_part_0600(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "init", "--kid", "hq-2026a", "--state-dir", str(state)]) == 0
    out = capsys.readouterr()
    assert len(base64.b64decode(out.out.strip())) == 32
    assert stat.S_IMODE((state / "keys" / "hq-2026a.json").stat().st_mode) == 0o600
    assert main(["keys", "init", "--kid", "hq-2026a", "--state-dir", str(state)]) == 73


def test_enroll_registers_a_key_and_prints_its_sig_kid(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUMULUS_HQ_STATE", str(state))  # no --state-dir: the environment
    pub = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert main(["enroll", "--terminal", "0042-07", "--pubkey", b64(pub)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == sig_kid(pub) and "enrolled: terminal 0042-07" in out.err
    assert main(["enroll", "--terminal", "0042-07", "--pubkey", b64(pub)]) == 0
    assert "already enrolled" in capsys.readouterr().err
    with SqliteStorage(state / "hq.db") as s:
        assert s.terminal_keys("0042-07") == {sig_kid(pub): pub}


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--terminal", "bad id!", "--pubkey", b64(bytes(32))], 2, "--terminal"),
        (["--terminal", "0042-07", "--pubkey", "not base64!"], 2, "not base64"),
        (["--terminal", "0042-07", "--pubkey", b64(bytes(31))], 2, "32 bytes, got 31"),
        (
            ["--terminal", "0042-07", "--pubkey", b64(bytes(32)), "--db", "mysql://h/db"],
            2,
            "not supported yet",
        ),
    ],
)
def test_enroll_refuses_bad_input(
    state: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    assert main(["enroll", "--state-dir", str(state), *argv]) == status
    assert message in capsys.readouterr().err


def test_enroll_refuses_a_key_of_another_terminal(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = b64(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert main(["enroll", "--state-dir", str(state), "--terminal", "a", "--pubkey", pub]) == 0
    assert main(["enroll", "--state-dir", str(state), "--terminal", "b", "--pubkey", pub]) == 65
    assert "already registered for terminal a" in capsys.readouterr().err


# --- serve ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_runs_the_api_over_tls_until_told_to_stop(
    tmp_path: Path, state: Path, hq_keys: HqKeyPair
) -> None:
    tls = make_ca(tmp_path)
    terminal = SealingTerminal.create(tmp_path / "agent.db", hq_keys)
    assert main(["enroll", "--state-dir", str(state), "--terminal", terminal.terminal,
                 "--pubkey", b64(terminal.public_raw)]) == 0  # fmt: skip
    port = free_port()
    stop = threading.Event()
    status: list[int] = []

    async def shutdown_trigger() -> None:
        await asyncio.to_thread(stop.wait)

    argv = ["serve", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
            "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)]  # fmt: skip
    thread = threading.Thread(
        target=lambda: status.append(main(argv, shutdown_trigger=shutdown_trigger))
    )
    thread.start()
    url = f"https://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(tls.ca_file))
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(500):  # wait until it listens; not a timing assertion
                try:
                    async with session.get(f"{url}/healthz") as resp:
                        assert cbor.loads(await resp.read()) == {"status": "ok"}
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.01)
            terminal.seal(2)
            reply = await post_batch(session, url, terminal.bodies())
            assert (reply.status, reply.acked_through) == (200, 2)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
        terminal.close()
    assert status == [0]
    with SqliteStorage(state / "hq.db") as s:
        assert s.stored_seqs(terminal.terminal, terminal.stream) == [1, 2]


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--listen", "0.0.0.0:8443"], 2, "refusing plain HTTP on 0.0.0.0"),
        (["--listen", "nonsense"], 2, "expected HOST:PORT"),
        (["--tls-cert", "cert.pem"], 2, "go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], 78, "TLS"),
        (["--db", "mysql://x/y"], 2, "not supported yet"),
    ],
)
def test_serve_refuses_bad_options(
    state: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    status: int,
    message: str,
) -> None:
    assert main(["serve", "--state-dir", str(state), *extra]) == status
    assert message in capsys.readouterr().err


def test_serve_on_a_port_in_use_exits_unavailable(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"]
        assert main(argv) == 69
    assert "cannot listen on" in capsys.readouterr().err


# --- export ---------------------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path, state: Path, hq_keys: HqKeyPair) -> HqKeyPair:
    """HQ holding: CARD one and three years ago and last week, OTHER_CARD last month, and
    one CARD purchase sealed to a second, rotated-in HQ key."""
    install_hq_key(state, hq_keys)
    rotated = hq_key_pair(kid="hq-2027a")
    install_hq_key(state, rotated)
    now = time.time()
    first = SealingTerminal.create(tmp_path / "a.db", hq_keys)
    second = SealingTerminal.create(tmp_path / "b.db", rotated, terminal="0042-08")
    try:
        first.seal(card=CARD, at=now - 365 * DAY)
        first.seal(card=CARD, at=now - 3 * 365 * DAY)
        first.seal(card=OTHER_CARD, at=now - 30 * DAY)
        first.seal(card=CARD, at=now - 7 * DAY)
        second.seal(card=CARD, at=now - 2 * DAY)
        with SqliteStorage(state / "hq.db") as s:
            for t in (first, second):
                s.enroll(t.terminal, t.public_raw)
                assert ingest(s, t.bodies()).update.rejections == ()
    finally:
        first.close()
        second.close()
    return rotated


def export(state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["export", "--state-dir", str(state), "--card", CARD, *extra]) == 0
    out = capsys.readouterr()
    assert CARD not in out.err and mask_card(CARD) in out.err  # diagnostics: masked only
    doc: dict[str, object] = json.loads(out.out)
    return doc


def occurred(doc: dict[str, object]) -> list[int]:
    """Days ago of each exported purchase, oldest first."""
    now = datetime.now(UTC)
    purchases = doc["purchases"]
    assert isinstance(purchases, list)
    return [
        (now - datetime.fromisoformat(p["occurred_at"].replace("Z", "+00:00"))).days
        for p in purchases
    ]


def test_export_shows_only_that_cards_purchases_within_two_years(
    state: Path, history: HqKeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = export(state, capsys)
    assert doc["card"] == CARD and doc["count"] == 3
    assert occurred(doc) == [365, 7, 2]  # not the one three years ago, not OTHER_CARD
    purchases = doc["purchases"]
    assert isinstance(purchases, list)
    assert {p["envelope"]["enc_kid"] for p in purchases} == {"hq-2026a", "hq-2027a"}
    assert all(p["currency"] == "CHF" and p["items"] for p in purchases)
    assert OTHER_CARD not in json.dumps(doc)


@pytest.mark.parametrize(("since", "count"), [("2y", 3), ("18m", 3), ("30d", 2), ("1d", 0)])
def test_export_period(
    state: Path,
    history: HqKeyPair,
    capsys: pytest.CaptureFixture[str],
    since: str,
    count: int,
) -> None:
    assert export(state, capsys, "--since", since)["count"] == count


def test_export_with_one_kid_skips_the_others_and_says_so(
    state: Path, history: HqKeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--state-dir", str(state), "--card", CARD, "--kid", "hq-2026a"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["count"] == 2
    assert "no key for hq-2027a (1)" in out.err


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--card", "2099123456780"], 2, "2099*******80: not a card number"),
        (["--card", CARD, "--since", "2 years"], 2, "--since"),
        (["--card", CARD, "--since", "4y"], 2, "right of access covers the last 2 years"),
        (["--card", CARD, "--since", "25m"], 2, "right of access covers the last 2 years"),
        (["--card", CARD, "--kid", "nope"], 66, "no key 'nope'"),
    ],
)
def test_export_refuses_bad_input(
    state: Path,
    history: HqKeyPair,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    assert main(["export", "--state-dir", str(state), *argv]) == status
    assert message in capsys.readouterr().err


def test_export_needs_a_database_and_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    assert main(["export", "--state-dir", str(empty), "--card", CARD]) == 66
    assert "no HQ database" in capsys.readouterr().err
    SqliteStorage(empty / "hq.db").close()
    assert main(["export", "--state-dir", str(empty), "--card", CARD]) == 66
    assert "no HQ keys under" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "now", "start"),
    [
        ("2y", datetime(2026, 11, 29, 10, tzinfo=UTC), datetime(2024, 11, 29, 10, tzinfo=UTC)),
        ("2y", datetime(2028, 2, 29, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("18m", datetime(2026, 11, 29, tzinfo=UTC), datetime(2025, 5, 29, tzinfo=UTC)),
        ("1m", datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("30d", datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC)),
        ("2w", datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)),
    ],
)
def test_periods_count_calendar_years_and_months(text: str, now: datetime, start: datetime) -> None:
    assert parse_period(text).start(now) == start


@pytest.mark.parametrize("text", ["", "2", "y", "2x", "-1y", "1.5y"])
def test_bad_periods(text: str) -> None:
    with pytest.raises(ExportError):
        parse_period(text)


def test_masking() -> None:
    assert mask_card("2099123456782") == "2099*******82"
