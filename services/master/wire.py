"""master's HTTP client for the fan-out to sidecars (status polls, sync/gc triggers), on aiohttp.

Why aiohttp and not httpx: master calls hundreds of sidecars at once within one node timeout. On the
shared 2-core box, 400 status polls 256 at a time against 200 simulated nodes cost aiohttp 0.12-0.18 ms
of client CPU per request on reused connections (0.35 ms on new ones) vs httpx 15-18 ms (5-7 ms in
earlier bench/master_fanout runs): with httpx 400 concurrent polls cost more CPU than the whole
deadline and *every* poll timed out. Figures in docs/master.md.

One ``aiohttp.ClientSession`` per ``SidecarClient``, created lazily inside the running loop: at most
``limit`` connections at once (the poll concurrency), idle keep-alive connections reused for
``KEEPALIVE_SECONDS`` (below uvicorn's 5 s, so a reused connection is never one the sidecar just
closed), no proxies from the environment, no cookies, no redirects, and no timeout of its own: the
deadline is the caller's (``asyncio.wait_for``). A connection whose answer was not read to the end
(deadline, oversized body) is closed, never reused. Every failure becomes ``WireError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_LIMIT = 256
KEEPALIVE_SECONDS = 4.0
MAX_HEADER_FIELD = 64 * 1024
USER_AGENT = "modelfleet-master"
MAX_ERROR_CHARS = 200


class WireError(Exception):
    """The sidecar could not be reached or answered something that is not a usable HTTP answer."""


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class SidecarClient:
    """Requests to sidecars with the fleet token as Bearer, over one shared aiohttp session."""

    def __init__(self, *, token: str | None, max_body: int = DEFAULT_MAX_BODY, limit: int = DEFAULT_LIMIT) -> None:
        self.token = token
        self.max_body = max_body
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use (it binds to the running loop)."""
        if self._closed:
            raise WireError("client closed")
        if self._session is None:
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=KEEPALIVE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
                headers=headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                max_field_size=MAX_HEADER_FIELD,
            )
        return self._session

    async def request(self, method: str, url: str, *, json_body: bytes | None = None) -> WireResponse:
        """``method`` ``url`` with an empty body (or ``json_body``, already encoded); raises WireError (the
        caller sets the deadline)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError(f"unsupported URL {url!r}")
        session = self._get_session()
        try:
            headers = {"Content-Type": "application/json"} if json_body is not None else None
            async with session.request(method, url, data=json_body, headers=headers, allow_redirects=False) as response:
                try:
                    body = await self._read_body(response)
                except BaseException:
                    response.close()  # unread answer (oversized, cancelled): drop the connection
                    raise
                return WireResponse(
                    status=response.status,
                    headers={name.lower(): value for name, value in response.headers.items()},
                    body=body,
                )
        # Raised inside the request, TimeoutError is aiohttp's own; the caller's deadline arrives as
        # CancelledError here and becomes TimeoutError only in the caller's wait_for.
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise WireError(_describe(exc)) from exc

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, refused (WireError) when its declared or streamed size exceeds ``max_body``."""
        declared = response.content_length
        if declared is not None and declared > self.max_body:
            raise WireError(f"body of {declared} bytes refused (limit {self.max_body})")
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > self.max_body:
                raise WireError(f"body over {self.max_body} bytes refused (limit {self.max_body})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        """Close the session and its pooled connections; later requests raise WireError."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _describe(exc: BaseException) -> str:
    """One short line for logs and the cluster view: the error type and aiohttp's words."""
    detail = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    text = " ".join(f"{type(exc).__name__}: {detail}".split()) if detail else type(exc).__name__
    return text[:MAX_ERROR_CHARS]
