"""Build reader drivers from the config and keep each one running (supervision).

The daemon and the CLI see every reader through the same small surface, `ReaderDriver`:
a name, live `ReaderStats` snapshots, and `run(emit)` that runs until cancelled. A driver
that raises anyway (a bug, an unexpected OS error) is restarted with backoff and the failure
shows in its state; it never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import Config, PcscReaderConfig, SerialReaderConfig
from drivers.events import CardRead
from drivers.serial import SerialReader

if TYPE_CHECKING:
    from agent.pcsc_driver import PcscDriver

log = logging.getLogger("cumulus.readers")

Emit = Callable[[CardRead], None]


class ReaderDriver(Protocol):
    name: str

    async def run(self, emit: Emit) -> None: ...

    def snapshots(self) -> dict[str, dict[str, Any]]: ...


@dataclass
class SerialDriver:
    """Adapter: one configured serial port."""

    reader: SerialReader
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.reader.name

    async def run(self, emit: Emit) -> None:
        await self.reader.run(emit)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {
            self.name: {
                "source": "serial",
                "port": self.reader.port,
                **self.reader.stats.snapshot(),
            }
        }


def build(config: Config) -> list[ReaderDriver]:
    """One driver per `[[readers]]` entry (PC/SC entries share one monitor per glob)."""
    drivers: list[ReaderDriver] = []
    prefixes = config.cards.prefixes
    pcsc = [r for r in config.readers if isinstance(r, PcscReaderConfig)]
    if pcsc:  # one monitor for all globs: one PC/SC context, one thread
        drivers.append(pcsc_driver().from_configs(pcsc, prefixes))
    for r in config.readers:
        if isinstance(r, SerialReaderConfig):
            drivers.append(
                SerialDriver(SerialReader(r.name or r.port, r.port, r.baud, r.framing, prefixes))
            )
    return drivers


def pcsc_driver() -> type[PcscDriver]:
    """The PC/SC adapter class, imported on first use: pyscard loads only where needed."""
    from agent.pcsc_driver import PcscDriver

    return PcscDriver


@dataclass
class Supervisor:
    """Keeps one driver running; counts and shows its crashes."""

    driver: ReaderDriver
    restarts: int = 0
    last_error: str | None = None
    max_delay_s: float = 30.0

    async def run(self, emit: Emit) -> None:
        delay = 0.5
        while True:
            try:
                await self.driver.run(emit)
                self.last_error = "driver returned unexpectedly"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not stop the checkout
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("reader %s crashed; restarting in %.1f s", self.driver.name, delay)
            self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay_s)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        out = self.driver.snapshots()
        for snap in out.values():
            snap["supervisor_restarts"] = self.restarts
            if self.last_error:
                snap["supervisor_error"] = self.last_error
        return out
