"""Sync client: the thin aiohttp adapter that carries the outbox to HQ.

All decisions live in `agent.sync.policy`; this module only does I/O: it reads batches from
the outbox, POSTs them (CBOR array of the exact envelope bytes, gzip), turns HQ's answer into
policy input, and applies the outcome to the outbox (ack, dead letter + bridge). It wakes
as soon as a new envelope is committed (`notify()`), so a recorded purchase is on its way
within milliseconds when HQ is reachable, and otherwise waits as long as the policy says.

Transport security: TLS verified against `hq.ca_file` alone when given (pinned), else the
system store; plain http only to a loopback host (also enforced by the config).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.envelope import cbor, decode
from agent.envelope.errors import DecodeError, EnvelopeError
from agent.outbox import AckOutOfRange, AsyncOutbox, StoredEnvelope
from agent.sync.policy import Answer, Rejection, SyncPolicy, parse_retry_after

log = logging.getLogger("cumulus.sync")

SKEW_WARN_S = 60.0
MAX_ANSWER_BYTES = 1 << 20
KEYSET_REFRESH_S = 3600.0
MAX_KEYSET_BYTES = 64 * 1024


class SyncError(Exception):
    """One attempt failed; `retry_after` is HQ's requested wait, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotEnrolled(SyncError):
    """HQ answered 403: this terminal or its key is not enrolled (a technician must act)."""


@dataclass
class SyncState:
    """What diagnostics, /metrics and STATUS= show about the link to HQ."""

    hq_reachable: bool | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    acked_through: int = 0
    sent_envelopes: int = 0
    dead_lettered: int = 0
    clock_skew_s: float | None = None
    fatal: str | None = None
    rejections: list[str] = field(default_factory=list)

    @property
    def skew_warning(self) -> bool:
        return self.clock_skew_s is not None and abs(self.clock_skew_s) > SKEW_WARN_S

    def to_json(self) -> dict[str, Any]:
        return {
            "hq_reachable": self.hq_reachable,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "acked_through": self.acked_through,
            "sent_envelopes": self.sent_envelopes,
            "dead_lettered": self.dead_lettered,
            "clock_skew_s": self.clock_skew_s,
            "clock_skew_warning": self.skew_warning,
            "fatal": self.fatal,
            "recent_rejections": self.rejections[-10:],
        }


def ssl_context(url: str, ca_file: Path | None) -> ssl.SSLContext | bool:
    """TLS settings for `url`: pinned CA when given; plain http only for loopback."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        host = parts.hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(f"refusing plain http to non-loopback host {host!r}")
        return False
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class SyncClient:
    """Drains one outbox to one HQ. `run()` forever (the daemon), `drain()` once (the CLI)."""

    def __init__(
        self,
        outbox: AsyncOutbox,
        terminal: str,
        url: str,
        *,
        ca_file: Path | None = None,
        policy: SyncPolicy | None = None,
        connect_timeout: float = 5.0,
        total_timeout: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
        on_keyset: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.terminal = terminal
        self.base = url.rstrip("/")
        self.ssl = ssl_context(url, ca_file)
        self.policy = policy or SyncPolicy(clock=time.monotonic)
        self.timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self.wall_clock = wall_clock
        self.state = SyncState()
        self._wake = asyncio.Event()
        self._resumed = False
        self._session: aiohttp.ClientSession | None = None
        self.on_keyset = on_keyset
        self._keyset_due = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> SyncClient:
        self._session = aiohttp.ClientSession(
            timeout=self.timeout,
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=2),
            headers={"User-Agent": "cumulus-edge-agent/1"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def notify(self) -> None:
        """A new envelope was committed: send now (unless backing off)."""
        self._wake.set()

    async def run(self) -> None:
        """Sync until cancelled. Never raises for HQ or network trouble; state shows it."""
        while True:
            self._wake.clear()  # before looking: a commit from now on wakes the wait below
            try:
                progressed = await self.step()
            except SyncError as exc:
                delay = self.policy.on_failure(exc.retry_after)
                self._failed(str(exc), delay)
                progressed = False
            if progressed:
                continue
            wait = self.policy.wait_time()
            if wait > 0:
                await asyncio.sleep(wait)  # backing off: a new envelope does not cut it short
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=30.0)

    async def drain(self, progress: Callable[[int, int], None] | None = None) -> SyncState:
        """Send until the outbox is empty or HQ fails once (CLI `sync`)."""
        total = (await self.outbox.status()).waiting
        while True:
            try:
                progressed = await self.step()
            except SyncError as exc:
                self.policy.on_failure(exc.retry_after)
                self._failed(str(exc), None)
                return self.state
            waiting = (await self.outbox.status()).waiting
            if progress is not None:
                progress(max(0, total - waiting), total)
            if not progressed:
                return self.state

    # --- one step ---------------------------------------------------------------------------

    async def step(self) -> bool:
        """Resume if needed, then send one batch. Return whether anything moved."""
        if not self._resumed:
            await self._resume()
        if self.on_keyset is not None and time.monotonic() >= self._keyset_due:
            await self._refresh_keyset()
        pending = await self.outbox.pending(after=0, limit=self.policy.max_batch)
        purges = await self.outbox.purges()
        batch = self.policy.next_batch(pending, purges)
        if not batch:
            return False
        if await self._quarantine_corrupt(batch):
            return True  # the batch changed: plan it again
        answer = await self._post(batch)
        last_seq = await self.outbox.last_seq()
        try:
            outcome = self.policy.on_answer(batch, answer, last_seq)
        except ValueError as exc:
            self._fatal(str(exc))
            raise SyncError(str(exc)) from None
        self.state.sent_envelopes += len(batch)
        if outcome.ack_through is not None:
            await self._ack(outcome.ack_through)
        for r in outcome.dead_letter:
            await self.outbox.dead_letter(r.seq, r.reason, bridge=True)
            self.state.dead_lettered += 1
            self._rejected(r)
        for r in outcome.retry_later:  # usually the echo of the gap before them: resent later
            log.info("HQ will take envelope seq %d later: %s", r.seq, r.reason)
        self._succeeded()
        return outcome.progress or (len(batch) == 1 and batch[0].kind == "purge")

    async def _quarantine_corrupt(self, batch: Sequence[StoredEnvelope]) -> bool:
        """Check our own envelopes before they leave: one damaged at rest (disk error, a
        flipped byte) would make HQ refuse the whole batch, forever. Such an envelope is
        dead-lettered and bridged with a purge envelope, like an HQ rejection."""
        found = False
        for env in batch:
            problem = _local_problem(env, self.terminal, self.outbox.stream)
            if problem is not None:
                log.error("envelope seq %d is damaged at rest (%s): quarantined", env.seq, problem)
                await self.outbox.dead_letter(
                    env.seq,
                    f"damaged at rest: {problem}",
                    bridge=True,
                    purge_reason="damaged-at-rest",
                )
                self.state.dead_lettered += 1
                found = True
        return found

    async def _ack(self, through: int) -> None:
        try:
            await self.outbox.ack(through)
        except AckOutOfRange as exc:
            self._fatal(str(exc))
            raise SyncError(str(exc)) from None
        self.state.acked_through = through

    async def _resume(self) -> None:
        url = f"{self.base}/v1/streams/{self.terminal}/{self.outbox.stream.hex()}"
        data = await self._request("GET", url, None)
        acked = _uint(data, "acked_through")
        try:
            local = self.policy.resume(acked, await self.outbox.last_seq())
        except ValueError as exc:
            self._fatal(str(exc))
            raise SyncError(str(exc)) from None
        if local is not None:
            await self._ack(local)
        self.state.acked_through = self.policy.acked_through
        self._resumed = True

    async def _refresh_keyset(self) -> None:
        """Fetch HQ's signed keyset (`GET /v1/keys`) and hand it over for verification."""
        assert self._session is not None and self.on_keyset is not None
        self._keyset_due = time.monotonic() + KEYSET_REFRESH_S
        try:
            async with self._session.get(f"{self.base}/v1/keys") as resp:
                if resp.status == 404:
                    return  # HQ has not published one: the configured key stays
                raw = await resp.content.read(MAX_KEYSET_BYTES + 1)
                if resp.status != 200 or len(raw) > MAX_KEYSET_BYTES:
                    raise SyncError(f"HQ answered {resp.status} for its keyset")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._keyset_due = time.monotonic() + 60.0  # try again soon
            raise SyncError(f"HQ unreachable: {type(exc).__name__}: {exc}") from None
        await self.on_keyset(raw)

    async def _post(self, batch: Sequence[StoredEnvelope]) -> Answer:
        body = cbor.dumps([e.body for e in batch])
        gz = await asyncio.to_thread(gzip.compress, body, 1)
        data = await self._request("POST", f"{self.base}/v1/envelopes", gz)
        stream = data.get("stream")
        if stream != self.outbox.stream:
            raise SyncError("HQ answered for another stream")
        rejected = data.get("rejected", [])
        if not isinstance(rejected, list):
            raise SyncError("HQ answer: 'rejected' is not an array")
        out = []
        for r in rejected:
            if not isinstance(r, dict):
                raise SyncError("HQ answer: a rejection is not a map")
            reason = r.get("reason")
            out.append(Rejection(_uint(r, "seq"), reason if isinstance(reason, str) else "?"))
        return Answer(_uint(data, "acked_through"), tuple(out))

    async def _request(self, method: str, url: str, body: bytes | None) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with SyncClient(...)'")
        headers = {"Accept": "application/cbor"}
        if body is not None:
            headers |= {"Content-Type": "application/cbor", "Content-Encoding": "gzip"}
        try:
            async with self._session.request(method, url, data=body, headers=headers) as resp:
                self._note_clock(resp.headers.get("Date"))
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status == 200:
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise SyncError("HQ answer too large")
                    try:
                        data = cbor.loads(raw, what="HQ answer")
                    except DecodeError as exc:
                        raise SyncError(f"HQ answered malformed CBOR: {exc}") from None
                    if not isinstance(data, dict):
                        raise SyncError("HQ answer is not a map")
                    return data
                reason = _error_reason(raw)
                retry = parse_retry_after(resp.headers.get("Retry-After"), self.wall_clock())
                if resp.status == 403:
                    raise NotEnrolled(
                        f"HQ refused this terminal (403): {reason}; enrol it with "
                        "'cumulus-hq enroll' (see 'cumulus-agent keys show')"
                    )
                if resp.status == 413:
                    self.policy.shrink()
                    raise SyncError(f"HQ: batch too large (413): {reason}")
                raise SyncError(f"HQ answered {resp.status}: {reason}", retry)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SyncError(f"HQ unreachable: {type(exc).__name__}: {exc}") from None

    # --- state ------------------------------------------------------------------------------

    def _note_clock(self, date: str | None) -> None:
        if not date:
            return
        with contextlib.suppress(TypeError, ValueError):
            hq = parsedate_to_datetime(date).timestamp()
            self.state.clock_skew_s = round(hq - self.wall_clock(), 1)
            if self.state.skew_warning:
                log.warning("clock differs from HQ by %.0f s", self.state.clock_skew_s)

    def _succeeded(self) -> None:
        if self.state.hq_reachable is False:
            log.info(
                "HQ reachable again after %d failed attempt(s)", self.state.consecutive_failures
            )
        self.state.hq_reachable = True
        self.state.last_success_at = datetime.now(UTC)
        self.state.consecutive_failures = 0
        self.state.last_error = None

    def _failed(self, message: str, delay: float | None) -> None:
        if self.state.consecutive_failures == 0:  # log once per outage, not per retry
            log.warning("sync to HQ failed: %s", message)
        self.state.hq_reachable = False
        self.state.consecutive_failures += 1
        self.state.last_error = message
        if delay is not None:
            log.debug("next sync attempt in %.1f s", delay)

    def _rejected(self, r: Rejection) -> None:
        text = f"seq {r.seq}: {r.reason}"
        log.error("HQ rejected envelope %s", text)
        self.state.rejections.append(text)
        del self.state.rejections[:-50]

    def _fatal(self, message: str) -> None:
        log.error("sync stopped trusting HQ's view of the stream: %s", message)
        self.state.fatal = message


def _local_problem(env: StoredEnvelope, terminal: str, stream: bytes) -> str | None:
    try:
        header = decode(env.body).header
    except EnvelopeError as exc:
        return exc.reason
    if header.seq != env.seq or header.stream != stream or header.terminal != terminal:
        return "its header does not match its place in the outbox"
    return None


def _uint(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SyncError(f"HQ answer: {key!r} is not an unsigned integer")
    return value


def _error_reason(raw: bytes) -> str:
    """HQ's error body (CBOR `{error: text}`, or text), shortened for logs."""
    try:
        data = cbor.loads(raw, what="HQ error")
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])[:200]
    except DecodeError:
        pass
    return raw[:200].decode("utf-8", "replace").strip() or "no reason given"
