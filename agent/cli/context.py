"""Shared set-up for commands: the validated config and the things derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent import config as config_mod
from agent import keys
from agent.cli.env import Environment
from agent.config import Config
from agent.outbox import DB_NAME, Outbox, SealingKeys


@dataclass
class Context:
    env: Environment
    config: Config

    @classmethod
    def load(cls, env: Environment, explicit: str | None) -> Context:
        path = config_mod.config_path(explicit, env.environ)
        return cls(env, config_mod.load(path))

    @property
    def state_dir(self) -> Path:
        return self.config.terminal.state_dir

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_NAME

    def sealing_keys(self) -> SealingKeys:
        key = keys.load(self.state_dir)
        hq = self.config.hq
        return SealingKeys.build(
            self.config.terminal.id, key.private, hq.enc_kid, hq.enc_suite, hq.enc_public_key
        )

    def open_outbox(self, *, sealing: bool = False) -> Outbox:
        return Outbox(
            self.db_path,
            self.sealing_keys() if sealing else None,
            max_bytes=self.config.outbox.max_bytes,
        )
