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
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from smartcard import scard

from firmware_stubs.vpcd_card import VPCD_PORTS, VPCD_READERS, VirtualCard

PID_FILE = Path("/run/pcscd/pcscd.pid")
VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
READY_TIMEOUT_S = 15.0  # only there to fail instead of hanging, never an assertion


def _pid_alive(pid: int) -> bool:
    """True for a live process (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _foreign_pcscd(ours: int | None) -> int | None:
    """The pid of a running pcscd that is not ours, if there is one."""
    try:
        pid = int(PID_FILE.read_text().strip("\x00\n "))
    except (OSError, ValueError):
        return None
    if pid == ours or not _pid_alive(pid):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "pcscd" else None


def _vpcd_readers_listed() -> bool:
    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return False
    try:
        hr, readers = scard.SCardListReaders(context, [])
        return hr == scard.SCARD_S_SUCCESS and all(r in readers for r in VPCD_READERS)
    finally:
        scard.SCardReleaseContext(context)


class Pcscd:
    """One private ``pcscd --foreground``; see the module docstring."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start pcscd and return once its socket answers and the vpcd readers are there."""
        if self.running:
            return
        foreign = _foreign_pcscd(None)
        if foreign is not None:
            pytest.fail(
                f"another pcscd (pid {foreign}) is running; the PC/SC tests need their own. "
                "Stop it first (e.g. systemctl stop pcscd.socket pcscd)."
            )
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [self.binary, "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest only
            )
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _vpcd_readers_listed():
            if self.process.poll() is not None:
                pytest.fail(f"pcscd exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"pcscd did not list the vpcd readers in time:\n{self.log_tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: pcscd crashes (instantly); clients see SCARD_E_NO_SERVICE."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the orderly way out (pcscd takes 1.2-1.8 s)."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


@pytest.fixture(scope="session")
def pcscd_daemon() -> Iterator[Pcscd]:
    binary = shutil.which("pcscd") or next(
        (p for p in ("/usr/sbin/pcscd", "/usr/local/sbin/pcscd") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("pcscd is not installed (Debian: apt-get install pcscd vsmartcard-vpcd)")
    if not VPCD_CONF.exists():
        pytest.fail(f"{VPCD_CONF} missing: install vsmartcard-vpcd (scripts/bootstrap.sh does)")
    with tempfile.TemporaryDirectory(prefix="pcscd-test-") as tmp:
        daemon = Pcscd(binary, Path(tmp) / "pcscd.log")
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
