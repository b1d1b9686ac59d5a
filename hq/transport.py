"""The body rules of `POST /v1/envelopes`, sans-I/O: media type, gzip with a cap, the array.

Why a hand-written reader for the outer array instead of `cbor2.loads`: the body comes from
anyone who can reach the port, before any signature is checked. The batch format is tiny (one
array of byte strings), so a 60-line reader can refuse everything else with a precise reason,
never builds objects it does not need (no tags, no floats, no nesting), and stops counting at
1,001 elements without reading them. Each element is the exact envelope as sealed and is
decoded strictly later, by `agent.envelope`.

Limits (envelope-v1, Transport): at most 4 MiB, counted on the wire AND after gunzip (a
small gzip body can inflate to gigabytes: decompression stops one byte past the cap), and at
most 1,000 envelopes. Both are `TooLarge` (413): the terminal answers by splitting its batch.
"""

from __future__ import annotations

import zlib

from hq.errors import Malformed, TooLarge, UnsupportedMedia

MAX_BODY = 4 * 1024 * 1024
MAX_ENVELOPES = 1000
CBOR_MEDIA_TYPE = "application/cbor"

_MAJOR_NAMES = (
    "an unsigned integer",
    "a negative integer",
    "a byte string",
    "a text string",
    "an array",
    "a map",
    "a tag",
    "a simple value or float",
)
_BREAK = 0xFF


def check_content_type(value: str | None) -> None:
    """Accept `application/cbor` (parameters ignored, case-insensitive); else 415."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != CBOR_MEDIA_TYPE:
        shown = media or "none"
        raise UnsupportedMedia(f"Content-Type must be {CBOR_MEDIA_TYPE}, got {shown}")


def is_gzipped(content_encoding: str | None) -> bool:
    """True for `gzip`, False for none/identity; any other coding is 415."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return False
    if coding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMedia(f"Content-Encoding {coding!r} is not supported (only gzip)")


def gunzip_limited(data: bytes, limit: int = MAX_BODY) -> bytes:
    """Decompress a gzip body (one or more members) but never past `limit` bytes of output.

    `zlib` is asked for at most `limit + 1 - produced` bytes at a time, so a bomb costs at
    most `limit + 1` bytes of memory before it is refused.
    """
    if not data:
        raise Malformed("Content-Encoding is gzip but the body is empty")
    out = bytearray()
    member = data
    while member:
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer required
        pending = member
        while True:
            try:
                out += inflater.decompress(pending, limit + 1 - len(out))
            except zlib.error as exc:
                raise Malformed(f"body is not valid gzip: {exc}") from None
            if len(out) > limit:
                raise TooLarge(f"body inflates to more than {limit} bytes")
            pending = inflater.unconsumed_tail
            if inflater.eof or not pending:
                break
        if not inflater.eof:
            raise Malformed("gzip body is truncated")
        member = inflater.unused_data
    return bytes(out)


def _head(body: bytes, pos: int) -> tuple[int, int | None, int]:
    """Read one CBOR initial byte and its argument: (major type, argument or None if
    indefinite, position after the head)."""
    if pos >= len(body):
        raise Malformed("truncated CBOR")
    initial = body[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info == 31:
        return major, None, pos
    if info > 27:
        raise Malformed(f"invalid CBOR (reserved additional information {info})")
    size = 1 << (info - 24)
    if pos + size > len(body):
        raise Malformed("truncated CBOR")
    return major, int.from_bytes(body[pos : pos + size], "big"), pos + size


def parse_batch(body: bytes, max_envelopes: int = MAX_ENVELOPES) -> list[bytes]:
    """Split the body into the envelopes' exact bytes: a CBOR array of byte strings.

    The array may be definite or indefinite; each element must be a definite-length byte
    string (an envelope is deterministic CBOR, and its bytes are what was signed).
    """
    if not body:
        raise Malformed("empty body: expected a CBOR array of byte strings")
    major, count, pos = _head(body, 0)
    if major != 4:
        raise Malformed(f"expected a CBOR array of byte strings, got {_MAJOR_NAMES[major]}")
    if count is not None and count > max_envelopes:
        raise TooLarge(f"{count} envelopes in one batch; at most {max_envelopes}")
    elements: list[bytes] = []
    while count is None or len(elements) < count:
        if count is None and pos < len(body) and body[pos] == _BREAK:
            pos += 1
            break
        if len(elements) == max_envelopes:
            raise TooLarge(f"more than {max_envelopes} envelopes in one batch")
        index = len(elements)
        major, length, pos = _head(body, pos)
        if major != 2:
            raise Malformed(f"element {index} is {_MAJOR_NAMES[major]}, not a byte string")
        if length is None:
            raise Malformed(f"element {index} is an indefinite-length byte string")
        if pos + length > len(body):
            raise Malformed(f"element {index} is truncated")
        elements.append(body[pos : pos + length])
        pos += length
    if pos != len(body):
        raise Malformed(f"{len(body) - pos} trailing bytes after the array")
    if not elements:
        raise Malformed("empty batch: no envelopes")
    return elements
