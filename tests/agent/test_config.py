"""Configuration: valid files load into typed objects; every bad file is refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config
from agent.config import ConfigError, PcscReaderConfig, SerialReaderConfig
from tests.conftest import CliRunner
from tests.factories import HQ_URL, HqKeyPair, write_config
from tests.fuzzing import scaled


def test_minimal_config_loads_with_defaults(agent_config: Path) -> None:
    cfg = config.load(agent_config)
    assert cfg.terminal.id == "0042-07"
    assert cfg.terminal.state_dir == agent_config.parent / "state"  # relative to the file
    assert cfg.readers == ()  # valid: cards then come from the POS
    assert cfg.cards.prefixes == ("2099",)
    assert cfg.prompt.timeout_s == 20.0
    assert cfg.api.host_port == ("127.0.0.1", 8765)
    assert cfg.retention.max_age_days == 30


def test_full_config_loads(tmp_path: Path, hq_keys: HqKeyPair) -> None:
    (tmp_path / "hq-ca.pem").write_text("x")
    (tmp_path / "pos-token").write_text("t")
    path = write_config(
        tmp_path,
        hq_keys,
        """
ca_file = "hq-ca.pem"

[[readers]]
kind = "serial"
port = "/dev/ttyUSB0"
baud = 115200
framing = "stx-etx"

[[readers]]
kind = "pcsc"
name = "ACS*"

[cards]
prefixes = ["2099", "2098"]

[prompt]
timeout_s = 15

[api]
listen = "127.0.0.1:9000"
token_file = "pos-token"

[retention]
max_age_days = 10

[outbox]
max_bytes = 1048576
""",
    )
    cfg = config.load(path)
    assert cfg.readers == (
        SerialReaderConfig("/dev/ttyUSB0", 115200, "stx-etx", "/dev/ttyUSB0"),
        PcscReaderConfig("ACS*"),
    )
    assert cfg.hq.ca_file == tmp_path / "hq-ca.pem"
    assert cfg.api.token_file == tmp_path / "pos-token"
    assert cfg.prompt.timeout_s == 15.0
    assert cfg.outbox.max_bytes == 1048576


BAD = [
    ("[terminal]\nstore='1'\n", "terminal.id: missing required key"),
    ("[terminal]\nid=7\nstore='1'\n", "terminal.id: expected str, got integer"),
    ("[terminal]\nid='a b'\nstore='1'\n", "terminal.id: 'a b' must match"),
    ("[terminal]\nid='t'\nstore='1'\ncolour='red'\n", "terminal.colour: unknown key"),
    ("[bogus]\n", "bogus: unknown key"),
    ("[terminal]\nid='t'\nstore='1'\n", "hq: missing required table"),
    ("HQ_URL='http://hq.example.ch'", "hq.url: http:// is only allowed for a loopback host"),
    ("HQ_URL='ftp://hq'", "hq.url: 'ftp://hq' must start with https://"),
    ("HQ_EXTRA='ca_file = \"nope.pem\"'", "hq.ca_file: file not found"),
    ("HQ_KEY='AAAA'", "hq.enc_public_key: x25519-sha256-chacha20poly1305 public key must be 32"),
    ("HQ_KEY='not base64!'", "hq.enc_public_key: not valid base64"),
    ("EXTRA='[[readers]]\nkind=\"usb\"'", "readers[0].kind: 'usb' is not 'serial' or 'pcsc'"),
    ("EXTRA='[[readers]]\nkind=\"serial\"'", "readers[0].port: missing required key"),
    (
        'EXTRA=\'[[readers]]\nkind="serial"\nport="/dev/x"\nbaud=true\'',
        "readers[0].baud: expected int, got boolean",
    ),
    (
        'EXTRA=\'[[readers]]\nkind="serial"\nport="/dev/x"\nframing="morse"\'',
        "readers[0].framing: 'morse' is not one of",
    ),
    ("EXTRA='[cards]\nprefixes=[2099]'", "cards.prefixes: 2099 is not a string of 1 to 12"),
    ("EXTRA='[prompt]\ntimeout_s=0'", "prompt.timeout_s: must be between 1 and 300"),
    ("EXTRA='[api]\nlisten=\"0.0.0.0:8765\"'", "api.listen: '0.0.0.0' is not a loopback"),
    ("EXTRA='[api]\ntoken_file=\"missing\"'", "api.token_file: file not found"),
    ("EXTRA='[retention]\nmax_age_days=9999'", "retention.max_age_days: must be between"),
    ("this is = not toml [", "invalid TOML"),
]


def _write(tmp_path: Path, hq: HqKeyPair, spec: str) -> Path:
    """Specs are raw TOML, or NAME='value' overrides applied to a valid file."""
    if spec.startswith(("HQ_", "EXTRA=")):
        name, _, value = spec.partition("=")
        value = value.strip("'")
        path = write_config(tmp_path, hq, value if name in ("EXTRA", "HQ_EXTRA") else "")
        text = path.read_text()
        if name == "HQ_URL":
            text = text.replace(HQ_URL, value)
        if name == "HQ_KEY":
            text = text.replace(hq.public_b64, value)
        path.write_text(text)
        return path
    path = tmp_path / "agent.toml"
    path.write_text(spec)
    return path


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_bad_config_is_refused_in_one_line_naming_file_and_key(
    tmp_path: Path, hq_keys: HqKeyPair, cli: CliRunner, spec: str, message: str
) -> None:
    path = _write(tmp_path, hq_keys, spec)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value)
    result = cli("outbox", "status", "--config", str(path))
    assert result.status == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and message in lines[0]


def test_unreadable_referenced_file_is_refused(tmp_path: Path, hq_keys: HqKeyPair) -> None:
    (tmp_path / "pos-token").mkdir()  # unreadable as a file, even for root
    path = write_config(tmp_path, hq_keys, '\n[api]\ntoken_file = "pos-token"\n')
    with pytest.raises(ConfigError, match="api.token_file: cannot read .*pos-token"):
        config.load(path)
    if os.geteuid() != 0:  # root reads any mode; the directory case above covers root
        (tmp_path / "pos-token").rmdir()
        (tmp_path / "pos-token").write_text("t")
        (tmp_path / "pos-token").chmod(0)
        with pytest.raises(ConfigError, match="api.token_file: not readable"):
            config.load(path)


def test_http_is_allowed_for_loopback(tmp_path: Path, hq_keys: HqKeyPair) -> None:
    path = write_config(tmp_path, hq_keys)
    for url in ("http://127.0.0.1:8443", "http://localhost", "http://[::1]:9"):
        path.write_text(path.read_text().replace(HQ_URL, url))
        assert config.load(path).hq.url == url
        path = write_config(tmp_path, hq_keys)


def test_missing_file_and_directory_are_refused(tmp_path: Path, cli: CliRunner) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)


def test_config_path_comes_from_flag_then_environment_then_default() -> None:
    assert config.config_path("x.toml", {"CUMULUS_AGENT_CONFIG": "y"}) == Path("x.toml")
    assert config.config_path(None, {"CUMULUS_AGENT_CONFIG": "y"}) == Path("y")
    assert config.config_path(None, {}) == Path("/etc/cumulus-agent/agent.toml")


def test_every_command_validates_config_run_included(tmp_path: Path, cli: CliRunner) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[terminal]\nid='t'\n")
    for argv in (
        ["run"],
        ["keys", "show"],
        ["keys", "init"],
        ["keys", "rotate"],
        ["outbox", "status"],
        ["audit", "verify"],
    ):
        r = cli(*argv, environ={"CUMULUS_AGENT_CONFIG": str(bad)})
        assert r.status == 78, argv
        assert "terminal.store: missing required key" in r.stderr


@settings(max_examples=scaled(200), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_arbitrary_text_is_either_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        config.load(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=scaled(200), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["id", "store", "state_dir", "x"]),
        st.one_of(
            st.integers(), st.text(max_size=8), st.booleans(), st.lists(st.integers(), max_size=2)
        ),
        max_size=4,
    )
)
def test_hostile_terminal_tables_never_crash(
    tmp_path: Path, hq_keys: HqKeyPair, table: dict[str, object]
) -> None:
    import json

    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    path = write_config(tmp_path, hq_keys)
    text = path.read_text().split("[hq]")[1]
    path.write_text(f"[terminal]\n{body}\n\n[hq]{text}")
    try:
        config.load(path)
    except ConfigError as exc:
        assert exc.key.startswith(("terminal", "")) and exc.problem
