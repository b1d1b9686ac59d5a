"""A real pcscd for the PC/SC tests, with a lifetime the tests control.

Import the fixtures into a test module (``from tests.drivers.pcsc_rig import *``) or a
conftest. Only one pcscd can run per host, so every test using these must be marked
``@pytest.mark.pcsc`` and the tests run serially.

Fixtures:

- ``pcscd_daemon`` (session): starts ``pcscd --foreground`` once (output in a log file), waits
  until its socket answers and both vpcd readers are listed, stops it (SIGTERM) at the end.
  Skipped, with the reason, only if the pcscd binary is absent; fails clearly if vpcd is not
  installed or another pcscd (not ours) is running.
- ``pcscd`` (function): the same `Pcscd`, guaranteed running at the start of the test (a test
  before may have killed it). Helpers: ``kill()`` (SIGKILL: a crash, and instant),
  ``stop()`` (SIGTERM: 1.2-1.8 s), ``start()``, ``restart()``, ``running``, ``log_tail()``.
- ``vpcd_card`` (function, async): a factory ``vpcd_card(number, slot=0, **kw)`` of
  `VirtualCard`s on vpcd slot 0 or 1; at the end of the test every one is removed and the
  fixture waits until pcscd has seen both slots empty (`slots_empty`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from smartcard import scard

from firmware_stubs.pcscd import VPCD_CONF, PcscdError, PrivatePcscd
from firmware_stubs.pcscd import binary as pcscd_binary
from firmware_stubs.vpcd_card import VPCD_PORTS, VPCD_READERS, VirtualCard

READY_TIMEOUT_S = 15.0  # only there to fail instead of hanging, never an assertion


class Pcscd(PrivatePcscd):
    """`PrivatePcscd` whose start-up problems fail the test with pcscd's own words."""

    def start(self) -> None:
        try:
            super().start()
        except PcscdError as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def pcscd_daemon() -> Iterator[Pcscd]:
    found = pcscd_binary()
    if found is None:
        pytest.skip("pcscd is not installed (Debian: apt-get install pcscd vsmartcard-vpcd)")
    if not VPCD_CONF.exists():
        pytest.fail(f"{VPCD_CONF} missing: install vsmartcard-vpcd (scripts/bootstrap.sh does)")
    with tempfile.TemporaryDirectory(prefix="pcscd-test-") as tmp:
        daemon = Pcscd(Path(tmp) / "pcscd.log", found)
        daemon.start()
        try:
            yield daemon
        finally:
            daemon.stop()


@pytest.fixture
def pcscd(pcscd_daemon: Pcscd) -> Pcscd:
    pcscd_daemon.start()  # no-op when running; a test before may have killed it
    return pcscd_daemon


CardFactory = Callable[..., VirtualCard]


@pytest.fixture
async def vpcd_card(pcscd: Pcscd) -> AsyncIterator[CardFactory]:
    cards: list[VirtualCard] = []

    def make(number: str, slot: int = 0, **kwargs: Any) -> VirtualCard:
        card = VirtualCard(number, port=VPCD_PORTS[slot], **kwargs)
        cards.append(card)
        return card

    yield make
    for card in cards:
        await card.remove()
    if cards and pcscd.running:
        await slots_empty()


def _slots_with_a_card() -> list[str]:
    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return []
    try:
        request = [(name, scard.SCARD_STATE_UNAWARE) for name in VPCD_READERS]
        hr, states = scard.SCardGetStatusChange(context, 0, request)
        if hr != scard.SCARD_S_SUCCESS:
            return []
        return [name for name, state, _ in states if state & scard.SCARD_STATE_PRESENT]
    finally:
        scard.SCardReleaseContext(context)


async def slots_empty() -> None:
    """Wait until pcscd has seen every vpcd slot empty (it polls every 400 ms), so that the
    next test starts from a quiet reader rather than a card pcscd still believes in."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while _slots_with_a_card():
        if time.monotonic() > deadline:
            pytest.fail(f"pcscd still sees a card on {_slots_with_a_card()}")
        await asyncio.sleep(0.02)
