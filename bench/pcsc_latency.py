"""PC/SC read latency: card presented → CardRead delivered, beside its floor in the same run.

Figure: per tap, from the moment the virtual card (`firmware_stubs.vpcd_card`) is presented to
vpcd to the moment `PcscMonitor` hands the `CardRead` to its consumer, through a real pcscd.
It has two parts, both printed:
- detection, presented → the watcher's SCardGetStatusChange returns: pcscd's status thread
  polls each vpcd reader every 400 ms, so this is ~uniform over 0-400 ms and not our code;
- the exchange, detected → delivered: connect, SELECT, READ, disconnect, the hop to the
  event loop and the checks. This is our code.
Floor: a bare pyscard SCardConnect + the same two SCardTransmit on the same kind of card
(none of our code), the floor of the exchange part as asked. Beside the end-to-end figure
stands the end-to-end floor: a bare SCardGetStatusChange loop waiting for the card, then the
same connect + two transmits, i.e. what any PC/SC program pays, detection included.
Taps alternate between the monitor (reader "Virtual PCD 00 00") and the bare loop ("Virtual
PCD 00 01") so both see the same machine weather; every tap is a distinct card number (no
double-read suppression); the next tap on a reader waits until pcscd has seen the card go
(else pcscd may miss the swap), then a random 0-400 ms more, so that taps fall on any phase
of pcscd's poll as a customer's do (without it the poll phase locks to the loop: always 400).
Uses the running pcscd if it lists the vpcd readers, else starts ``pcscd --foreground`` and
stops it at the end.

Run: .venv/bin/python bench/pcsc_latency.py [--taps 200] [--seed 1] [--json]
(about 1.3 s per tap pair: ~4.5 min for 200 taps, since every tap waits on pcscd's polls)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smartcard import scard

from drivers.events import CardRead
from drivers.pcsc import PcscMonitor, PcscUnavailableError, list_readers
from drivers.pcsc_thread import CardRemoved, CardResult, Observation
from drivers.protocols.apdu import READ_NUMBER, SELECT
from firmware_stubs.vpcd_card import VPCD_PORTS, VPCD_READERS, VirtualCard

WARMUP = 5
POLL_S = 0.4  # pcscd's status thread polls a vpcd reader this often
PRESENT = scard.SCARD_STATE_PRESENT
CHANGED = scard.SCARD_STATE_CHANGED


def card_number(n: int) -> str:
    body = f"2099{n:08d}"
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body))
    return body + str((10 - total % 10) % 10)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@contextmanager
def pcscd_running() -> Iterator[None]:
    try:
        if set(VPCD_READERS) <= set(list_readers()):
            yield
            return
    except PcscUnavailableError:
        pass
    binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
    process = subprocess.Popen(
        [binary, "--foreground"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if set(VPCD_READERS) <= set(list_readers()):
                    break
            except PcscUnavailableError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("pcscd with vpcd did not come up (is vsmartcard-vpcd installed?)")
            time.sleep(0.02)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


class Bare:
    """The floor: a plain blocking pyscard client on one reader, none of our code."""

    def __init__(self, reader: str) -> None:
        self.reader = reader
        hr, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hr == scard.SCARD_S_SUCCESS, hr
        hr, states = scard.SCardGetStatusChange(
            self.context, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        self.state = states[0][1] & ~CHANGED

    def _wait(self, want_present: bool) -> float:
        while bool(self.state & PRESENT) != want_present:
            hr, states = scard.SCardGetStatusChange(
                self.context, 10_000, [(self.reader, self.state)]
            )
            if hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
                raise RuntimeError(f"SCardGetStatusChange: 0x{hr & 0xFFFFFFFF:08X}")
            self.state = states[0][1] & ~CHANGED
        return time.monotonic()

    def tap(self, number: str) -> tuple[float, float, float]:
        """Wait for the card, read it: (detected, exchange started, exchange done)."""
        detected = self._wait(True)
        start = time.monotonic()
        hr, card, protocol = scard.SCardConnect(
            self.context,
            self.reader,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        assert hr == scard.SCARD_S_SUCCESS, hr
        scard.SCardTransmit(card, protocol, list(SELECT.to_bytes()))
        hr, response = scard.SCardTransmit(card, protocol, list(READ_NUMBER.to_bytes()))
        done = time.monotonic()
        scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
        assert bytes(response) == number.encode() + b"\x90\x00", (hr, response)
        return detected, start, done

    def wait_gone(self) -> None:
        self._wait(False)

    def close(self) -> None:
        scard.SCardReleaseContext(self.context)


async def measure(taps: int, seed: int) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    delivered: asyncio.Future[tuple[CardRead, float]] | None = None
    detected_at: dict[str, float] = {}
    gone = asyncio.Event()

    def emit(read: CardRead) -> None:
        if delivered is not None and not delivered.done():
            delivered.set_result((read, time.monotonic()))

    def observe(observation: Observation) -> None:
        if isinstance(observation, CardResult):
            detected_at[observation.reader] = observation.detected_at
        elif isinstance(observation, CardRemoved):
            gone.set()

    monitor = PcscMonitor(VPCD_READERS[0], dedup_window_s=0)
    monitor.add_observer(observe)
    task = loop.create_task(monitor.run(emit))
    bare = Bare(VPCD_READERS[1])
    ours, bare_card = VirtualCard("", port=VPCD_PORTS[0]), VirtualCard("", port=VPCD_PORTS[1])
    out: dict[str, list[float]] = {"e2e": [], "exchange": [], "floor_e2e": [], "floor": []}
    try:
        for i in range(WARMUP + taps):
            keep = i >= WARMUP
            # figure: the monitor on reader 00 00
            delivered, gone = loop.create_future(), asyncio.Event()
            ours.number = card_number(2 * i)
            await asyncio.sleep(rng.uniform(0, POLL_S))  # a customer's tap: any poll phase
            t0 = time.monotonic()
            ours.present()
            read, t_emit = await asyncio.wait_for(delivered, 30)
            assert read.card == ours.number
            await ours.remove()  # pcscd notices while the floor tap runs
            if keep:
                out["e2e"].append(t_emit - t0)
                out["exchange"].append(t_emit - detected_at[VPCD_READERS[0]])
            # floor: the bare loop on reader 00 01
            bare_card.number = card_number(2 * i + 1)
            tapping = asyncio.ensure_future(asyncio.to_thread(bare.tap, bare_card.number))
            await asyncio.sleep(rng.uniform(0, POLL_S))
            t0 = time.monotonic()
            bare_card.present()
            _, start, done = await asyncio.wait_for(tapping, 30)
            await bare_card.remove()
            if keep:
                out["floor_e2e"].append(done - t0)
                out["floor"].append(done - start)
            await asyncio.wait_for(gone.wait(), 30)
            await asyncio.to_thread(bare.wait_gone)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        bare.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--taps", type=int, default=200, help="taps measured for each of the two")
    ap.add_argument("--seed", type=int, default=1, help="for the random tap phases")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with pcscd_running():
        samples = asyncio.run(measure(args.taps, args.seed))
    ms = {k: {p: round(pct(v, p) * 1e3, 3) for p in (50, 99)} for k, v in samples.items()}
    rows = []
    for p in (50, 99):
        rows.append(
            {
                "figure": f"PC/SC tap -> CardRead p{p}",
                "value": ms["e2e"][p],
                "floor": ms["floor_e2e"][p],
                "unit": "ms",
                "better": "lower",
                "target": "pcscd polls vpcd every 400 ms" if p == 99 else "",
            }
        )
    for p in (50, 99):
        rows.append(
            {
                "figure": f"PC/SC exchange (detected -> CardRead) p{p}",
                "value": ms["exchange"][p],
                "floor": ms["floor"][p],
                "unit": "ms",
                "better": "lower",
                "target": "floor: bare connect + 2 transmits" if p == 99 else "",
            }
        )
    result = {"taps": args.taps, "rows": rows, "ms": ms}
    if args.json:
        print(json.dumps(result))
        return
    e2e, fe2e, ex, fl = ms["e2e"], ms["floor_e2e"], ms["exchange"], ms["floor"]
    print(
        f"PC/SC card presented -> CardRead ({args.taps} taps): "
        f"p50 {e2e[50]:.1f} ms  p99 {e2e[99]:.1f} ms   "
        f"floor (bare wait + connect + 2 transmits): p50 {fe2e[50]:.1f} ms  p99 {fe2e[99]:.1f} ms"
    )
    print(
        f"  of which ours, detected -> CardRead: p50 {ex[50]:.3f} ms  p99 {ex[99]:.3f} ms   "
        f"floor (bare connect + 2 transmits): p50 {fl[50]:.3f} ms  p99 {fl[99]:.3f} ms"
    )
    print("  the rest is pcscd noticing the card: its status thread polls vpcd every 400 ms")


if __name__ == "__main__":
    main()
