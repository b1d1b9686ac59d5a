"""Health checks for technicians, levels as UnifiedPOS checkHealth.

Each check returns a `Finding`: ✓ ok, ⚠ warn or ✗ fail, one line of what was found and one
line of what to do. Internal checks change nothing (the database is opened read-only);
external checks also talk to the world (readers, pcscd, HQ). No check ever shows a card
number or a basket: the outbox holds only ciphertext, and findings speak of counts and ages.
"""

from __future__ import annotations

import enum
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from agent import audit
from agent import keys as keys_mod
from agent.config import Config, PcscReaderConfig, SerialReaderConfig
from agent.outbox import DB_NAME, connect, read_status

AGE_WARN_S = 3600.0  # an hour of envelopes waiting: HQ or the uplink needs a look
AGE_FAIL_S = 86400.0  # a day: purchases are piling up at the edge
DISK_WARN_FREE = 512 * 1024 * 1024
DISK_FAIL_FREE = 64 * 1024 * 1024
SKEW_WARN_S = 60.0
CERT_WARN_DAYS = 30


class Status(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def mark(self) -> str:
        return {0: "✓", 1: "⚠", 2: "✗"}[self.value]


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    finding: str
    remedy: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status.name.lower(),
            "finding": self.finding,
            "remedy": self.remedy,
        }


def ok(check: str, finding: str) -> Finding:
    return Finding(check, Status.OK, finding)


def warn(check: str, finding: str, remedy: str) -> Finding:
    return Finding(check, Status.WARN, finding, remedy)


def fail(check: str, finding: str, remedy: str) -> Finding:
    return Finding(check, Status.FAIL, finding, remedy)


# --- internal ---------------------------------------------------------------------------------


def check_key(config: Config) -> Finding:
    try:
        key = keys_mod.load(config.terminal.state_dir)
    except keys_mod.KeyMissing:
        return fail("signing key", "no signing key", "cumulus-agent keys init, then enrol it at HQ")
    except keys_mod.UnsafePermissions as exc:
        path = keys_mod.key_dir(config.terminal.state_dir) / "signing.key"
        return fail("signing key", str(exc).split(";")[0], f"chmod 600 {path}")
    except keys_mod.KeyCorrupt as exc:
        return fail("signing key", str(exc), "restore the key from backup or rotate it")
    return ok("signing key", f"present, mode 0600, sig_kid {key.sig_kid}")


def check_quarantine(config: Config) -> Finding:
    from agent.outbox.recovery import quarantined

    found = quarantined(config.terminal.state_dir)
    if not found:
        return ok("quarantine", "no damaged database set aside")
    last = found[-1]
    return warn(
        "quarantine",
        f"{len(found)} damaged database(s) set aside, last: {last['dir']} ({last['reason']})",
        "the agent runs on a new stream; send 'cumulus-agent support-bundle' and the "
        "quarantine folder to support (its unsent envelopes may be salvaged)",
    )


def _open_ro(config: Config) -> sqlite3.Connection | None:
    path = config.terminal.state_dir / DB_NAME
    return connect(path, readonly=True) if path.exists() else None


def check_database(config: Config) -> list[Finding]:
    """Integrity, outbox depth and age, dead letters, audit chain: all read-only."""
    try:
        conn = _open_ro(config)
    except sqlite3.Error as exc:
        return [
            fail(
                "database",
                f"cannot open: {exc}",
                "see 'cumulus-agent diag' docs: "
                "restore from the last good copy; the stream then restarts",
            )
        ]
    if conn is None:
        return [
            warn(
                "database",
                "no outbox yet",
                "start the agent (systemctl start cumulus-agent) or run 'cumulus-agent keys init'",
            )
        ]
    out: list[Finding] = []
    try:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            return [
                fail(
                    "database",
                    f"integrity check failed: {result}",
                    "stop the agent, keep a copy of the state dir, contact support",
                )
            ]
        out.append(ok("database", "integrity ok (PRAGMA quick_check)"))
        st = read_status(conn, config.outbox.max_bytes)
        out.append(
            _outbox_finding(
                st.waiting, st.oldest_waiting_ts, st.unsent_bytes, config.outbox.max_bytes
            )
        )
        if st.dead_letters:
            out.append(
                warn(
                    "dead letters",
                    f"{st.dead_letters} envelope(s) rejected by HQ "
                    "for good (bridged, not blocking)",
                    "report to HQ operations with 'cumulus-agent support-bundle'",
                )
            )
        else:
            out.append(ok("dead letters", "none"))
        report = audit.verify(conn)
        if report.ok:
            out.append(ok("audit log", f"{report.rows} rows, chain intact"))
        else:
            first = report.problems[0]
            out.append(
                fail(
                    "audit log",
                    f"{len(report.problems)} problem(s), first: "
                    f"row {first.row_id}: {first.problem}",
                    "the log was altered: keep the state dir as evidence, "
                    "inform the data-protection officer",
                )
            )
    except sqlite3.Error as exc:
        out.append(fail("database", f"read failed: {exc}", "stop the agent and contact support"))
    finally:
        conn.close()
    return out


def _outbox_finding(waiting: int, oldest_ts: int | None, used: int, cap: int) -> Finding:
    age = 0.0 if oldest_ts is None else max(0.0, time.time() - oldest_ts)
    text = f"{waiting} envelope(s) waiting, oldest {_age(age)}, {used / cap:.0%} of the cap"
    remedy = "check the uplink and 'cumulus-agent diag --level external' (HQ reachable?)"
    if age >= AGE_FAIL_S or used > 0.9 * cap:
        return fail("outbox", text, remedy)
    if age >= AGE_WARN_S or used > 0.5 * cap:
        return warn("outbox", text, remedy)
    return ok("outbox", text)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_disk(config: Config) -> Finding:
    path = config.terminal.state_dir
    probe = path if path.exists() else path.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return fail("disk", f"cannot stat {probe}: {exc.strerror}", "check the state dir mount")
    text = f"{free / 2**20:,.0f} MiB free under {probe}"
    if free < DISK_FAIL_FREE:
        return fail("disk", text, "free disk space: recording stops when the disk is full")
    if free < DISK_WARN_FREE:
        return warn("disk", text, "free disk space soon")
    return ok("disk", text)


def check_daemon(live: Mapping[str, Any] | None, systemd_state: str | None) -> Finding:
    unit = f" (systemd: {systemd_state})" if systemd_state else ""
    if live is None:
        return warn(
            "daemon",
            f"not running or not answering on its socket{unit}",
            "systemctl start cumulus-agent; journalctl -u cumulus-agent -n 50",
        )
    return ok("daemon", f"running: {live.get('status', '?')}{unit}")


def systemd_state(unit: str = "cumulus-agent.service") -> str | None:
    if shutil.which("systemctl") is None or not os.path.isdir("/run/systemd/system"):
        return None
    out = subprocess.run(
        ["systemctl", "is-active", unit], capture_output=True, text=True, check=False, timeout=5
    )
    return out.stdout.strip() or None


# --- external ---------------------------------------------------------------------------------


def check_serial(reader: SerialReaderConfig, live: Mapping[str, Any] | None) -> Finding:
    name = f"reader {reader.name}"
    stats = (live or {}).get("readers", {}).get(reader.name)
    if stats is not None:
        state = stats.get("state")
        text = f"{state}, {stats.get('good_reads')} reads, {stats.get('reconnects')} reconnects"
        if state == "online":
            return ok(name, text)
        return fail(
            name,
            f"{text}: {stats.get('error_text') or 'device absent'}",
            f"plug the scanner in / check the cable; ls -l {reader.port}",
        )
    if not os.path.exists(reader.port):
        return fail(
            name,
            f"serial port {reader.port} is missing",
            "plug the scanner in (USB) and check 'cumulus-agent readers list'",
        )
    try:
        import serial

        with serial.Serial(reader.port, reader.baud, timeout=0, exclusive=True):
            pass
    except (OSError, ValueError) as exc:
        return fail(
            name,
            f"cannot open {reader.port}: {exc}",
            "is the agent user in group dialout? is another program using the port?",
        )
    return ok(name, f"{reader.port} opens")


def check_pcsc(reader: PcscReaderConfig, list_names: Callable[[], list[str]]) -> Finding:
    name = f"reader pcsc:{reader.name}"
    try:
        names = list_names()
    except Exception as exc:
        return fail(
            name, f"pcscd is not reachable: {exc}", "pcscd is not running: systemctl start pcscd"
        )
    import fnmatch

    matches = [n for n in names if fnmatch.fnmatchcase(n, reader.name)]
    if not matches:
        return fail(
            name,
            f"no PC/SC reader matches {reader.name!r} ({len(names)} present)",
            "plug the contactless reader in; 'cumulus-agent readers list'",
        )
    return ok(name, f"{len(matches)} reader(s): {', '.join(matches)}")


def check_hq(config: Config, timeout: float = 5.0) -> list[Finding]:
    """TLS handshake with the pinned CA, certificate expiry, and clock skew from `Date`."""
    url = urlsplit(config.hq.url)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return [
            fail(
                "HQ",
                f"{host}:{port} unreachable: {exc.strerror or exc}",
                "check the uplink / firewall; the outbox keeps everything meanwhile",
            )
        ]
    out: list[Finding] = []
    try:
        sock: socket.socket = raw
        if url.scheme == "https":
            ctx = ssl.create_default_context(
                cafile=str(config.hq.ca_file) if config.hq.ca_file else None
            )
            try:
                sock = ctx.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                return [
                    fail(
                        "HQ",
                        f"certificate not trusted: {exc.verify_message}",
                        "check hq.ca_file: HQ's certificate must chain to the pinned CA",
                    )
                ]
            except (ssl.SSLError, OSError) as exc:
                return [fail("HQ", f"TLS handshake failed: {exc}", "check HQ's TLS setup")]
            out.append(_cert_finding(sock.getpeercert()))
        sock.settimeout(timeout)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(4096).decode("latin-1")
        out.append(ok("HQ", f"{host}:{port} answers ({head.split(chr(13))[0]})"))
        out.append(_skew_finding(head))
    except OSError as exc:
        out.append(fail("HQ", f"no answer: {exc}", "check HQ; the outbox keeps everything"))
    finally:
        raw.close()
    return out


def _cert_finding(cert: Mapping[str, Any] | None) -> Finding:
    if not cert or "notAfter" not in cert:
        return warn("HQ certificate", "no expiry date seen", "check HQ's certificate")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    days = (expires - datetime.now(UTC)).days
    text = f"valid until {expires:%Y-%m-%d} ({days} days)"
    if days < CERT_WARN_DAYS:
        return warn("HQ certificate", text, "renew HQ's certificate before it expires")
    return ok("HQ certificate", text)


def _skew_finding(head: str) -> Finding:
    for line in head.split("\r\n"):
        if line.lower().startswith("date:"):
            try:
                hq = parsedate_to_datetime(line[5:].strip()).timestamp()
            except (TypeError, ValueError):
                break
            skew = hq - time.time()
            text = f"clock differs from HQ by {skew:+.0f} s"
            if abs(skew) > SKEW_WARN_S:
                return warn("clock", text, "check NTP: timedatectl status")
            return ok("clock", text)
    return warn("clock", "HQ sent no Date header", "cannot compare clocks")
