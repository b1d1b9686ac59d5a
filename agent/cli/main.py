"""`cumulus-agent`: the terminal's commands, thin wrappers over the library the daemon uses.

Every command validates `--config` the same way (EX_CONFIG, 78, on a bad file); data goes to
stdout, diagnostics to stderr; `--json` gives machines a stable shape.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence

from agent.cli import (
    audit_cmd,
    bundle_cmd,
    demo_cmd,
    diag_cmd,
    keys_cmd,
    outbox_cmd,
    readers_cmd,
    run_cmd,
    sync_cmd,
)
from agent.cli.env import Environment, ExitStatus, exit_status_for

Handler = Callable[[argparse.Namespace, Environment], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so in-process callers get a status back."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="agent.toml (default: $CUMULUS_AGENT_CONFIG or /etc/cumulus-agent/agent.toml)",
    )
    parser = _Parser(prog="cumulus-agent", description="Cumulus agent on a checkout terminal.")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    run_cmd.register(sub, common)
    keys_cmd.register(sub, common)
    outbox_cmd.register(sub, common)
    audit_cmd.register(sub, common)
    demo_cmd.register(sub, common)
    sync_cmd.register(sub, common)
    readers_cmd.register(sub, common)
    diag_cmd.register(sub, common)
    bundle_cmd.register(sub, common)
    return parser


def run(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one command in-process and return its exit status (never raises)."""
    env = env or Environment()
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(env.stdout):  # --help goes to the given stream
            args = parser.parse_args(argv)
    except _UsageError as exc:
        env.err(str(exc))
        return ExitStatus.USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        return handler(args, env)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            return int(exc.code or 0)
        status, message = exit_status_for(exc)
        env.err(f"cumulus-agent: {message}")
        return int(status)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
