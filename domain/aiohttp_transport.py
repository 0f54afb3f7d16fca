"""An ``httpx2`` transport that sends its requests with aiohttp: the fast path's HTTP reader.

The ``openai`` client speaks ``httpx2``; its stock transport (httpcore over anyio) reads a
streamed reply in Python, ≈ 10 µs of CPU per socket read here. aiohttp parses HTTP in C
(llhttp) on asyncio's own protocol callbacks. This module puts aiohttp under the client through
``httpx2``'s public transport interface, so redirects, cookies, headers, decompression and the
client's timeouts stay ``httpx2``'s and the ``openai`` client's business.

Failures are raised as the stock transport raises them (``ConnectError``, ``ConnectTimeout``,
``ReadTimeout``, ``RemoteProtocolError``…), so a failed reply gets the same code on both paths
(``domain/runs/failures.py``; ``tests/test_models.py`` runs every failure on both).
``openai.DefaultAioHttpClient`` does the same job, but maps a refused connection, and a dropped
one mid-stream, to a timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx2

# Checked in order, the first match wins: aiohttp's timeouts are also connection errors, and
# its connector errors are also OS errors.
_MAPPED: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx2.ReadTimeout),
    (TimeoutError, httpx2.ReadTimeout),
    (aiohttp.InvalidURL, httpx2.UnsupportedProtocol),
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx2.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx2.ReadError),
    (aiohttp.ClientError, httpx2.NetworkError),
)

# Headers aiohttp would add on its own. ``httpx2`` has already written every header it means to
# send; adding none keeps the request the same as the stock transport's.
_NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@contextlib.contextmanager
def _as_httpx_errors(request: httpx2.Request) -> Iterator[None]:
    try:
        yield
    except httpx2.TransportError:
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        for source, target in _MAPPED:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__, request=request) from exc
        raise  # pragma: no cover - _MAPPED ends with both base classes


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """One aiohttp session (created at the first request, in the loop that serves it)."""

    def __init__(self, *, limits: httpx2.Limits, verify: bool = True) -> None:
        # The stock transport's certificate store, so both paths trust the same servers.
        self._ssl = httpx2.create_ssl_context(verify=verify)
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry,  # None: idle connections kept
                ssl=self._ssl,
            )
            # Cookies are the httpx2 client's: the session keeps none of its own.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                skip_auto_headers=_NOT_ADDED,
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        with _as_httpx_errors(request):
            response = await self._client().request(
                request.method,
                str(request.url),
                # A body read whole is sent with its length (aiohttp sets it), never chunked.
                headers=[(k, v) for k, v in request.headers.multi_items() if k.lower() != "transfer-encoding"],
                data=body or None,
                allow_redirects=False,  # the httpx2 client follows them
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _ResponseBody(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end gives its connection back to the pool; one left unread (a
        # stopped reply) closes it, so the provider sees the hang-up and stops generating.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
