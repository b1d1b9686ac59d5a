"""Which checks run at which level, in a fixed order (cheap and local first)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from agent.config import Config, PcscReaderConfig, SerialReaderConfig
from agent.diag import checks
from agent.diag.checks import Finding


class Level(enum.StrEnum):
    INTERNAL = "internal"
    EXTERNAL = "external"
    INTERACTIVE = "interactive"


def run_checks(
    config: Config,
    level: Level,
    *,
    live: Mapping[str, Any] | None,
    systemd_state: str | None,
    pcsc_names: Callable[[], list[str]],
) -> list[Finding]:
    out = [
        checks.ok("config", f"{config.path} valid (terminal {config.terminal.id})"),
        checks.check_key(config),
    ]
    out += checks.check_database(config)
    out.append(checks.check_quarantine(config))
    out.append(checks.check_disk(config))
    out.append(checks.check_daemon(live, systemd_state))
    if level is Level.INTERNAL:
        return out
    for r in config.readers:
        if isinstance(r, SerialReaderConfig):
            out.append(checks.check_serial(r, live))
        elif isinstance(r, PcscReaderConfig):
            out.append(checks.check_pcsc(r, pcsc_names))
    out += checks.check_hq(config)
    return out
