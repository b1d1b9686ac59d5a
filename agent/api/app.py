"""The local HTTP API of the agent (paths normative in interfaces.md), on aiohttp.

Every answer is JSON with a clear message; bad input is a 4xx that names the problem, never a
500; a body is read only up to 256 KiB. The same app is served on loopback TCP and on a Unix
socket (`serve()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.api.basket import MAX_BODY, BodyError, parse_basket, parse_card_body, parse_decision
from agent.api.checkout import CLOSING, Checkout
from agent.api.metrics import Metrics
from agent.api.security import Guard, PageTokens, allowed_hosts
from drivers.cards import check_card

log = logging.getLogger("cumulus.api")

CHECKOUT: web.AppKey[Checkout] = web.AppKey("checkout", Checkout)
GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
PREFIXES: web.AppKey[tuple[str, ...]] = web.AppKey("prefixes", tuple)
LANG: web.AppKey[str] = web.AppKey("lang", str)
LANGS = ("de", "fr", "it", "en")
SSE_KEEPALIVE_S = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def _fail(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check first, then turn every stray exception into a JSON 500 (and a log line)."""
    try:
        request.app[GUARD].check_host(request)
        return await handler(request)
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _fail(500, "internal error (logged); the checkout may continue")


async def _read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BodyError(f"body: larger than {MAX_BODY} bytes")
    ctype = request.content_type
    if ctype not in ("application/json", ""):
        raise BodyError(f"body: Content-Type must be application/json, not {ctype}")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BodyError(f"body: larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyError(f"body: not valid JSON ({exc})") from None


async def index(request: web.Request) -> web.Response:
    lang = request.query.get("lang", request.app[LANG])
    if lang not in LANGS:
        lang = request.app[LANG]
    token = request.app[GUARD].pages.issue()
    page = resources.files("agent.api").joinpath("static/index.html").read_text("utf-8")
    page = page.replace("{{LANG}}", lang).replace("{{TOKEN}}", html.escape(token))
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


async def session(request: web.Request) -> web.Response:
    request.app[GUARD].require_page_or_pos(request)
    return _json(request.app[CHECKOUT].view())


async def events(request: web.Request) -> web.StreamResponse:
    request.app[GUARD].require_page_or_pos(request)
    checkout = request.app[CHECKOUT]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    queue = checkout.watch()
    try:
        await resp.write(b"retry: 1000\n\n")
        while True:
            try:
                view = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            await resp.write(f"event: session\ndata: {json.dumps(view)}\n\n".encode())
            if view is CLOSING:
                break
    except ConnectionResetError:
        pass  # the page went away; cancellation (shutdown) propagates
    finally:
        checkout.unwatch(queue)
    return resp


async def card(request: web.Request) -> web.Response:
    request.app[GUARD].require_pos(request)
    try:
        number = parse_card_body(await _read_json(request))
    except BodyError as exc:
        return _fail(400, str(exc))
    reason = check_card(number, request.app[PREFIXES])
    if reason is not None:
        return _fail(422, f"card: not a Cumulus card number ({reason})")
    checkout = request.app[CHECKOUT]
    if not checkout.accepting:
        return _fail(503, "agent is shutting down")
    checkout.present_card(number, "pos")
    return _json(checkout.view())


async def decision(request: web.Request) -> web.Response:
    who = request.app[GUARD].require_page_or_pos(request)
    try:
        choice = parse_decision(await _read_json(request))
    except BodyError as exc:
        return _fail(400, str(exc))
    refused = await request.app[CHECKOUT].decide(
        choice, by="cashier" if who == "cashier" else "pos"
    )
    if refused is not None:
        return _fail(409, refused)
    return _json(request.app[CHECKOUT].view())


async def basket(request: web.Request) -> web.Response:
    request.app[GUARD].require_pos(request)
    try:
        parsed = parse_basket(await _read_json(request))
    except BodyError as exc:
        return _fail(400, str(exc))
    result = await request.app[CHECKOUT].close_basket(parsed)
    return _json(result.to_json(), 503 if result.unavailable else 200)


async def void(request: web.Request) -> web.Response:
    request.app[GUARD].require_pos(request)
    request.app[CHECKOUT].void()
    return _json({"voided": True})


async def healthz(request: web.Request) -> web.Response:
    return _json({"ok": True, "session": request.app[CHECKOUT].session.state.value})


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": Metrics.CONTENT_TYPE})


def make_app(
    checkout: Checkout,
    *,
    port: int | None,
    pos_token: str | None,
    prefixes: tuple[str, ...] = ("2099",),
    lang: str = "de",
    metrics_source: Metrics | None = None,
) -> web.Application:
    app = web.Application(middlewares=[guard_middleware], client_max_size=MAX_BODY)
    app[CHECKOUT] = checkout
    app[GUARD] = Guard(allowed_hosts(port), pos_token, PageTokens())
    app[METRICS] = metrics_source or Metrics(checkout)
    app[PREFIXES] = prefixes
    app[LANG] = lang
    app.router.add_get("/", index)
    app.router.add_get("/v1/session", session)
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/card", card)
    app.router.add_post("/v1/decision", decision)
    app.router.add_post("/v1/basket", basket)
    app.router.add_post("/v1/void", void)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    """On shutdown, end every page's event stream first, so stopping never waits on them."""
    app[CHECKOUT].close_watchers()


async def serve(
    app: web.Application, host: str, port: int, socket_path: Path | None = None
) -> web.AppRunner:
    """Listen on loopback TCP and, when given, a Unix socket (mode 0660). Return the runner."""
    # handler_cancellation: a page that closes its event stream ends its handler at once
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    if socket_path is not None:
        _clear_socket(socket_path)
        await web.UnixSite(runner, str(socket_path)).start()
        os.chmod(socket_path, 0o660)
    return runner


def _clear_socket(path: Path) -> None:
    """A stale socket from a killed agent would make bind() fail: remove it first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.makedirs(path.parent, exist_ok=True)
