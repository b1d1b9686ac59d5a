"""The HTTP face of the ingest tier (envelope-v1 "Transport"), on aiohttp.

Routes: `POST /v1/envelopes`, `GET /v1/streams/{terminal}/{stream_hex}`, `GET /v1/keys`
(the signed keyset, served as the exact bytes `cumulus-hq keys sign-keyset` wrote: the ingest
tier never holds the signing key), `GET /healthz`.
Every answer, errors included, is CBOR in the envelope data model (maps, text, bytes, uints;
no booleans), so a terminal decodes it with the same strict decoder as envelopes. Errors are
`{error: "<code>: <detail>"}` (docs/hq.md lists the codes). Bad input is always a 4xx: a
500 means a bug in HQ, and is logged with its traceback.

Why one storage thread (`IngestService`): SQLite commits are fsync'd (milliseconds) and a
sqlite3 connection belongs to one thread; a single worker gives both thread affinity and a
total order of batches, so two requests for one stream never interleave. Signature checks and
gunzip run there too, off the event loop. A bounded queue in front of it answers `503` with
`Retry-After` instead of letting terminals pile up behind a slow disk. To ingest in
parallel, run several processes (`cumulus-hq serve --reuse-port` on one address, or behind
a load balancer) on one PostgreSQL database: the database, not this thread, serializes the
writers of a stream (hq/storage/postgres.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import ClientPayloadError, hdrs, web
from aiohttp.typedefs import Handler, Middleware

from agent.envelope import cbor
from agent.envelope.model import TERMINAL_RE
from hq.errors import Forbidden, Malformed, Refused, TooLarge, Unavailable
from hq.ingest import IngestResult, ingest
from hq.keys import keyset_path
from hq.storage import Storage, StorageError, open_storage
from hq.transport import MAX_BODY, check_content_type, gunzip_limited, is_gzipped, parse_batch

log = logging.getLogger("hq.server")

T = TypeVar("T")
DEFAULT_LISTEN = "127.0.0.1:8443"
CBOR = "application/cbor"
_STREAM_HEX = re.compile(r"[0-9a-fA-F]{32}")


# --- the storage thread -----------------------------------------------------------------------


class IngestService:
    """The storage and the one thread that touches it; `run` is the only way in."""

    def __init__(self, opener: Callable[[], Storage], *, max_pending: int = 64) -> None:
        self._opener = opener
        self._max_pending = max_pending
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None
        self._storage: Storage | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hq-storage")
        try:
            self._storage = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._opener
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def run(self, fn: Callable[[Storage], T]) -> T:
        """Run `fn(storage)` on the storage thread; `StorageError` becomes `Unavailable`."""
        if self._executor is None or self._storage is None:
            raise Unavailable("HQ is starting or stopping")
        if self._pending >= self._max_pending:
            raise Unavailable(f"{self._pending} requests already queued", retry_after=1)
        storage = self._storage
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, partial(fn, storage)
            )
        except StorageError as exc:
            log.error("storage failure: %s", exc)
            raise Unavailable(str(exc)) from exc
        finally:
            self._pending -= 1

    async def close(self) -> None:
        """Close after the work already queued (a batch being committed finishes first)."""
        executor, storage = self._executor, self._storage
        self._executor = self._storage = None
        if executor is None:
            return
        if storage is not None:
            await asyncio.get_running_loop().run_in_executor(executor, storage.close)
        executor.shutdown(wait=True)


SERVICE = web.AppKey("hq.service", IngestService)
KEYSET = web.AppKey("hq.keyset", Path)


# --- handlers ---------------------------------------------------------------------------------


def cbor_response(body: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=cbor.dumps(body), status=status, content_type=CBOR, headers=headers or None
    )


def error_response(status: int, reason: str, **headers: str) -> web.Response:
    return cbor_response({"error": reason}, status, **headers)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing past `limit` bytes without buffering more than that."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes; at most {limit}")
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"body larger than {limit} bytes")
    except (ConnectionResetError, ClientPayloadError):
        # the terminal went away mid-upload (killed, link lost): nothing to store, nothing
        # to answer, and no traceback: it will resend
        log.info("a terminal disconnected while sending a batch")
        raise web.HTTPBadRequest() from None
    return bytes(body)


def _ingest_body(storage: Storage, raw: bytes, gzipped: bool) -> IngestResult:
    body = gunzip_limited(raw, MAX_BODY) if gzipped else raw
    return ingest(storage, parse_batch(body))


async def post_envelopes(request: web.Request) -> web.Response:
    check_content_type(request.headers.get(hdrs.CONTENT_TYPE))
    gzipped = is_gzipped(request.headers.get(hdrs.CONTENT_ENCODING))
    raw = await _read_limited(request, MAX_BODY)
    result = await request.app[SERVICE].run(partial(_ingest_body, raw=raw, gzipped=gzipped))
    return cbor_response(result.answer())


def _stream_state(storage: Storage, terminal: str, stream: bytes) -> int:
    if storage.terminal_keys(terminal) is None:
        raise Forbidden(f"terminal {terminal} is not enrolled", code="unknown-terminal")
    return storage.acked_through(terminal, stream)


async def get_stream(request: web.Request) -> web.Response:
    terminal = request.match_info["terminal"]
    stream_hex = request.match_info["stream_hex"]
    if not TERMINAL_RE.fullmatch(terminal):
        raise Malformed("not a terminal id (^[A-Za-z0-9._-]{1,64}$)")
    if not _STREAM_HEX.fullmatch(stream_hex):
        raise Malformed("stream must be 32 hex digits (16 bytes)")
    acked = await request.app[SERVICE].run(
        partial(_stream_state, terminal=terminal, stream=bytes.fromhex(stream_hex))
    )
    return cbor_response({"acked_through": acked})


async def get_keys(request: web.Request) -> web.Response:
    """The published keyset, byte for byte (a terminal verifies it against its pinned HQ
    signing key); 404 until one is published."""
    path = request.app.get(KEYSET)
    try:
        data = await asyncio.to_thread(path.read_bytes) if path is not None else None
    except FileNotFoundError:
        data = None
    if data is None:
        return error_response(
            404, "not-found: no keyset published yet (cumulus-hq keys sign-keyset)"
        )
    return web.Response(body=data, content_type=CBOR, headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    await request.app[SERVICE].run(lambda storage: storage.ping())
    return cbor_response({"status": "ok"})


@web.middleware
async def cbor_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into a CBOR `{error}` answer with its status; never leak a 500
    for bad input (a 500 here is a bug, logged with its traceback)."""
    try:
        return await handler(request)
    except Refused as exc:
        return error_response(exc.status, exc.reason)
    except Unavailable as exc:
        return error_response(
            503, f"unavailable: {exc.detail}", **{"Retry-After": str(exc.retry_after)}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        code = exc.reason.lower().replace(" ", "-")
        return error_response(exc.status, f"{code}: {request.method} {request.path}", **extra)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal: HQ failed; this is a bug, see HQ's log")


def make_app(
    service: IngestService,
    *,
    middlewares: Sequence[Middleware] = (),
    keyset_path: Path | None = None,
) -> web.Application:
    """The aiohttp application. `middlewares` run outside the error handling (tests use this
    for fault injection). Run it with `auto_decompress=False` (as `HqServer` does): HQ
    inflates gzip itself, with the 4 MiB cap."""
    app = web.Application(middlewares=[*middlewares, cbor_errors], client_max_size=MAX_BODY)
    app[SERVICE] = service
    if keyset_path is not None:
        app[KEYSET] = keyset_path
    app.router.add_post("/v1/envelopes", post_envelopes)
    app.router.add_get("/v1/streams/{terminal}/{stream_hex}", get_stream)
    app.router.add_get("/v1/keys", get_keys)
    app.router.add_get("/healthz", healthz)
    return app


# --- running it -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, tls: bool) -> None:
    """Plain HTTP only on loopback: envelopes are encrypted, but headers, acks and the
    terminal registry's behaviour are not for the shop network."""
    if not tls and not is_loopback(host):
        raise ValueError(
            f"refusing plain HTTP on {host}: give --tls-cert and --tls-key, or listen on "
            "127.0.0.1 / ::1"
        )


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value)
    if not m:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"--listen {value!r}: port out of range")
    return host, port


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class HqServer:
    """The ingest API running in this process, for `cumulus-hq serve` and for tests.

    `start()` binds (port 0 picks a free port, kept for later restarts), `stop()` closes the
    listener, the connections and the database; `start()` again is HQ coming back on the same
    port. Use as `async with HqServer(...) as hq:` or call `serve_until(trigger)`.
    """

    def __init__(
        self,
        opener: Callable[[], Storage],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        middlewares: Sequence[Middleware] = (),
        shutdown_timeout: float = 5.0,
        max_pending: int = 64,
        keyset_path: Path | None = None,
        reuse_port: bool = False,
    ) -> None:
        check_listen(host, ssl_context is not None)
        self.keyset_path = keyset_path
        self.reuse_port = reuse_port
        self.opener = opener
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.middlewares = tuple(middlewares)
        self.shutdown_timeout = shutdown_timeout
        self.max_pending = max_pending
        self._runner: web.AppRunner | None = None
        self._service: IngestService | None = None

    @classmethod
    def for_db(cls, db: str | Path | None, state_dir: Path, **kwargs: Any) -> HqServer:
        """A server over the storage `--db` names (default `<state_dir>/hq.db`), serving
        `<state_dir>/keyset.cbor` as `GET /v1/keys`."""
        kwargs.setdefault("keyset_path", keyset_path(state_dir))
        return cls(partial(open_storage, db, state_dir), **kwargs)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("HQ server already running")
        service = IngestService(self.opener, max_pending=self.max_pending)
        await service.start()
        runner = web.AppRunner(
            make_app(service, middlewares=self.middlewares, keyset_path=self.keyset_path),
            auto_decompress=False,
            shutdown_timeout=self.shutdown_timeout,
        )
        try:
            await runner.setup()
            site = web.TCPSite(
                runner,
                self.host,
                self.port,
                ssl_context=self.ssl_context,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            await service.close()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner, self._service = runner, service
        log.info("HQ ingest listening on %s", self.url)

    async def stop(self) -> None:
        runner, service = self._runner, self._service
        self._runner = self._service = None
        if runner is not None:
            await runner.cleanup()
        if service is not None:
            await service.close()

    async def __aenter__(self) -> HqServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_until(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        """Serve until `shutdown_trigger()` returns (the CLI passes a signal-set event), then
        stop intake, let requests in flight finish within `shutdown_timeout`, close."""
        await self.start()
        try:
            await shutdown_trigger()
        finally:
            await self.stop()
