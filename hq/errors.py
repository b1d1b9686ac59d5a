"""Why HQ refuses a whole request: one exception type per HTTP status of envelope-v1.

Per-envelope failures are not exceptions (they are rejections in a 200 answer); these are
for requests HQ cannot take apart at all. Each carries a stable `code` (the first word of
the error text a terminal sees) and a detail a person can act on. The server turns them into
`{error: "<code>: <detail>"}` with `status`; nothing else in `hq` knows about HTTP.
"""

from __future__ import annotations


class Refused(Exception):
    """Base: the whole request is refused; nothing of it was stored."""

    status = 400
    code = "malformed"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


class Malformed(Refused):
    """400: the body is not a batch of envelopes HQ can take apart (with why)."""

    status = 400
    code = "malformed"


class Forbidden(Refused):
    """403: unknown terminal, or a signing key not registered for it (enrol it, then retry)."""

    status = 403
    code = "unknown-terminal"


class TooLarge(Refused):
    """413: over 4 MiB (on the wire or after gunzip) or over 1,000 envelopes: split the batch."""

    status = 413
    code = "too-large"


class UnsupportedMedia(Refused):
    """415: not `application/cbor`, or a content coding other than gzip."""

    status = 415
    code = "unsupported-media-type"


class Unavailable(Exception):
    """503: storage cannot take the batch right now (disk, lock, busy); retry after a pause."""

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
