"""Sans-I/O decoders of scanner framings: bytes in, `Frame`/`Reject` events out.

One module per framing (crlf, stx_etx, aim, magstripe) plus `auto`, which picks one per frame;
the contract and event types are in `base`. `make_decoder` is the one place a framing name
from configuration becomes a decoder.
"""

from __future__ import annotations

from typing import Final

from drivers.protocols.aim import AimDecoder
from drivers.protocols.auto import AutoDecoder
from drivers.protocols.base import (
    DEFAULT_GAP_S,
    FRAMING_REJECTS,
    MAX_FRAME,
    NEED_DATA,
    Decoder,
    Event,
    Frame,
    NeedData,
    Reject,
)
from drivers.protocols.crlf import CrlfDecoder
from drivers.protocols.magstripe import MagstripeDecoder
from drivers.protocols.stx_etx import StxEtxDecoder

FRAMINGS: Final = ("auto", "crlf", "stx-etx", "aim", "magstripe")
"""Framing names accepted in configuration and on command lines."""

__all__ = [
    "DEFAULT_GAP_S",
    "FRAMINGS",
    "FRAMING_REJECTS",
    "MAX_FRAME",
    "NEED_DATA",
    "Decoder",
    "Event",
    "Frame",
    "NeedData",
    "Reject",
    "make_decoder",
]


def make_decoder(
    framing: str, *, gap_s: float = DEFAULT_GAP_S, max_len: int = MAX_FRAME
) -> Decoder:
    """A fresh decoder for ``framing`` (one of FRAMINGS); ValueError for any other name."""
    if framing == "auto":
        return AutoDecoder(gap_s=gap_s, max_len=max_len)
    if framing == "crlf":
        return CrlfDecoder(gap_s=gap_s, max_len=max_len)
    if framing == "stx-etx":
        return StxEtxDecoder(gap_s=gap_s, max_len=max_len)
    if framing == "aim":
        return AimDecoder(gap_s=gap_s, max_len=max_len)
    if framing == "magstripe":
        return MagstripeDecoder(gap_s=gap_s, max_len=max_len)
    raise ValueError(f"unknown framing {framing!r}; expected one of {', '.join(FRAMINGS)}")
