"""Scan latency over a pty: last byte written → CardRead in the consumer, beside its floor.

Figure: for each scan, the time from the moment ``os.write`` of the frame's last byte has
returned on the pty master (in a separate writer process, as a real scanner is outside our
process) to the moment `SerialReader` hands the `CardRead` to its consumer.
Floor:  the same, with a bare non-blocking read loop (spinning on ``os.read``) on the same pty
in place of the reader: the kernel's pty hop plus a process wake-up, none of our code.
Both are timed with CLOCK_MONOTONIC (system-wide, so comparable across the two processes), in
alternating blocks of scans in the same run, every scan a distinct card (no double-read
suppression). Target: reader p99 <= 2 x floor p99 + 1 ms.

Run: .venv/bin/python bench/scan_latency.py [--scans 1000] [--framing crlf] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import termios
import time
import tty
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.events import CardRead
from drivers.serial import SerialReader
from drivers.stats import ReaderState
from firmware_stubs.framing import FRAMINGS, encode

BLOCK = 100
WARMUP = 20


def card_number(n: int) -> str:
    body = f"2099{n:08d}"
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body))
    return body + str((10 - total % 10) % 10)


def writer(master: int, conn: Connection) -> None:
    """The scanner: write each frame it is given, then report when the write returned."""
    while (frame := conn.recv()) is not None:
        os.write(master, frame)
        conn.send(time.monotonic_ns())


def floor_block(path: str, conn: Connection, frames: list[bytes]) -> list[int]:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0  # no data -> EAGAIN
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        latencies = []
        for frame in frames:
            time.sleep(0.001)
            conn.send(frame)
            got = 0
            while got < len(frame):
                try:
                    got += len(os.read(fd, 4096))
                except BlockingIOError:
                    continue
            done = time.monotonic_ns()
            latencies.append(done - conn.recv())
        return latencies
    finally:
        os.close(fd)


async def reader_block(path: str, conn: Connection, frames: list[bytes], framing: str) -> list[int]:
    arrived = asyncio.Event()
    stamps: list[int] = []

    def emit(read: CardRead) -> None:
        stamps.append(time.monotonic_ns())
        arrived.set()

    reader = SerialReader("bench", path, framing=framing)
    task = asyncio.create_task(reader.run(emit))
    try:
        while reader.stats.state is not ReaderState.ONLINE:  # noqa: ASYNC110 - stats are polled
            await asyncio.sleep(0.001)
        latencies = []
        for frame in frames:
            await asyncio.sleep(0.001)
            arrived.clear()
            conn.send(frame)
            await asyncio.wait_for(arrived.wait(), timeout=10)
            latencies.append(stamps[-1] - conn.recv())
        if reader.stats.rejects or reader.stats.duplicates:
            raise RuntimeError(f"unexpected rejects: {reader.stats.snapshot()}")
        return latencies
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] / 1000


def summary(values: list[int]) -> dict[str, float]:
    return {
        "p50_us": percentile(values, 50),
        "p99_us": percentile(values, 99),
        "max_us": max(values) / 1000,
        "mean_us": statistics.fmean(values) / 1000,
    }


async def measure(scans: int, framing: str, reader_framing: str) -> dict[str, object]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    parent_end, child_end = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=writer, args=(master, child_end), daemon=True
    )
    child.start()
    try:
        cards = (encode(card_number(n), framing).wire for n in range(10**6))
        floor: list[int] = []
        ours: list[int] = []
        floor_block(path, parent_end, [next(cards) for _ in range(WARMUP)])
        await reader_block(path, parent_end, [next(cards) for _ in range(WARMUP)], reader_framing)
        while len(ours) < scans:
            n = min(BLOCK, scans - len(ours))
            floor += floor_block(path, parent_end, [next(cards) for _ in range(n)])
            ours += await reader_block(
                path, parent_end, [next(cards) for _ in range(n)], reader_framing
            )
    finally:
        parent_end.send(None)
        child.join(timeout=5)
        os.close(master)
        os.close(slave)
    floor_s, ours_s = summary(floor), summary(ours)
    target_us = 2 * floor_s["p99_us"] + 1000
    return {
        "scans": scans,
        "framing": framing,
        "reader_framing": reader_framing,
        "floor": floor_s,
        "reader": ours_s,
        "target_p99_us": target_us,
        "target_met": ours_s["p99_us"] <= target_us,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument(
        "--framing", choices=FRAMINGS, default="crlf", help="what the scanner sends"
    )
    parser.add_argument("--reader-framing", default="auto", help="the reader's setting (auto)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.scans, args.framing, args.reader_framing))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    floor, ours = result["floor"], result["reader"]
    assert isinstance(floor, dict) and isinstance(ours, dict)
    print(
        f"scan latency over a pty: {args.scans} scans each, scanner framing {args.framing}, "
        f"reader framing {args.reader_framing}"
    )
    print(f"{'':36}{'p50 µs':>9}{'p99 µs':>9}{'max µs':>9}")
    for name, row in (
        ("floor (bare non-blocking read loop)", floor),
        ("SerialReader -> CardRead", ours),
    ):
        print(f"{name:34}{row['p50_us']:9.1f}{row['p99_us']:9.1f}{row['max_us']:9.1f}")
    verdict = "met" if result["target_met"] else "NOT met"
    print(f"target p99 <= 2 x floor p99 + 1 ms = {result['target_p99_us']:.1f} µs: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
