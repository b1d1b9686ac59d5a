"""The chaos harness: the whole system under crashes, outages and faults, then the verdict.

Runs the real daemon (`cumulus-agent run`, a subprocess restarted like systemd restarts it),
an emulated serial scanner on a pty, a local HQ (in this process, with a test-only fault
injector), and a scripted POS sending a steady stream of card → record/skip/no answer →
basket, each basket with a unique receipt. Meanwhile, at random moments: SIGKILL of the
agent, HQ stopped and started, HQ answering 500 / 429 / slowly, the scanner unplugged and
replugged, and (where pcscd is present) pcscd killed and restarted.

Verdict, read back through HQ's reader tier (decrypting what HQ stored):
- every basket the POS saw answered `recorded: true` is at HQ exactly once (0 lost, 0 dup);
- no basket answered `recorded: false` is at HQ (0 invented); an unanswered one (the agent
  died mid-call) is there at most once;
- the stream verifies from seq 1 (signatures, prev chain, contiguous or explained by purges);
- the day's counters on disk match what the POS saw answered (within the unanswered calls).

Run: python -m tests.chaos.harness [--baskets 20000] [--kills 200] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent import keys  # noqa: E402
from agent.envelope import ZERO_HASH, PurchasePayload, decode, envelope_hash, open_payload  # noqa: E402
from agent.envelope import verify as verify_sig  # noqa: E402
from drivers.cards import ean13_check_digit  # noqa: E402
from firmware_stubs import pcscd as pcscd_lib  # noqa: E402
from firmware_stubs.pcscd import PrivatePcscd  # noqa: E402
from firmware_stubs.serial_stub import SerialStub  # noqa: E402
from firmware_stubs.vpcd_card import VPCD_PORTS, VirtualCard  # noqa: E402
from hq.storage import SqliteStorage  # noqa: E402
from tests.factories import hq_key_pair  # noqa: E402
from tests.hq.support import running_hq  # noqa: E402

TOKEN = "chaos-pos-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GTINS = ("7612345678900", "4006381333931", "5901234123457", "7610000000011")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tally:
    recorded: dict[str, int] = field(default_factory=dict)  # receipt -> seq
    declined: set[str] = field(default_factory=set)  # answered recorded: false
    unanswered: set[str] = field(default_factory=set)
    decisions: Counter[str] = field(default_factory=Counter)  # answered decisions + timeouts
    decisions_unanswered: int = 0
    kills: int = 0
    hq_outages: int = 0
    hq_faults: int = 0
    unplugs: int = 0
    not_started: int = 0  # no prompt came (scanner unplugged, agent restarting)
    pcscd_restarts: int = 0


class Agent:
    """The daemon as systemd runs it: started, SIGKILLed, restarted."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.log = open(root / "agent.log", "ab")  # noqa: SIM115 - lives as long as the run

    async def start(self, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.cli.main",
            "run",
            "--config",
            str(self.config),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log,
        )
        for _ in range(400):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            await asyncio.sleep(0.025)
        raise RuntimeError("agent did not come up: see agent.log")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 15)


class Chaos:
    def __init__(
        self,
        root: Path,
        baskets: int,
        kills: int,
        seed: int,
        pcscd: PrivatePcscd | None = None,
        contactless: float = 0.1,
    ) -> None:
        self.root = root
        self.baskets = baskets
        self.kills = kills
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.up = asyncio.Event()
        self.done = asyncio.Event()
        self.pcscd: PrivatePcscd | None = pcscd  # ours to kill and restart, where possible
        self.own_pcscd = False
        self.contactless = contactless  # share of cards tapped (slow: pcscd polls at 400 ms)

    def card(self) -> str:
        body = "2099" + "".join(self.rng.choice("0123456789") for _ in range(8))
        return body + str(ean13_check_digit(body))

    async def run(self) -> bool:
        hq_key = hq_key_pair()
        if self.pcscd is None and pcscd_lib.available() and pcscd_lib.foreign_pcscd(None) is None:
            self.pcscd = PrivatePcscd(self.root / "pcscd.log")
            self.own_pcscd = True
        if self.pcscd is not None:
            self.pcscd.start()  # no-op when it runs
        try:
            return await self._run(hq_key)
        finally:
            if self.pcscd is not None and self.own_pcscd:
                self.pcscd.stop()
            elif self.pcscd is not None:
                self.pcscd.start()  # leave a lent pcscd running, as it was

    async def _run(self, hq_key: Any) -> bool:
        async with running_hq(self.root / "hq", tls=False, hq_key=hq_key) as hq:
            with SerialStub(link=str(self.root / "scanner"), framing="crlf") as stub:
                self.hq, self.stub = hq, stub
                config = self._config(hq.url, hq_key, stub.path)
                tkey = keys.init(self.root / "state")
                hq.enroll("0042-07", tkey.public_raw)
                self.agent = Agent(self.root, config)
                await self.agent.start(self.port)
                self.up.set()
                chaos = asyncio.create_task(self._chaos())
                try:
                    await self._pos()
                finally:
                    self.done.set()
                    chaos.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await chaos
                hq.faults.clear()
                if not hq.server.running:
                    await hq.start()
                if self.agent.proc is None or self.agent.proc.returncode is not None:
                    await self.agent.start(self.port)
                await self._drained()
                status = await self.agent.stop()
            return self._verdict(hq.db_path, hq_key, status)

    def _config(self, hq_url: str, hq_key: Any, port: str) -> Path:
        (self.root / "pos-token").write_text(TOKEN)
        path = self.root / "agent.toml"
        path.write_text(
            f'[terminal]\nid = "0042-07"\nstore = "0042"\nstate_dir = "state"\n\n'
            f'[[readers]]\nkind = "serial"\nport = "{port}"\nname = "scanner"\n\n'
            + ('[[readers]]\nkind = "pcsc"\nname = "Virtual PCD 00 00"\n\n' if self.pcscd else "")
            + "[prompt]\ntimeout_s = 1\n\n"
            f'[hq]\nurl = "{hq_url}"\nenc_kid = "{hq_key.kid}"\n'
            f'enc_public_key = "{hq_key.public_b64}"\n\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\ntoken_file = "pos-token"\n'
        )
        return path

    # --- the POS ---------------------------------------------------------------------------

    async def _pos(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as http:
            for n in range(self.baskets):
                await self.up.wait()
                await self._transaction(http, n)

    async def _transaction(self, http: aiohttp.ClientSession, n: int) -> None:
        receipt = f"R{n:06d}"
        # "none" lets the prompt time out (1 s each): rare, or the run is all waiting
        choice = self.rng.choices(["record", "skip", "none"], [0.64, 0.34, 0.02])[0]
        try:
            source = self.rng.choices(
                ["scanner", "pos", "contactless"], [0.4, 0.4, 0.2 if self.pcscd else 0]
            )[0]
            if source == "contactless":
                card = VirtualCard(self.card(), port=VPCD_PORTS[0])
                card.present()
                try:  # pcscd notices a card within its 400 ms poll
                    prompted = await self._prompt(http, tries=150)
                finally:
                    await card.remove()
                if not prompted:
                    self.tally.not_started += 1  # pcscd restarting, or the agent
                    return
            elif source == "scanner" and self.stub.plugged:
                await self.stub.scan(self.card())
                if not await self._prompt(http):
                    self.tally.not_started += 1  # scanner unplugged or agent gone: no read
                    return
            else:
                async with http.post(self.api + "/v1/card", json={"card": self.card()}) as r:
                    if r.status != 200:
                        self.tally.not_started += 1
                        return
            if choice != "none":
                async with http.post(self.api + "/v1/decision", json={"decision": choice}) as r:
                    if r.status == 200:
                        self.tally.decisions[choice] += 1
                    elif r.status == 409:  # the prompt had timed out (the machine was slow)
                        self.tally.decisions["timeout"] += 1
                        self.tally.not_started += 1
                        return
            items = [
                {"gtin": g, "qty": 1000, "amount": self.rng.randint(50, 999)}
                for g in self.rng.sample(GTINS, self.rng.randint(1, 3))
            ]
            basket = {
                "receipt": receipt,
                "currency": "CHF",
                "total": sum(i["amount"] for i in items),
                "items": items,
            }
            async with http.post(self.api + "/v1/basket", json=basket) as r:
                answer = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.tally.unanswered.add(receipt)
            if choice != "none":
                self.tally.decisions_unanswered += 1
            await self.up.wait()
            return
        if answer.get("recorded") is True:
            self.tally.recorded[receipt] = int(answer["seq"])
        else:
            self.tally.declined.add(receipt)
            if answer.get("reason", "").startswith("no answer"):
                self.tally.decisions["timeout"] += 1

    async def _prompt(self, http: aiohttp.ClientSession, tries: int = 40) -> bool:
        for _ in range(tries):
            async with http.get(self.api + "/v1/session") as r:
                view = await r.json()
            if view.get("state") == "prompt":
                return True
            await asyncio.sleep(0.01)
        return False

    # --- the chaos -------------------------------------------------------------------------

    async def _chaos(self) -> None:
        """Kills paced by progress (the asked-for number happens within the run, each at a
        random moment of its stretch); every other kind of trouble at least once early on,
        then at random."""
        per_kill = max(1, self.baskets // (self.kills + 1))
        first = ["hq-outage", "hq-fault", "unplug", *(["pcscd"] if self.pcscd else [])]
        self.rng.shuffle(first)
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(0.02, 0.15))
            t = self.tally
            total = len(t.recorded) + len(t.declined) + len(t.unanswered) + t.not_started
            due = t.kills < self.kills and total >= per_kill * (t.kills + 1) + self.rng.randint(
                -per_kill // 3, per_kill // 3
            )
            if due:
                await self._kill_agent()
                continue
            if first:
                kind = first.pop()
            else:
                kind = self.rng.choices(
                    ["hq-outage", "hq-fault", "unplug", "pcscd", "calm"],
                    [0.15, 0.3, 0.15, 0.1 if self.pcscd else 0, 0.3],
                )[0]
            await self._trouble(kind)

    async def _kill_agent(self) -> None:
        self.up.clear()
        await self.agent.kill()
        self.tally.kills += 1
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))  # systemd's RestartSec, shortened
        await self.agent.start(self.port)
        self.up.set()

    async def _trouble(self, kind: str) -> None:
        t = self.tally
        if kind == "hq-outage" and self.hq.server.running:
            await self.hq.stop()
            t.hq_outages += 1
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            await self.hq.start()
        elif kind == "hq-fault":
            fault = self.rng.choice(["500", "429", "slow", "drop"])
            f = self.hq.faults
            if fault == "500":
                f.fail(1)
            elif fault == "429":
                f.throttle(1, status=429, retry_after=1)
            elif fault == "slow":
                f.hang(1, seconds=self.rng.uniform(0.5, 3.0))
            else:
                f.drop_response(1)
            t.hq_faults += 1
        elif kind == "unplug" and self.stub.plugged:
            await self.stub.unplug(self.rng.uniform(0.2, 1.0))
            t.unplugs += 1
        elif kind == "pcscd" and self.pcscd is not None:
            self.pcscd.kill()
            t.pcscd_restarts += 1
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            # on this thread, not a worker: a cancelled run must never leave a pcscd it
            # started behind (start returns within ~0.5 s, once the readers are listed)
            self.pcscd.start()

    # --- the end ---------------------------------------------------------------------------

    async def _drained(self) -> None:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            for _ in range(1200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.api + "/metrics") as r:
                        if "cumulus_outbox_depth 0.0" in await r.text():
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError("the outbox did not drain")

    def _verdict(self, db: Path, hq_key: Any, status: int) -> bool:
        t = self.tally
        at_hq: Counter[str] = Counter()
        chain_ok = True
        with SqliteStorage(db) as storage:
            envs = [decode(e.body) for e in storage.envelopes()]
            pub = keys.load(self.root / "state").public_raw
            prev = ZERO_HASH
            expected = 1
            for env in sorted(envs, key=lambda e: e.header.seq):
                verify_sig(env, pub)
                h = env.header
                if h.seq != expected or h.prev != prev:
                    purged = [
                        e.header.purged
                        for e in envs
                        if e.header.purged and e.header.purged.first_seq == expected
                    ]
                    if not purged or h.prev != purged[0].last_hash:
                        chain_ok = False
                prev = envelope_hash(env.encoded)
                expected = h.seq + 1
                if h.kind == "purchase":
                    p = open_payload(env, hq_key.suite, load_private(hq_key))
                    assert isinstance(p, PurchasePayload)
                    at_hq[p.receipt] += 1
        lost = [r for r in t.recorded if at_hq[r] == 0]
        duplicated = [r for r, c in at_hq.items() if c > 1]
        invented = [
            r for r in at_hq if r in t.declined or (r not in t.recorded and r not in t.unanswered)
        ]
        conn = sqlite3.connect(f"file:{self.root / 'state' / 'agent.db'}?mode=ro", uri=True)
        counted = dict(
            zip(
                ("record", "skip", "timeout"),
                conn.execute(
                    "SELECT SUM(record), SUM(skip), SUM(timeout) FROM consent_counters"
                ).fetchone(),
                strict=True,
            )
        )
        conn.close()
        counters_ok = all(
            t.decisions[k]
            <= (counted[k] or 0)
            <= t.decisions[k]
            + t.decisions_unanswered
            + (len(t.unanswered) if k == "timeout" else 0)
            for k in ("record", "skip", "timeout")
        )
        ok = (
            not lost
            and not duplicated
            and not invented
            and chain_ok
            and counters_ok
            and status == 0
        )
        print(
            f"chaos: {t.recorded.__len__() + len(t.declined) + len(t.unanswered)} baskets "
            f"({len(t.recorded)} recorded, {len(t.declined)} not recorded, "
            f"{len(t.unanswered)} unanswered, {t.not_started} never prompted); "
            f"{t.kills} agent kills, {t.hq_outages} HQ "
            f"outages, {t.hq_faults} HQ faults, {t.unplugs} scanner unplugs, "
            f"{t.pcscd_restarts} pcscd restarts"
        )
        print(
            f"counters on disk {counted} vs POS-seen {dict(t.decisions)} "
            f"(+{t.decisions_unanswered} unanswered decisions)"
        )
        print(
            f"verdict: {len(lost)} lost, {len(duplicated)} duplicated, {len(invented)} "
            f"invented; stream {'verifies' if chain_ok else 'BROKEN'} from seq 1; "
            f"counters {'match' if counters_ok else 'DIFFER'}; agent exit {status} -> "
            f"{'PASS' if ok else 'FAIL'}"
        )
        return ok


def load_private(hq_key: Any) -> Any:
    from agent.envelope.suites import load_private_key

    return load_private_key(hq_key.suite, hq_key.private_raw)


def main(argv: list[str] | None = None, pcscd: PrivatePcscd | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baskets", type=int, default=20_000)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--dir")
    ap.add_argument(
        "--contactless",
        type=float,
        default=0.1,
        help="share of cards tapped on the vpcd reader (where pcscd runs)",
    )
    args = ap.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cumulus-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos run in {root}, seed {args.seed}")
    ok = asyncio.run(
        Chaos(root, args.baskets, args.kills, args.seed, pcscd, args.contactless).run()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
