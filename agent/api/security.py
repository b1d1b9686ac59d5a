"""Who may call the local API: Host check (DNS rebinding), POS bearer token, page tokens.

- Every request's `Host` must be a loopback name of ours (127.0.0.1, localhost, [::1], with our
  port or none): a web page on the internet that rebinds its name to 127.0.0.1 still sends
  its own name as Host, and gets 421.
- POS calls carry `Authorization: Bearer <token>` from `api.token_file` (401 otherwise).
- The cashier page gets a fresh random token inside the HTML it is served; its calls send it
  (header `X-Page-Token`, or `?token=` for EventSource) and must be same-origin: a browser
  always sends `Origin` on a cross-origin POST, and `Sec-Fetch-Site` when it knows (403).
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import OrderedDict
from pathlib import Path

from aiohttp import web

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
PAGE_TOKEN_HEADER = "X-Page-Token"  # noqa: S105 - a header name, not a secret


def allowed_hosts(port: int | None) -> frozenset[str]:
    names = set(LOOPBACK_HOSTS)
    if port is not None:
        names |= {f"{h}:{port}" for h in LOOPBACK_HOSTS}
    return frozenset(names)


def load_pos_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text().strip()
    return token or None


class PageTokens:
    """Per-page tokens: made when the page is served, kept for a day, at most 64 at once."""

    def __init__(self, ttl_s: float = 86400.0, limit: int = 64) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._tokens: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.ttl_s
        while len(self._tokens) > self.limit:
            self._tokens.popitem(last=False)
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        expiry = self._tokens.get(token)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._tokens[token]
            return False
        return True


class Guard:
    """The checks, as functions over a request, raising the right HTTP error."""

    def __init__(self, hosts: frozenset[str], pos_token: str | None, pages: PageTokens) -> None:
        self.hosts = hosts
        self.pos_token = pos_token
        self.pages = pages

    def check_host(self, request: web.Request) -> None:
        host = request.headers.get("Host", "")
        if host.lower() not in self.hosts:
            raise _error(
                web.HTTPMisdirectedRequest,
                f"Host {host!r} is not this agent (only loopback names are served)",
            )

    def is_pos(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or self.pos_token is None:
            return False
        return hmac.compare_digest(auth[7:].strip().encode(), self.pos_token.encode())

    def require_pos(self, request: web.Request) -> None:
        if self.is_pos(request):
            return
        if self.pos_token is None:
            raise _error(web.HTTPUnauthorized, "no POS token is configured (api.token_file)")
        raise _error(web.HTTPUnauthorized, "missing or wrong bearer token")

    def require_page_or_pos(self, request: web.Request) -> str:
        """Return "pos" or "cashier" (who made the call), or raise 401/403."""
        if self.is_pos(request):
            return "pos"
        token = request.headers.get(PAGE_TOKEN_HEADER) or request.query.get("token")
        if token is None and "Authorization" in request.headers:
            raise _error(web.HTTPUnauthorized, "missing or wrong bearer token")
        if not self.pages.valid(token):
            raise _error(web.HTTPForbidden, "missing or expired page token: reload the page")
        self._same_origin(request)
        return "cashier"

    def _same_origin(self, request: web.Request) -> None:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise _error(web.HTTPForbidden, f"cross-origin call refused (Sec-Fetch-Site {site})")
        origin = request.headers.get("Origin")
        if origin is not None:
            expected = f"http://{request.headers.get('Host', '')}".lower()
            if origin.lower() != expected:
                raise _error(web.HTTPForbidden, f"cross-origin call refused (Origin {origin})")


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json")
