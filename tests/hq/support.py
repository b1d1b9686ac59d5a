"""Test support for anyone who needs a real HQ: TLS, a running receiver, and faults.

    from tests.hq.support import make_ca, running_hq

    async with running_hq(tmp_path) as hq:          # https://127.0.0.1:<free port>
        hq.enroll("0042-07", public_raw)
        hq.faults.fail(2)                            # next 2 POSTs of a batch: 500
        ...                                          # your sync client, trusting hq.ca_file
        assert hq.stored("0042-07", stream) == [1, 2, 3]
        await hq.stop(); await hq.start()            # HQ down, then up on the same port

The terminal's side (sealing real envelopes, posting batches) is in `tests.hq.edge` and
re-exported here. Everything here is TEST-ONLY. `FaultInjector` in particular is an aiohttp
middleware that makes HQ misbehave on purpose; it lives here, never in `hq/`, and
`running_hq` is the only thing that installs it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.envelope import cbor
from agent.fsutil import write_private
from hq.server import HqServer, server_ssl_context
from hq.storage import LoggedRejection, SqliteStorage
from tests.factories import HqKeyPair
from tests.hq.edge import (
    CBOR,
    Reply,
    SealingTerminal,
    batch_body,
    post_batch,
    post_raw,
    seq_of,
)

__all__ = [
    "CBOR",
    "Fault",
    "FaultInjector",
    "Reply",
    "RunningHq",
    "SealingTerminal",
    "TlsFiles",
    "batch_body",
    "client_ssl_context",
    "install_hq_key",
    "make_ca",
    "post_batch",
    "post_raw",
    "running_hq",
    "seq_of",
]

# --- TLS ------------------------------------------------------------------------------------


class TlsFiles(NamedTuple):
    """Paths of a throw-away CA and a server certificate for 127.0.0.1, ::1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(tmp_path: Path) -> TlsFiles:
    """Write `ca.pem`, `cert.pem`, `key.pem` under `tmp_path/tls` (P-256, valid for a day).

    The certificates carry the extensions strict verifiers demand (basic constraints, key
    usage, SKI/AKI, serverAuth), so they also pass Python 3.13's VERIFY_X509_STRICT."""
    out = tmp_path / "tls"
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("cumulus-edge test CA"))
        .issuer_name(_name("cumulus-edge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = TlsFiles(out / "ca.pem", out / "cert.pem", out / "key.pem")
    paths.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        paths.key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return paths


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """What a terminal does with `[hq] ca_file`: trust exactly that CA, verify the name."""
    return ssl.create_default_context(cafile=str(ca_file))


# --- fault injection (TEST-ONLY) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Literal["status", "hang", "drop"]
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0
    after: bool = False  # hang: after the batch was handled (stored) instead of before


def _is_batch_post(request: web.Request) -> bool:
    return request.method == "POST" and request.path == "/v1/envelopes"


class FaultInjector:
    """TEST-ONLY aiohttp middleware: the next N matching requests misbehave on purpose.

    By default only `POST /v1/envelopes` is matched (set `match` to change that), so health
    checks and stream look-ups go through untouched. Faults queue up in the order given.
    `injected` records (method, path, kind) of every fault applied, for assertions.
    """

    def __init__(self, match: Callable[[web.Request], bool] = _is_batch_post) -> None:
        self.match = match
        self._queue: deque[Fault] = deque()
        self.injected: list[tuple[str, str, str]] = []
        self._release: asyncio.Event | None = None
        self._applied: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def fail(self, n: int = 1, status: int = 500) -> None:
        """Answer `status` (default 500) without touching storage."""
        self._queue.extend(Fault("status", status) for _ in range(n))

    def throttle(self, n: int = 1, status: int = 503, retry_after: int = 1) -> None:
        """Answer 429 or 503 with `Retry-After: retry_after` without touching storage."""
        if status not in (429, 503):
            raise ValueError("throttle answers 429 or 503")
        self._queue.extend(Fault("status", status, retry_after) for _ in range(n))

    def hang(self, n: int = 1, seconds: float = 30.0, *, after: bool = False) -> None:
        """Hold the request `seconds` (or until `release()`), then handle it normally;
        with `after=True` handle (store) first and hold the answer back."""
        self._queue.extend(Fault("hang", seconds=seconds, after=after) for _ in range(n))

    def drop_response(self, n: int = 1) -> None:
        """Handle the request (the batch IS stored) then close the connection unanswered:
        the lost response after a commit, which exactly-once delivery must survive."""
        self._queue.extend(Fault("drop") for _ in range(n))

    def release(self) -> None:
        """End every hang now."""
        if self._release is not None:
            self._release.set()

    def clear(self) -> None:
        self._queue.clear()
        self.release()

    async def wait_injected(self, count: int = 1) -> None:
        """Return once `count` faults have been applied (e.g. a hang has begun)."""
        while len(self.injected) < count:
            if self._applied is None or self._applied.is_set():
                self._applied = asyncio.Event()
            await self._applied.wait()

    async def _hold(self, seconds: float) -> None:
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._queue or not self.match(request):
            return await handler(request)
        fault = self._queue.popleft()
        self.injected.append((request.method, request.path, fault.kind))
        if self._applied is not None:
            self._applied.set()
        if fault.kind == "status":
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            return web.Response(
                status=fault.status,
                body=cbor.dumps({"error": f"injected: test fault {fault.status}"}),
                content_type=CBOR,
                headers=headers,
            )
        if fault.kind == "hang" and not fault.after:
            await self._hold(fault.seconds)
            return await handler(request)
        response = await handler(request)
        if fault.kind == "hang":
            await self._hold(fault.seconds)
            return response
        if request.transport is not None:  # drop: the work is done, the answer is lost
            request.transport.close()
        return response


# --- a running HQ ---------------------------------------------------------------------------------


def install_hq_key(state_dir: Path, key: HqKeyPair) -> Path:
    """Write a factories `HqKeyPair` as a reader-tier key file (what `keys init` writes)."""
    path = state_dir / "keys" / f"{key.kid}.json"
    record = {
        "kid": key.kid,
        "suite": key.suite,
        "created_at": "2026-01-01T00:00:00+00:00",
        "private_key": base64.b64encode(key.private_raw).decode(),
        "public_key": key.public_b64,
    }
    write_private(path, json.dumps(record).encode())
    return path


@dataclass
class RunningHq:
    """A live HQ for tests; inspection methods open their own connection (work while down)."""

    server: HqServer
    state_dir: Path
    db_path: Path
    ca_file: Path | None
    faults: FaultInjector

    @property
    def url(self) -> str:
        return self.server.url

    @contextmanager
    def storage(self) -> Iterator[SqliteStorage]:
        with SqliteStorage(self.db_path) as storage:
            yield storage

    def enroll(self, terminal: str, pubkey_raw: bytes) -> str:
        """Register a signing key (raw 32 bytes); return its sig_kid."""
        with self.storage() as s:
            return s.enroll(terminal, pubkey_raw).sig_kid

    def stored(self, terminal: str, stream: bytes) -> list[int]:
        with self.storage() as s:
            return s.stored_seqs(terminal, stream)

    def acked_through(self, terminal: str, stream: bytes) -> int:
        with self.storage() as s:
            return s.acked_through(terminal, stream)

    def rejections(self, terminal: str | None = None) -> list[LoggedRejection]:
        with self.storage() as s:
            return s.rejections(terminal)

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.ca_file is None else client_ssl_context(self.ca_file)

    def session(self) -> aiohttp.ClientSession:
        """A client session trusting this HQ's test CA (caller closes it)."""
        ctx = self.ssl_context()
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx if ctx else False))

    async def stop(self) -> None:
        """HQ goes down: listener and connections closed, database closed."""
        await self.server.stop()

    async def start(self) -> None:
        """HQ comes back on the same port with the same database."""
        await self.server.start()


@asynccontextmanager
async def running_hq(
    tmp_path: Path,
    *,
    tls: bool = True,
    hq_key: HqKeyPair | None = None,
    shutdown_timeout: float = 0.5,
) -> AsyncIterator[RunningHq]:
    """HQ in this process on 127.0.0.1 (free port), real TLS from `make_ca`, a fresh state
    dir under `tmp_path/hq-state`; `hq_key` is installed as a reader-tier key if given."""
    state_dir = tmp_path / "hq-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    if hq_key is not None:
        install_hq_key(state_dir, hq_key)
    ca = make_ca(tmp_path) if tls else None
    faults = FaultInjector()
    server = HqServer.for_db(
        None,
        state_dir,
        host="127.0.0.1",
        port=0,
        ssl_context=None if ca is None else server_ssl_context(ca.cert_file, ca.key_file),
        middlewares=[faults.middleware],
        shutdown_timeout=shutdown_timeout,
    )
    hq = RunningHq(
        server, state_dir, state_dir / "hq.db", None if ca is None else ca.ca_file, faults
    )
    await server.start()
    try:
        yield hq
    finally:
        faults.clear()
        await server.stop()
