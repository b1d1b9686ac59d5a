"""`cumulus-agent run`: the daemon. One TaskGroup owns readers, session/API, sync and
housekeeping; systemd hears the truth about it through the notify protocol.

Shape (hypercorn's habits): signal handlers only set an event; the shutdown trigger is a
parameter so tests fire it; stop order is fixed and timed: stop intake (readers, new cards)
→ answer in-flight POS calls and finish the commit in progress → stop the API → stop sync
→ close the database. A reader or the sync failing is restarted with backoff and shown in
state; it never takes the daemon down.

Watchdog: `WATCHDOG=1` is sent from the event loop itself every half `WATCHDOG_USEC`, and
only when the outbox thread answers and every reader supervisor is alive, so a stuck loop, a
hung disk or a dead supervisor lets systemd's watchdog fire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from agent import config as config_mod
from agent import keyring
from agent import keys as keys_mod
from agent import readers as readers_mod
from agent.api.app import make_app, serve
from agent.api.checkout import Checkout
from agent.api.metrics import Metrics
from agent.api.security import load_pos_token
from agent.config import Config
from agent.envelope.keyset import KeysetError
from agent.notify import Notifier
from agent.outbox import DB_NAME, AsyncOutbox, OutboxError, SealingKeys
from agent.outbox.recovery import check_file
from agent.sync import SyncClient
from drivers.events import CardRead

log = logging.getLogger("cumulus.agent")

HOUSEKEEPING_S = 3600.0
DEBUG_HOOKS_ENV = "CUMULUS_AGENT_DEBUG_HOOKS"


@dataclass
class Health:
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    outbox_ok: bool = True
    last_watchdog: float | None = None


def socket_path(config: Config, environ: Mapping[str, str]) -> Path:
    """The Unix socket: `$RUNTIME_DIRECTORY/api.sock` under systemd, else in the state dir."""
    runtime = environ.get("RUNTIME_DIRECTORY")
    base = Path(runtime.split(":")[0]) if runtime else config.terminal.state_dir
    return base / "api.sock"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.stop = stop or asyncio.Event()
        self.notifier = Notifier(self.environ)
        self.health = Health()
        self.supervisors: list[readers_mod.Supervisor] = []
        self._reader_tasks: list[asyncio.Task[None]] = []
        self._reload = asyncio.Event()
        self.checkout: Checkout | None = None
        self.sync: SyncClient | None = None
        self.outbox: AsyncOutbox | None = None

    # --- the whole life ---------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.config
        key = keys_mod.load(cfg.terminal.state_dir)
        self._signing = key.private
        self._keyset = keyring.held_keyset(cfg)
        choice = keyring.choose(cfg, self._keyset)
        sealing = SealingKeys.build(
            cfg.terminal.id, key.private, choice.kid, choice.suite, choice.public_raw
        )
        db = cfg.terminal.state_dir / DB_NAME
        damaged = check_file(db)  # never build on (or crash-loop over) a damaged file
        outbox = self.outbox = await AsyncOutbox.open(db, sealing, max_bytes=cfg.outbox.max_bytes)
        try:
            if damaged is not None:
                await outbox.audit(
                    "database-quarantined",
                    {"moved_to": str(damaged.directory), "reason": damaged.reason[:300]},
                )
            await outbox.explain_missing()
            await outbox.audit(
                "config-loaded",
                {
                    "config_sha256": hashlib.sha256(cfg.path.read_bytes()).hexdigest()[:16],
                    "sig_kid": sealing.sig_kid,
                    "readers": len(cfg.readers),
                },
            )
            return await self._serve(outbox)
        finally:
            await outbox.close()

    async def _serve(self, outbox: AsyncOutbox) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        async with SyncClient(
            outbox,
            cfg.terminal.id,
            cfg.hq.url,
            ca_file=cfg.hq.ca_file,
            on_keyset=self._on_keyset if cfg.hq.keyset_public_key else None,
        ) as sync:
            self.sync = sync
            checkout = self.checkout = Checkout(
                outbox,
                terminal=cfg.terminal.id,
                store=cfg.terminal.store,
                timeout_s=cfg.prompt.timeout_s,
                on_sealed=sync.notify,
            )
            metrics = Metrics(
                checkout, readers=self.reader_snapshots, sync=lambda: sync.state.to_json()
            )
            host, port = cfg.api.host_port
            app = make_app(
                checkout,
                port=port,
                pos_token=load_pos_token(cfg.api.token_file),
                prefixes=cfg.cards.prefixes,
                lang=cfg.prompt.lang,
                metrics_source=metrics,
            )
            app.router.add_get("/v1/agent/state", self._state_handler)
            runner = await serve(app, host, port, socket_path(cfg, self.environ))
            try:
                self.health.ready = True
                self.notifier.ready(await self.status_line())
                log.info("agent ready: terminal %s, API on %s:%d", cfg.terminal.id, host, port)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._readers_loop(), name="readers")
                    tg.create_task(self._supervise("sync", sync.run), name="sync")
                    tg.create_task(self._housekeeping(), name="housekeeping")
                    tg.create_task(self._watchdog(), name="watchdog")
                    await self.stop.wait()
                    self.notifier.stopping()
                    log.info("stopping: no new cards; finishing in-flight work")
                    checkout.accepting = False
                    for t in self._reader_tasks:
                        t.cancel()
                    await checkout.drain()  # answers parked baskets, finishes commits
                    await runner.shutdown()  # in-flight POS calls get their answers
                    raise _Stop
            except* _Stop:
                pass
            finally:
                await runner.cleanup()
        return 0

    # --- parts ------------------------------------------------------------------------------

    def _emit(self, read: CardRead) -> None:
        if self.checkout is not None:
            self.checkout.present_card(read.card, read.reader)

    async def _readers_loop(self) -> None:
        """Run the configured readers; rebuild them on SIGHUP (readers section only)."""
        while True:
            self.supervisors = [readers_mod.Supervisor(d) for d in readers_mod.build(self.config)]
            self._reader_tasks = [
                asyncio.create_task(s.run(self._emit), name=f"reader:{s.driver.name}")
                for s in self.supervisors
            ]
            try:
                await self._reload.wait()
            finally:
                for t in self._reader_tasks:
                    t.cancel()
                await asyncio.gather(*self._reader_tasks, return_exceptions=True)
            self._reload.clear()
            try:
                fresh = config_mod.load(self.config.path)
            except config_mod.ConfigError as exc:
                log.error("SIGHUP: config refused, keeping the running readers: %s", exc)
                continue
            self.config = dataclasses.replace(self.config, readers=fresh.readers)
            log.info("SIGHUP: readers reloaded (%d configured)", len(fresh.readers))

    async def _supervise(self, name: str, fn: Any) -> None:
        delay = 0.5
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in %.1f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _housekeeping(self) -> None:
        """Purge what may no longer be kept, seal finished days' consent-stats; hourly."""
        assert self.outbox is not None
        while True:
            try:
                purged = await self.outbox.purge_expired(self.config.retention.max_age_days)
                stats = await self.outbox.seal_consent_stats(datetime.now(UTC).date())
                if (purged or stats) and self.sync is not None:
                    self.sync.notify()
            except OutboxError as exc:
                log.error("housekeeping failed: %s", exc)
            await asyncio.sleep(HOUSEKEEPING_S)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        period = interval if interval is not None else 10.0
        while True:
            healthy = await self._healthy(period)
            if healthy and interval is not None:
                self.notifier.watchdog()
                self.health.last_watchdog = time.monotonic()
            self.notifier.status(await self.status_line())
            await asyncio.sleep(period)

    async def _healthy(self, budget: float) -> bool:
        assert self.outbox is not None
        try:
            await asyncio.wait_for(self.outbox.status(), timeout=max(0.5, budget / 2))
            self.health.outbox_ok = True
        except (TimeoutError, OutboxError):
            self.health.outbox_ok = False
            log.error("outbox did not answer: withholding the watchdog ping")
            return False
        return all(not t.done() for t in self._reader_tasks)

    async def _on_keyset(self, data: bytes) -> None:
        """HQ's keyset: verified against the pinned key; a new current key is sealed to from
        the next purchase on. A refused keyset changes nothing and is audited."""
        assert self.outbox is not None
        try:
            fresh = keyring.accept(self.config, data, int(time.time()), self._keyset)
        except KeysetError as exc:
            log.error("HQ keyset refused, keeping the key in use: %s", exc)
            await self.outbox.audit("hq-keyset-refused", {"reason": str(exc)[:300]})
            return
        if fresh is None:
            return
        before = keyring.choose(self.config, self._keyset)
        self._keyset = fresh
        choice = keyring.choose(self.config, fresh)
        await self.outbox.set_keys(
            SealingKeys.build(
                self.config.terminal.id, self._signing, choice.kid, choice.suite, choice.public_raw
            )
        )
        await self.outbox.audit(
            "hq-key-changed", {"from": before.kid, "to": choice.kid, "keyset_seq": fresh.seq}
        )
        log.info("HQ keyset seq %d: sealing to %s from now on", fresh.seq, choice.kid)

    # --- views ------------------------------------------------------------------------------

    def reader_snapshots(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for s in self.supervisors:
            out.update(s.snapshots())
        return out

    async def status_line(self) -> str:
        snaps = self.reader_snapshots()
        online = sum(1 for s in snaps.values() if s.get("state") == "online")
        waiting = (await self.outbox.status()).waiting if self.outbox else 0
        reach = None if self.sync is None else self.sync.state.hq_reachable
        hq = {True: "reachable", False: "unreachable", None: "not yet tried"}[reach]
        return f"readers {online}/{len(snaps)} online; {waiting} waiting; HQ {hq}"

    async def _state_handler(self, request: web.Request) -> web.Response:
        """Live state for `diag` over the Unix socket (no card numbers, no baskets)."""
        return web.json_response(
            {
                "ready": self.health.ready,
                "readers": self.reader_snapshots(),
                "sync": self.sync.state.to_json() if self.sync else None,
                "outbox_ok": self.health.outbox_ok,
                "session_state": self.checkout.session.state.value if self.checkout else None,
                "status": await self.status_line(),
            }
        )

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        if self.environ.get(DEBUG_HOOKS_ENV) == "1":
            seconds = float(self.environ.get("CUMULUS_AGENT_DEBUG_BLOCK_S", "10"))
            loop.add_signal_handler(signal.SIGUSR2, lambda: time.sleep(seconds))
            log.warning("debug hooks on: SIGUSR2 blocks the event loop for %.0f s", seconds)


class _Stop(Exception):
    """Ends the TaskGroup (cancelling its long-running tasks) on a requested stop."""


def run(config: Config, environ: Mapping[str, str] | None = None) -> int:
    """Entry point for `cumulus-agent run` (after the config was validated)."""
    return asyncio.run(Daemon(config, environ=environ).run())
