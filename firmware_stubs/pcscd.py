"""A private ``pcscd --foreground`` with a lifetime we control (demo, chaos runs, tests).

The vpcd virtual readers (Debian's vsmartcard-vpcd) come with it; `VirtualCard` presents
cards to them. Only one pcscd can run per host: `start()` refuses to start a second one
next to a pcscd that is not ours (`ForeignPcscd`), and `available()` tells whether this
machine can run one at all.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from smartcard import scard

from firmware_stubs.vpcd_card import VPCD_READERS

PID_FILE = Path("/run/pcscd/pcscd.pid")
VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
READY_TIMEOUT_S = 15.0


class PcscdError(RuntimeError):
    """pcscd could not be started, or did not show the vpcd readers in time."""


class ForeignPcscd(PcscdError):
    """Another pcscd (not ours) runs on this host."""


def binary() -> str | None:
    return shutil.which("pcscd") or next(
        (p for p in ("/usr/sbin/pcscd", "/usr/local/sbin/pcscd") if Path(p).exists()), None
    )


def available() -> bool:
    return binary() is not None and VPCD_CONF.exists()


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def foreign_pcscd(ours: int | None) -> int | None:
    """The pid of a running pcscd that is not ours, if there is one."""
    try:
        pid = int(PID_FILE.read_text().strip("\x00\n "))
    except (OSError, ValueError):
        return None
    if pid == ours or not pid_alive(pid):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "pcscd" else None


def vpcd_readers_listed() -> bool:
    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return False
    try:
        hr, readers = scard.SCardListReaders(context, [])
        return bool(hr == scard.SCARD_S_SUCCESS and all(r in readers for r in VPCD_READERS))
    finally:
        scard.SCardReleaseContext(context)


class PrivatePcscd:
    """One private ``pcscd --foreground`` whose output goes to `log_path`."""

    def __init__(self, log_path: Path, pcscd: str | None = None) -> None:
        found = pcscd or binary()
        if found is None:
            raise PcscdError("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
        self.binary = found
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
        foreign = foreign_pcscd(None)
        if foreign is not None:
            raise ForeignPcscd(
                f"another pcscd (pid {foreign}) is running; stop it first "
                "(e.g. systemctl stop pcscd.socket pcscd)"
            )
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [self.binary, "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is not for pcscd
            )
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not vpcd_readers_listed():
            if self.process.poll() is not None:
                raise PcscdError(f"pcscd exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise PcscdError(f"pcscd did not list the vpcd readers in time:\n{self.log_tail()}")
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
