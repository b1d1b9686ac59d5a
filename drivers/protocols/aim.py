"""aim: a crlf line that begins with an AIM symbology identifier (ISO/IEC 15424).

Wire format::

    ] code modifier payload CR|LF|CRLF        e.g.  ]E0 2099123456782 CR LF

``]`` is the flag character, ``code`` a letter naming the symbology and ``modifier`` a letter
or digit refining it. Common ones: ``]E0`` EAN-13/UPC-A, ``]E4`` EAN-8, ``]C0`` Code 128,
``]A0`` Code 39, ``]I0`` ITF, ``]Q1`` QR Code, ``]d1`` Data Matrix. The identifier is kept in
the read (`Frame.symbology`) and is not part of the payload. A line without a valid
identifier is ``Reject("bad-aim-id")``; everything else behaves as `crlf`.
"""

from __future__ import annotations

from drivers.protocols.base import DEFAULT_GAP_S, MAX_FRAME, Event, Frame, MachineDecoder, Reject
from drivers.protocols.crlf import LineMachine

AIM_FLAG = 0x5D  # ']'

_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _LETTERS | frozenset(b"0123456789")


def split_aim(data: bytes) -> tuple[str, bytes] | None:
    """(identifier, rest) when ``data`` begins with a valid ]cm identifier, else None."""
    if len(data) >= 3 and data[0] == AIM_FLAG and data[1] in _LETTERS and data[2] in _ALNUM:
        return data[:3].decode("ascii"), data[3:]
    return None


def aim_line(data: bytes) -> Event:
    """A terminated line of the aim framing: the identifier is required."""
    parsed = split_aim(data)
    if parsed is None:
        return Reject("bad-aim-id")
    symbology, payload = parsed
    return Frame(payload, framing="aim", symbology=symbology) if payload else Reject("empty")


def line_with_optional_aim(data: bytes) -> Event:
    """A terminated line seen by `auto`: an identifier is used when the line starts with ]."""
    return aim_line(data) if data[:1] == b"]" else Frame(data, framing="crlf")


class AimDecoder(MachineDecoder):
    """Decoder for the aim framing."""

    def __init__(
        self,
        *,
        gap_s: float = DEFAULT_GAP_S,
        max_len: int = MAX_FRAME,
        unterminated_ok: bool = False,
    ) -> None:
        super().__init__(
            lambda sink: LineMachine(
                sink, max_len, finish=aim_line, unterminated_ok=unterminated_ok
            ),
            gap_s,
        )
