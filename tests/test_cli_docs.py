"""Every command answers --help, every --json command prints JSON, and the README documents
every command (the newcomer's contract)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.cli.main import build_parser
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                nested = commands(sub, path)
                out += nested or [(path, sub)]
    return out


ALL = commands(build_parser())


def has_json(p: argparse.ArgumentParser) -> bool:
    return any("--json" in a.option_strings for a in p._actions)


def test_the_command_list_is_what_interfaces_md_names() -> None:
    names = {" ".join(c) for c, _ in ALL}
    assert {
        "run",
        "demo",
        "diag",
        "readers list",
        "readers watch",
        "outbox status",
        "sync",
        "keys init",
        "keys show",
        "keys rotate",
        "audit verify",
        "support-bundle",
    } <= names


def test_every_command_answers_help(cli: CliRunner) -> None:
    for path, _ in ALL:
        r = cli(*path, "--help")
        assert r.status == 0, path
        assert "usage: cumulus-agent" in r.stdout, path


def test_every_json_command_prints_json(cli: CliRunner, agent_config: Path) -> None:
    env = {"CUMULUS_AGENT_CONFIG": str(agent_config)}
    assert cli("keys", "init", environ=env).status == 0
    ran = []
    for path, parser in ALL:
        if not has_json(parser) or path in (
            ("keys", "init"),
            ("keys", "rotate"),
            ("readers", "watch"),
        ):
            continue
        r = cli(*path, "--json", environ=env)
        assert r.stdout.strip(), (path, r.stderr)
        for line in r.stdout.strip().splitlines():
            json.loads(line)
        ran.append(path)
    assert ("diag",) in ran and ("outbox", "status") in ran and ("sync",) in ran


def test_readme_documents_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(p) for p, _ in ALL if f"cumulus-agent {' '.join(p)}" not in readme]
    assert not missing, f"README lacks: {missing}"
    for cmd in (
        "cumulus-hq keys init",
        "cumulus-hq enroll",
        "cumulus-hq serve",
        "cumulus-hq export",
        "cumulus-stub serial",
    ):
        assert cmd in readme, cmd
    assert "make test" in readme and "make demo" in readme
