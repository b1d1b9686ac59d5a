"""`make demo` / `cumulus-agent demo`: the whole thing on one machine, no hardware.

Starts, in one process and a fresh directory: an embedded HQ (fresh HPKE key, loopback),
the terminal's key enrolled there, an emulated serial scanner on a pseudo-terminal, an
emulated contactless card where pcscd and vpcd are present, the agent daemon itself, and a
scripted POS that sends a basket after each decision. It prints the cashier page's URL and
how to present a card from the keyboard; Ctrl-C (or `q`) stops everything cleanly and
prints what reached HQ, opened by HQ's reader tier (card numbers masked).

`--script N` runs N transactions unattended (record and skip alternating), for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from agent import config as config_mod
from agent import keys
from agent.service import Daemon
from drivers.cards import ean13_check_digit, mask
from firmware_stubs import pcscd as pcscd_lib
from firmware_stubs.pcscd import PrivatePcscd
from firmware_stubs.serial_stub import SerialStub
from firmware_stubs.vpcd_card import VPCD_PORTS, VirtualCard
from hq import keys as hq_keys
from hq.export import export_purchases, load_reader_keys
from hq.server import HqServer
from hq.storage import SqliteStorage

DEMO_GTINS = ("7612345678900", "4006381333931", "5901234123457", "7610000000011")


def demo_card(rng: random.Random) -> str:
    body = "2099" + "".join(rng.choice("0123456789") for _ in range(8))
    return body + str(ean13_check_digit(body))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, root: Path, script: int, out: Any = sys.stdout) -> None:
        self.root = root
        self.script = script
        self.out = out
        self.rng = random.Random()  # noqa: S311 - demo data, not secrets
        self.stop = asyncio.Event()
        self.answers: Counter[str] = Counter()
        self.token = secrets.token_urlsafe(24)
        self.pcscd: PrivatePcscd | bool = False
        self.port = free_port()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self) -> int:
        hq_state = self.root / "hq-state"
        hq_key = hq_keys.init(hq_state, "hq-demo", "x25519-sha256-chacha20poly1305")
        self.pcscd = self._contactless()
        async with HqServer.for_db(None, hq_state, host="127.0.0.1", port=0) as hq:
            with SerialStub(link=str(self.root / "scanner"), framing="crlf") as stub:
                cfg = self._write_config(hq.url, hq_key.kid, hq_key.public_b64, stub.path)
                tkey = keys.init(cfg.terminal.state_dir)
                with SqliteStorage(hq_state / "hq.db") as storage:
                    storage.enroll(cfg.terminal.id, tkey.public_raw)
                daemon = Daemon(cfg, environ={}, stop=self.stop)
                agent = asyncio.create_task(daemon.run())
                await self._wait_ready()
                self._banner(stub.path)
                pos = asyncio.create_task(self._pos())
                try:
                    if self.script:
                        await self._scripted(stub)
                    else:
                        await self._keyboard(stub)
                finally:
                    self.stop.set()
                    pos.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pos
                    status = await agent
            self._summary(hq_state, status)
        if isinstance(self.pcscd, PrivatePcscd):
            self.pcscd.stop()
        return 0 if status == 0 else 1

    def _contactless(self) -> PrivatePcscd | bool:
        """Where pcscd and vpcd are installed: use the running pcscd, or start our own."""
        if not pcscd_lib.available():
            return False
        if pcscd_lib.foreign_pcscd(None) is not None:
            return pcscd_lib.vpcd_readers_listed()
        try:
            private = PrivatePcscd(self.root / "pcscd.log")
            private.start()
        except (pcscd_lib.PcscdError, OSError) as exc:
            self.say(f"(no contactless card in this demo: {str(exc).splitlines()[0]})")
            return False
        return private

    def _write_config(self, hq_url: str, kid: str, pub: str, port: str) -> config_mod.Config:
        (self.root / "pos-token").write_text(self.token)
        os.chmod(self.root / "pos-token", 0o600)
        path = self.root / "agent.toml"
        path.write_text(
            f'[terminal]\nid = "0042-07"\nstore = "0042"\nstate_dir = "state"\n\n'
            f'[[readers]]\nkind = "serial"\nport = "{port}"\nname = "scanner"\n'
            f'framing = "auto"\n\n'
            + ('[[readers]]\nkind = "pcsc"\nname = "Virtual PCD*"\n\n' if self.pcscd else "")
            + '[prompt]\ntimeout_s = 20\nlang = "en"\n\n'
            f'[hq]\nurl = "{hq_url}"\nenc_kid = "{kid}"\nenc_public_key = "{pub}"\n\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\ntoken_file = "pos-token"\n'
        )
        return config_mod.load(path)

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.api + "/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError("the agent did not come up")

    def _banner(self, scanner: str) -> None:
        self.say(f"\nCumulus demo in {self.root}")
        self.say(f"  cashier page:   {self.api}/?lang=en   (F1/Enter = Record, F2/Esc = Skip)")
        self.say(f"  serial scanner: {scanner} (emulated)")
        if self.pcscd:
            self.say("  contactless:    vpcd slot 'Virtual PCD 00 00' (emulated card)")
        self.say(
            "  present a card: type a 13-digit card number and Enter, or just Enter for a"
            " random one;\n                  q + Enter (or Ctrl-C) stops and shows what "
            "reached HQ\n"
        )

    # --- the scripted POS: a basket after each decision ------------------------------------

    async def _pos(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            while not self.stop.is_set():
                try:
                    await self._follow(http)
                except (aiohttp.ClientError, ValueError):
                    await asyncio.sleep(0.5)

    async def _follow(self, http: aiohttp.ClientSession) -> None:
        seen = -1
        async with http.get(self.api + "/v1/events", timeout=aiohttp.ClientTimeout()) as r:
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                view = json.loads(line[6:])
                if view.get("state") == "decided" and view.get("decision_no") != seen:
                    seen = view["decision_no"]
                    await self._basket(http, view)

    async def _basket(self, http: aiohttp.ClientSession, view: dict[str, Any]) -> None:
        items: list[dict[str, Any]] = [
            {"gtin": g, "qty": 1000 * self.rng.randint(1, 3), "amount": self.rng.randint(50, 2500)}
            for g in self.rng.sample(DEMO_GTINS, self.rng.randint(1, 3))
        ]
        total = sum(int(i["amount"]) for i in items)
        basket = {
            "receipt": f"R{self.rng.randint(10000, 99999)}",
            "currency": "CHF",
            "total": total,
            "items": items,
        }
        async with http.post(self.api + "/v1/basket", json=basket) as r:
            answer = await r.json()
        key = "recorded" if answer.get("recorded") else f"not recorded ({answer.get('reason')})"
        self.answers[key] += 1
        seq = f" as seq {answer['seq']}" if answer.get("recorded") else ""
        who = view.get("card") or "a customer who declined (card already forgotten)"
        self.say(f"POS: basket CHF {total / 100:.2f} for {who}: {key}{seq}")

    # --- presenting cards ------------------------------------------------------------------

    async def _keyboard(self, stub: SerialStub) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, self.stop.set)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while not self.stop.is_set():
            line_task = asyncio.create_task(reader.readline())
            stop_task = asyncio.create_task(self.stop.wait())
            done, _ = await asyncio.wait(
                {line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            stop_task.cancel()
            if line_task not in done:
                line_task.cancel()
                return
            line = line_task.result().decode(errors="replace").strip()
            if not line_task.result() or line.lower() in ("q", "quit", "exit"):
                return
            if line.lower() == "c" and self.pcscd:
                await self._tap(demo_card(self.rng))
                continue
            card = line if line else demo_card(self.rng)
            await stub.scan(card)
            self.say(f"scanner: sent {mask(card) if len(card) == 13 else '(not a card)'}")

    async def _tap(self, card: str) -> None:
        """A contactless card held to the reader for a moment, then taken away."""
        vcard = VirtualCard(card, port=VPCD_PORTS[0])
        vcard.present()
        self.say(f"contactless: {mask(card)} held to the reader")
        await asyncio.sleep(1.0)
        await vcard.remove()

    async def _scripted(self, stub: SerialStub) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for n in range(self.script):
                card = demo_card(self.rng)
                if self.pcscd and n % 3 == 2:
                    asyncio.get_running_loop().create_task(self._tap(card))
                else:
                    await stub.scan(card)
                await self._until(http, lambda v: v.get("state") == "prompt")
                decision = "record" if n % 2 == 0 else "skip"
                async with http.post(self.api + "/v1/decision", json={"decision": decision}) as r:
                    await r.read()
                await self._until(http, lambda v: v.get("state") == "idle")
                await asyncio.sleep(1.6)  # the scanner's double-read window
            for _ in range(200):  # let sync deliver what was recorded
                async with http.get(self.api + "/metrics") as r:
                    text = await r.text()
                if "cumulus_outbox_depth 0.0" in text:
                    break
                await asyncio.sleep(0.1)

    async def _until(self, http: aiohttp.ClientSession, ok: Any) -> None:
        for _ in range(300):
            async with http.get(self.api + "/v1/session") as r:
                if ok(await r.json()):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("the demo did not see the expected session state")

    # --- what reached HQ -------------------------------------------------------------------

    def _summary(self, hq_state: Path, status: int) -> None:
        from datetime import UTC, datetime, timedelta

        with SqliteStorage(hq_state / "hq.db") as storage:
            kinds = Counter(e.kind for e in storage.envelopes())
            opened = []
            keyring = load_reader_keys(hq_state)
            now = datetime.now(UTC)
            for card in self._cards_seen(storage, keyring):
                report = export_purchases(storage, keyring, card, now - timedelta(days=1), now)
                opened += [(card, p) for p in report.purchases]
        self.say(f"\nagent stopped (exit {status}). POS answers: {dict(self.answers)}")
        self.say(f"HQ holds {sum(kinds.values())} envelope(s): {dict(kinds)}")
        for card, p in opened:
            self.say(
                f"  HQ reader tier: {mask(card)} receipt {p['receipt']} "
                f"CHF {p['total'] / 100:.2f}, {len(p['items'])} item(s)"
            )

    @staticmethod
    def _cards_seen(storage: SqliteStorage, keyring: dict[str, Any]) -> list[str]:
        from agent.envelope import PurchasePayload, decode, open_payload

        cards = []
        for e in storage.envelopes(kind="purchase"):
            env = decode(e.body)
            k = keyring[env.header.enc_kid]
            p = open_payload(env, k.suite, k.private_key())
            if isinstance(p, PurchasePayload) and p.card not in cards:
                cards.append(p.card)
        return cards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cumulus-agent demo", description=__doc__)
    ap.add_argument(
        "--script",
        type=int,
        default=0,
        metavar="N",
        help="run N transactions unattended, then stop",
    )
    ap.add_argument("--dir", help="where to put the demo's state (default: a new temp dir)")
    args = ap.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cumulus-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(Demo(root, args.script).run())


if __name__ == "__main__":
    sys.exit(main())
