"""PC/SC readers as a `ReaderDriver` (placeholder until drivers/pcsc.py lands: it refuses
clearly instead of pretending)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.config import PcscReaderConfig
from drivers.events import CardRead


class PcscUnavailable(RuntimeError):
    pass


class PcscDriver:
    name: str

    @classmethod
    def from_config(cls, config: PcscReaderConfig, prefixes: Sequence[str]) -> PcscDriver:
        raise PcscUnavailable("the PC/SC driver is not part of this build yet")

    @staticmethod
    def list_reader_names() -> list[str]:
        raise PcscUnavailable("the PC/SC driver is not part of this build yet")

    async def run(self, emit: Callable[[CardRead], None]) -> None:
        raise PcscUnavailable("the PC/SC driver is not part of this build yet")

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {}
