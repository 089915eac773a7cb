"""Sending one webhook attempt: where it may connect, how long it may take, what it keeps.

The client connects only to addresses `webhooks.address_allowed` accepts, checked after
resolving and then dialled as checked (`PinnedBackend`), so a name that resolves elsewhere
a moment later (DNS rebinding) cannot redirect it. An attempt lasts at most its total
time (a receiver dribbling bytes cannot hold it), reads at most `ANSWER_READ_LIMIT` bytes
of the answer, and comes back as an `Outcome` and a status code: nothing the receiver
said leaves this module.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx

from services.qualifier.config import QualifierSettings
from services.qualifier.partners.webhooks import (
    ANSWER_READ_LIMIT,
    IpAddress,
    Outcome,
    address_allowed,
    http_outcome,
)


class RefusedAddress(Exception):
    """The webhook's host is, or resolves to, an address webhooks may not go to."""


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check between resolving and connecting.

    It resolves the host itself, refuses the connection unless every address is allowed
    (one bad address of several is enough: the name is not a public partner's), and
    connects to a checked address, never to the name again. httpcore still gives TLS the
    host name (SNI, certificate check) and httpx still sends it as `Host`.
    """

    def __init__(self, *, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        if not all(address_allowed(a, allow_loopback=self._allow_loopback) for a in addresses):
            raise RefusedAddress(host)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _resolve(self, host: str, port: int, limit: float | None) -> list[IpAddress]:
        try:
            async with asyncio.timeout(limit):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolves to no address")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress(path)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def webhook_client(
    settings: QualifierSettings, *, tls: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The deliverer's HTTP client: pinned, checked connections; no redirects, no proxies
    from the environment (a proxy would resolve and connect where we cannot check).
    `tls`: the certificates trusted (default: certifi's, as httpx's)."""
    tls = tls or ssl.create_default_context(cafile=certifi.where())
    limits = httpx.Limits(max_connections=settings.partner_concurrency * 2)
    transport = httpx.AsyncHTTPTransport(verify=tls, trust_env=False, limits=limits)
    # httpx takes no network backend, so its connection pool is replaced by the same pool
    # on ours (the transport only forwards requests to `_pool`).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PinnedBackend(allow_loopback=settings.common.dev),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.partner_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
    )


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Sent(NamedTuple):
    outcome: Outcome
    status_code: int | None = None
    # Seconds the receiver asked us to wait (Retry-After of a 429 or 503), if it did.
    retry_after: float | None = None


def retry_after(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """A 429's or 503's Retry-After in seconds (delta-seconds or an HTTP date), else None."""
    value = response.headers.get("Retry-After")
    if response.status_code not in (429, 503) or value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def send(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    production: bool,
    total_seconds: float,
) -> Sent:
    """POST one attempt; its outcome and the status code, if an answer came."""
    if production and urlsplit(url).scheme != "https":
        return Sent("refused_scheme")
    try:
        # The whole attempt, not each read: a receiver sending a byte a second would
        # otherwise hold the deliverer for as long as it likes.
        async with asyncio.timeout(total_seconds):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= ANSWER_READ_LIMIT:
                        break  # leaving the block closes the connection, the rest unread
                code = response.status_code
                return Sent(http_outcome(code), code, retry_after(response))
    except RefusedAddress:
        return Sent("refused_address")
    except (TimeoutError, httpx.TimeoutException):
        return Sent("timeout")
    except httpx.HTTPError as exc:
        if _tls_failure(exc):
            return Sent("tls_error")
        if isinstance(exc, httpx.ConnectError):
            return Sent("connect_error")
        return Sent("protocol_error")
