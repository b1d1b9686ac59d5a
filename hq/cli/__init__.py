"""`cumulus-hq` (console script `hq.cli:main`; also `python -m hq.cli`)."""

from hq.cli.common import ExitStatus
from hq.cli.main import build_parser, main

__all__ = ["ExitStatus", "build_parser", "main"]
