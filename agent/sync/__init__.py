"""Sync to HQ: a sans-I/O policy (`policy`) and a thin aiohttp adapter (`client`)."""

from agent.sync.client import NotEnrolled, SyncClient, SyncError, SyncState, ssl_context
from agent.sync.policy import Answer, Outcome, Rejection, SyncPolicy, parse_retry_after

__all__ = [
    "Answer",
    "NotEnrolled",
    "Outcome",
    "Rejection",
    "SyncClient",
    "SyncError",
    "SyncPolicy",
    "SyncState",
    "parse_retry_after",
    "ssl_context",
]
