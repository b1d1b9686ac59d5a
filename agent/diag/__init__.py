"""Technician diagnostics: checks by level, each with a finding and a remedy."""

from agent.diag.run import Level, run_checks

__all__ = ["Level", "run_checks"]
