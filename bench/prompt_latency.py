"""Card read → prompt rendered in the cashier's browser, beside its floor measured in the same run.

Figure: for each card, the time from just before the POS's ``POST /v1/card`` leaves the client
to the moment the cashier page (Debian's Chromium, headless, 800x480) shows the prompt for that
card. "Shows" is measured twice: *DOM* = a MutationObserver sees the prompt visible with this
card's masked number; *painted* = the first animation frame after that has run and a task after
it (the frame that draws the prompt). Each moment is reported to Python through a Playwright
binding and stamped on arrival.
Floor:  the same path with none of our code: an aiohttp handler in the same process takes the
same kind of JSON POST and pushes one Server-Sent Event to an empty page whose EventSource
listener sets a DOM attribute; the same observer, the same frame, the same binding, the same
client and event loop. What remains above the floor is the agent (checks, session, view, SSE
handler) and the page's own rendering.
Both run in alternating blocks of cards in the same browser, after a warm-up; between cards
the prompt is closed (``POST /v1/void``; the floor page is reset the same way) and the next card
is sent only once the page shows it closed.

Run: .venv/bin/python bench/prompt_latency.py [--cards 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import BrowserContext, Page

from agent.outbox import SealingKeys
from drivers.cards import mask
from tests.agent.api_rig import running_agent
from tests.agent.browser import launch_chromium
from tests.factories import ean13, hq_key_pair

BLOCK = 20
WARMUP = 20
WAIT_S = 10.0

#: Installed in both pages: reports ("key", "dom"), then ("key", "paint") when a new key shows,
#: and ("", "idle") when it goes away. mode "agent": key = the prompt's masked card while the
#: prompt is visible; mode "floor": key = <body data-n>.
OBSERVER = """mode => {
  const key = mode === "agent"
    ? () => document.getElementById("prompt").classList.contains("hidden")
        ? null : document.getElementById("card-number").textContent
    : () => document.body.dataset.n || null;
  let last = key();
  new MutationObserver(() => {
    const k = key();
    if (k === last) return;
    last = k;
    if (k === null) { window.promptSeen("", "idle"); return; }
    window.promptSeen(k, "dom");
    requestAnimationFrame(() => setTimeout(() => window.promptSeen(k, "paint"), 0));
  }).observe(document.documentElement,
             { subtree: true, childList: true, characterData: true, attributes: true });
}"""

FLOOR_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>floor</title></head><body><script>
new EventSource("/events").addEventListener("session", ev => {
  document.body.dataset.n = JSON.parse(ev.data).n;
});
</script></body></html>
"""


# --- the floor: an SSE round trip with an empty page --------------------------------------------


def floor_app() -> web.Application:
    watchers: set[asyncio.Queue[str]] = set()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FLOOR_PAGE, content_type="text/html")

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        watchers.add(queue)
        try:
            await resp.write(b"retry: 1000\n\n")
            while True:
                data = await queue.get()
                await resp.write(f"event: session\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            return resp
        finally:
            watchers.discard(queue)

    async def push(request: web.Request) -> web.Response:
        data = json.dumps(await request.json())
        for queue in watchers:
            queue.put_nowait(data)
        return web.json_response({"pushed": len(watchers)})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/events", events)
    app.router.add_post("/push", push)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- measuring --------------------------------------------------------------------------------


class Arrivals:
    """Binding calls from the pages, stamped with perf_counter_ns as they reach Python."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[int]] = {}

    def expect(self, key: str, kind: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[(key, kind)] = fut
        return fut

    def arrive(self, key: str, kind: str) -> None:
        now = time.perf_counter_ns()
        fut = self._waiting.pop((key, kind), None)
        if fut is not None and not fut.done():
            fut.set_result(now)


Send = Callable[[str], Awaitable[None]]


async def run_block(
    page: Page,
    arrivals: Arrivals,
    send: Send,
    reset: Callable[[], Awaitable[None]],
    keys: list[tuple[str, str]],
) -> list[tuple[int, int]]:
    """For each (what to send, key the page will show): (ns to DOM, ns to painted)."""
    await page.bring_to_front()
    out = []
    for payload, key in keys:
        dom, paint = arrivals.expect(key, "dom"), arrivals.expect(key, "paint")
        t0 = time.perf_counter_ns()
        await send(payload)
        dom_ns, paint_ns = await asyncio.wait_for(asyncio.gather(dom, paint), WAIT_S)
        out.append((dom_ns - t0, paint_ns - t0))
        idle = arrivals.expect("", "idle")
        await reset()
        await asyncio.wait_for(idle, WAIT_S)
    return out


async def instrumented_page(context: BrowserContext, url: str, mode: str) -> Page:
    page = await context.new_page()
    await page.goto(url)
    await page.evaluate(OBSERVER, mode)
    return page


def percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] / 1e6


def summary(values: list[int]) -> dict[str, float]:
    return {
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) / 1e6,
        "mean_ms": statistics.fmean(values) / 1e6,
    }


async def measure(cards: int) -> dict[str, object]:
    hq = hq_key_pair()
    keys = SealingKeys.build(
        "0042-07", Ed25519PrivateKey.generate(), hq.kid, hq.suite, hq.public_raw
    )
    numbers = (ean13(f"2099{n:08d}") for n in range(10**8))
    with tempfile.TemporaryDirectory(prefix="prompt-bench-") as tmp:
        async with (
            launch_chromium() as context,
            running_agent(Path(tmp), keys) as agent,
            serving(floor_app()) as floor_url,
        ):
            arrivals = Arrivals()
            await context.expose_function("promptSeen", arrivals.arrive)
            agent_page = await instrumented_page(context, agent.url + "/?lang=en", "agent")
            floor_page = await instrumented_page(context, floor_url + "/", "floor")
            user_agent = await agent_page.evaluate("() => navigator.userAgent")
            http = agent.http

            async def send_card(card: str) -> None:
                status, body = await agent.post("/v1/card", {"card": card})
                if status != 200:
                    raise RuntimeError(f"POST /v1/card: {status} {body}")

            async def void() -> None:
                await agent.post("/v1/void", {})

            async def push(n: str) -> None:
                async with http.post(floor_url + "/push", json={"n": n}) as r:
                    if (await r.json())["pushed"] != 1:
                        raise RuntimeError("the floor page is not listening")

            async def unpush() -> None:
                await push("")

            def agent_keys(k: int) -> list[tuple[str, str]]:
                return [(c, mask(c)) for c in (next(numbers) for _ in range(k))]

            counter = iter(range(1, 10**9))

            def floor_keys(k: int) -> list[tuple[str, str]]:
                return [(str(n), str(n)) for n in (next(counter) for _ in range(k))]

            await run_block(floor_page, arrivals, push, unpush, floor_keys(WARMUP))
            await run_block(agent_page, arrivals, send_card, void, agent_keys(WARMUP))
            floor: list[tuple[int, int]] = []
            ours: list[tuple[int, int]] = []
            while len(ours) < cards:
                k = min(BLOCK, cards - len(ours))
                floor += await run_block(floor_page, arrivals, push, unpush, floor_keys(k))
                ours += await run_block(agent_page, arrivals, send_card, void, agent_keys(k))
            await agent_page.close()
            await floor_page.close()
            await agent.checkout.drain()  # ends the streams, as the daemon's stop does
    result: dict[str, object] = {"cards": cards, "browser": user_agent}
    for name, rows in (("floor", floor), ("page", ours)):
        result[name] = {
            "dom": summary([d for d, _ in rows]),
            "painted": summary([p for _, p in rows]),
        }
    return result


def _rows(result: dict[str, object]) -> list[tuple[str, dict[str, float]]]:
    floor, page = result["floor"], result["page"]
    assert isinstance(floor, dict) and isinstance(page, dict)
    return [
        ("floor: SSE push -> empty page, DOM", floor["dom"]),
        ("card -> cashier page, DOM", page["dom"]),
        ("floor: SSE push -> empty page, painted", floor["painted"]),
        ("card -> cashier page, painted", page["painted"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        result = asyncio.run(measure(args.cards))
    except FileNotFoundError as exc:  # no /usr/bin/chromium
        print(f"prompt latency: not measured: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"prompt latency: POST /v1/card -> prompt shown, {args.cards} cards each, "
        f"in alternating blocks of {BLOCK}; 800x480"
    )
    print(f"browser: {result['browser']}")
    print(f"{'':40}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in _rows(result):
        print(f"{name:40}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}{row['max_ms']:9.2f}")
    floor, page = result["floor"], result["page"]
    assert isinstance(floor, dict) and isinstance(page, dict)
    for stage in ("dom", "painted"):
        f, p = floor[stage], page[stage]
        print(
            f"page / floor, {stage:7}: p50 {p['p50_ms'] / f['p50_ms']:.2f}x "
            f"({p['p50_ms'] - f['p50_ms']:+.2f} ms), "
            f"p99 {p['p99_ms'] / f['p99_ms']:.2f}x ({p['p99_ms'] - f['p99_ms']:+.2f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
