"""The agent's configuration: TOML in, frozen typed objects out, or one clear line of refusal.

Why so strict: a checkout runs unattended for years; a typo that silently falls back to a
default (say, an HQ URL over plain http, or a reader that is never opened) would go unnoticed
until an auditor asks. So an unknown key, a wrong type, a missing required key, an unsafe URL
or an unreadable referenced file refuses the whole file, naming file, key and problem;
nothing starts half-configured. Relative paths are relative to the file.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from agent.envelope.errors import KeyFormatError
from agent.envelope.suites import SUITE_NAMES, X25519_SUITE, load_public_key

DEFAULT_CONFIG = Path("/etc/cumulus-agent/agent.toml")
CONFIG_ENV = "CUMULUS_AGENT_CONFIG"
FRAMINGS = ("auto", "crlf", "stx-etx", "aim", "magstripe")
TERMINAL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

T = TypeVar("T")


class ConfigError(Exception):
    """A refused configuration: `str()` is the one line shown to the operator."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = " ".join(problem.split())  # always one line, whatever the parser said
        problem = self.problem
        super().__init__(f"{self.file}: {key}: {problem}" if key else f"{self.file}: {problem}")


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    id: str
    store: str
    state_dir: Path


@dataclass(frozen=True, slots=True)
class SerialReaderConfig:
    port: str
    baud: int = 9600
    framing: str = "auto"
    name: str = ""
    kind: Literal["serial"] = "serial"


@dataclass(frozen=True, slots=True)
class PcscReaderConfig:
    name: str = "*"
    kind: Literal["pcsc"] = "pcsc"


ReaderConfig = SerialReaderConfig | PcscReaderConfig


@dataclass(frozen=True, slots=True)
class CardsConfig:
    prefixes: tuple[str, ...] = ("2099",)


@dataclass(frozen=True, slots=True)
class PromptConfig:
    timeout_s: float = 20.0
    lang: str = "de"


@dataclass(frozen=True, slots=True)
class HqConfig:
    url: str
    enc_kid: str
    enc_public_key: bytes = field(repr=False)
    enc_suite: str = X25519_SUITE
    ca_file: Path | None = None
    keyset_public_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8765"
    token_file: Path | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    max_age_days: int = 30


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    terminal: TerminalConfig
    hq: HqConfig
    readers: tuple[ReaderConfig, ...] = ()
    cards: CardsConfig = CardsConfig()
    prompt: PromptConfig = PromptConfig()
    api: ApiConfig = ApiConfig()
    retention: RetentionConfig = RetentionConfig()
    outbox: OutboxConfig = OutboxConfig()


def config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """`--config`, else `$CUMULUS_AGENT_CONFIG`, else the system default."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate `path`; raise `ConfigError` on the first problem."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    return _Parser(path).config(data)


class _Parser:
    """Walks the TOML tables with the current key path, so every error can name it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def table(
        self, data: Mapping[str, Any], key: str, allowed: set[str], *, required: bool = False
    ) -> dict[str, Any]:
        if required and key not in data:
            raise self.fail(key, "missing required table")
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_tname(value)}")
        self.no_unknown(value, key, allowed)
        return value

    def no_unknown(self, value: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for k in value:
            if k not in allowed:
                raise self.fail(f"{prefix}.{k}" if prefix else k, "unknown key")

    def get(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        kind: type[T],
        default: T | None = None,
        *,
        required: bool = False,
    ) -> T:
        name = f"{prefix}.{key}"
        if key not in table:
            if required or default is None:
                raise self.fail(name, "missing required key")
            return default
        value = table[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.fail(name, f"expected {kind.__name__}, got {_tname(value)}")
        return value  # type: ignore[no-any-return]

    def check(self, ok: bool, key: str, problem: str) -> None:
        if not ok:
            raise self.fail(key, problem)

    def readable_file(self, table: Mapping[str, Any], prefix: str, key: str) -> Path | None:
        if key not in table:
            return None
        raw = self.get(table, prefix, key, str)
        p = Path(raw)
        p = p if p.is_absolute() else self.base / p
        try:
            with p.open("rb"):
                pass
        except FileNotFoundError:
            raise self.fail(f"{prefix}.{key}", f"file not found: {p}") from None
        except PermissionError:
            raise self.fail(f"{prefix}.{key}", f"not readable: {p}") from None
        except OSError as exc:
            raise self.fail(f"{prefix}.{key}", f"cannot read {p}: {exc.strerror}") from None
        return p

    def config(self, data: dict[str, Any]) -> Config:
        self.no_unknown(
            data,
            "",
            {"terminal", "readers", "cards", "prompt", "hq", "api", "retention", "outbox"},
        )
        return Config(
            path=self.path,
            terminal=self.terminal(data),
            hq=self.hq(data),
            readers=self.readers(data),
            cards=self.cards(data),
            prompt=self.prompt(data),
            api=self.api(data),
            retention=self.retention(data),
            outbox=self.outbox(data),
        )

    def terminal(self, data: Mapping[str, Any]) -> TerminalConfig:
        t = self.table(data, "terminal", {"id", "store", "state_dir"}, required=True)
        tid = self.get(t, "terminal", "id", str, required=True)
        self.check(
            bool(TERMINAL_RE.fullmatch(tid)),
            "terminal.id",
            f"{tid!r} must match [A-Za-z0-9._-]{{1,64}}",
        )
        store = self.get(t, "terminal", "store", str, required=True)
        self.check(0 < len(store) <= 64, "terminal.store", "must be 1 to 64 characters")
        state = Path(self.get(t, "terminal", "state_dir", str, "/var/lib/cumulus-agent"))
        return TerminalConfig(tid, store, state if state.is_absolute() else self.base / state)

    def readers(self, data: Mapping[str, Any]) -> tuple[ReaderConfig, ...]:
        raw = data.get("readers", [])
        if not isinstance(raw, list):
            raise self.fail("readers", "expected an array of tables ([[readers]])")
        out: list[ReaderConfig] = []
        for n, r in enumerate(raw):
            prefix = f"readers[{n}]"
            if not isinstance(r, dict):
                raise self.fail(prefix, f"expected a table, got {_tname(r)}")
            kind = self.get(r, prefix, "kind", str, required=True)
            if kind == "serial":
                self.no_unknown(r, prefix, {"kind", "port", "baud", "framing", "name"})
                port = self.get(r, prefix, "port", str, required=True)
                baud = self.get(r, prefix, "baud", int, 9600)
                self.check(50 <= baud <= 4_000_000, f"{prefix}.baud", f"{baud} is not a baud rate")
                framing = self.get(r, prefix, "framing", str, "auto")
                self.check(
                    framing in FRAMINGS,
                    f"{prefix}.framing",
                    f"{framing!r} is not one of {', '.join(FRAMINGS)}",
                )
                name = self.get(r, prefix, "name", str, port)
                out.append(SerialReaderConfig(port=port, baud=baud, framing=framing, name=name))
            elif kind == "pcsc":
                self.no_unknown(r, prefix, {"kind", "name"})
                out.append(PcscReaderConfig(name=self.get(r, prefix, "name", str, "*")))
            else:
                raise self.fail(f"{prefix}.kind", f"{kind!r} is not 'serial' or 'pcsc'")
        return tuple(out)

    def cards(self, data: Mapping[str, Any]) -> CardsConfig:
        c = self.table(data, "cards", {"prefixes"})
        prefixes = self.get(c, "cards", "prefixes", list, ["2099"])
        self.check(bool(prefixes), "cards.prefixes", "must list at least one prefix")
        for p in prefixes:
            self.check(
                isinstance(p, str) and p.isascii() and p.isdigit() and 1 <= len(p) <= 12,
                "cards.prefixes",
                f"{p!r} is not a string of 1 to 12 digits",
            )
        return CardsConfig(tuple(prefixes))

    def prompt(self, data: Mapping[str, Any]) -> PromptConfig:
        p = self.table(data, "prompt", {"timeout_s", "lang"})
        timeout = self.get(p, "prompt", "timeout_s", float, 20.0)
        self.check(1.0 <= timeout <= 300.0, "prompt.timeout_s", "must be between 1 and 300")
        lang = self.get(p, "prompt", "lang", str, "de")
        self.check(lang in ("de", "fr", "it", "en"), "prompt.lang", "must be de, fr, it or en")
        return PromptConfig(timeout, lang)

    def hq(self, data: Mapping[str, Any]) -> HqConfig:
        h = self.table(
            data,
            "hq",
            {"url", "ca_file", "enc_kid", "enc_suite", "enc_public_key", "keyset_public_key"},
            required=True,
        )
        url = self.get(h, "hq", "url", str, required=True)
        self.check_url(url)
        kid = self.get(h, "hq", "enc_kid", str, required=True)
        self.check(
            0 < len(kid) <= 64 and kid.isprintable() and " " not in kid,
            "hq.enc_kid",
            "must be 1 to 64 printable characters without spaces",
        )
        suite_name = self.get(h, "hq", "enc_suite", str, X25519_SUITE)
        self.check(
            suite_name in SUITE_NAMES,
            "hq.enc_suite",
            f"{suite_name!r} is not one of {', '.join(SUITE_NAMES)}",
        )
        b64 = self.get(h, "hq", "enc_public_key", str, required=True)
        try:
            raw = base64.b64decode(b64, validate=True)
            load_public_key(suite_name, raw)
        except (binascii.Error, ValueError) as exc:
            problem = str(exc) if isinstance(exc, KeyFormatError) else "not valid base64"
            raise self.fail("hq.enc_public_key", problem) from None
        ca = self.readable_file(h, "hq", "ca_file")
        pin = None
        if "keyset_public_key" in h:
            try:
                pin = base64.b64decode(self.get(h, "hq", "keyset_public_key", str), validate=True)
            except binascii.Error:
                raise self.fail("hq.keyset_public_key", "not valid base64") from None
            self.check(
                len(pin) == 32,
                "hq.keyset_public_key",
                "must be a raw Ed25519 public key (32 bytes, base64)",
            )
        return HqConfig(
            url=url,
            enc_kid=kid,
            enc_public_key=raw,
            enc_suite=suite_name,
            ca_file=ca,
            keyset_public_key=pin,
        )

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        self.check(parts.scheme in ("https", "http"), "hq.url", f"{url!r} must start with https://")
        self.check(bool(parts.hostname), "hq.url", f"{url!r} has no host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise self.fail("hq.url", f"{url!r} has an invalid port") from None
        if parts.scheme == "http":
            self.check(
                _is_loopback(parts.hostname or ""),
                "hq.url",
                f"http:// is only allowed for a loopback host, got {parts.hostname!r}; "
                "use https://",
            )

    def api(self, data: Mapping[str, Any]) -> ApiConfig:
        a = self.table(data, "api", {"listen", "token_file"})
        listen = self.get(a, "api", "listen", str, "127.0.0.1:8765")
        host, sep, port = listen.rpartition(":")
        self.check(
            bool(sep) and port.isdigit() and 0 < int(port) < 65536,
            "api.listen",
            f"{listen!r} must be HOST:PORT",
        )
        self.check(
            _is_loopback(host.strip("[]")),
            "api.listen",
            f"{host!r} is not a loopback address; the local API never leaves the box",
        )
        return ApiConfig(listen=listen, token_file=self.readable_file(a, "api", "token_file"))

    def retention(self, data: Mapping[str, Any]) -> RetentionConfig:
        r = self.table(data, "retention", {"max_age_days"})
        days = self.get(r, "retention", "max_age_days", int, 30)
        self.check(
            1 <= days <= 5 * 366,
            "retention.max_age_days",
            "must be between 1 and 1830 (purchase data is kept at most 5 years)",
        )
        return RetentionConfig(days)

    def outbox(self, data: Mapping[str, Any]) -> OutboxConfig:
        o = self.table(data, "outbox", {"max_bytes"})
        cap = self.get(o, "outbox", "max_bytes", int, 256 * 1024 * 1024)
        self.check(cap >= 64 * 1024, "outbox.max_bytes", "must be at least 65536")
        return OutboxConfig(cap)


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tname(value: object) -> str:
    names: dict[type, str] = {
        str: "string",
        int: "integer",
        float: "float",
        bool: "boolean",
        list: "array",
        dict: "table",
    }
    return names.get(type(value), type(value).__name__)
