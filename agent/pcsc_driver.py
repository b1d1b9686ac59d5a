"""PC/SC readers as a `ReaderDriver`: one `drivers.pcsc.PcscMonitor` for every configured glob.

All `[[readers]] kind = "pcsc"` entries share one monitor (one blocking thread, one PC/SC
context), as pcsc-lite expects; each PC/SC reader it finds gets its own statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.config import PcscReaderConfig
from drivers.events import CardRead
from drivers.pcsc import PcscMonitor, list_readers


class PcscDriver:
    def __init__(self, globs: Sequence[str], prefixes: Sequence[str]) -> None:
        self.globs = tuple(globs)
        self.name = "pcsc:" + ",".join(self.globs)
        self.monitor = PcscMonitor(self.globs, prefixes)

    @classmethod
    def from_config(cls, config: PcscReaderConfig, prefixes: Sequence[str]) -> PcscDriver:
        return cls([config.name], prefixes)

    @classmethod
    def from_configs(
        cls, configs: Sequence[PcscReaderConfig], prefixes: Sequence[str]
    ) -> PcscDriver:
        return cls([c.name for c in configs], prefixes)

    @staticmethod
    def list_reader_names() -> list[str]:
        return list_readers("*")

    async def run(self, emit: Callable[[CardRead], None]) -> None:
        await self.monitor.run(emit)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        """One entry per PC/SC reader seen, plus pcscd itself under the driver's name."""
        snap = self.monitor.snapshot()
        out: dict[str, dict[str, Any]] = {
            self.name: {
                "source": "pcsc",
                "state": snap["state"],
                "error_text": snap["error_text"],
                "outages": snap["outages"],
                "thread_restarts": snap["thread_restarts"],
            }
        }
        readers = snap["readers"]
        assert isinstance(readers, dict)
        for name, stats in readers.items():
            out[name] = {"source": "pcsc", **stats}
        return out
