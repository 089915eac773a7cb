"""Where partner webhooks may go and what they keep of an answer: no loopback, private or
link-local address in production (refused before any connection), https only there, a
bounded read and a bounded attempt, and nothing a receiver says stored or shown.

Receivers are raw servers on loopback; every connection and name lookup the process makes
during an attempt is recorded through Python's audit hooks, so a refusal is shown to
happen before anything is sent anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.qualifier.deliveries import repository
from services.qualifier.deliveries.deliverer import Deliverer
from services.qualifier.partners.sender import PartnerSender
from services.qualifier.partners.transport import webhook_client
from services.qualifier.tables import deliveries
from shared.auth import Scope
from shared.db import utcnow
from shared.settings import CommonSettings, Mode
from tests.fixtures.qualifier.harness import (
    UNREACHABLE_KAFKA,
    Harness,
    definition_text,
    qualifier_app,
    token,
)

SECRET = "webstudio-shared-secret-0123456789"
ADMIN, ADMIN_AUTH = token("admin", Scope.definitions_admin, Scope.leads_read)
# What a receiver must never get stored: it stands for whatever an internal service answers.
LEAKED = b"AKIA-INTERNAL-SECRET-7f3e"

# Network calls the process makes while `_SEEN` is a list: ("connect", address) and
# ("lookup", host). An audit hook cannot be removed, so it is added once and stays idle.
_SEEN: list[tuple[str, Any]] | None = None
_HOOKED = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen = _SEEN
    if seen is None:
        return
    if event == "socket.connect":
        seen.append(("connect", args[1]))
    elif event == "socket.getaddrinfo":
        seen.append(("lookup", args[0]))


@contextlib.contextmanager
def watching_the_network() -> Iterator[list[tuple[str, Any]]]:
    global _SEEN, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _SEEN = []
    try:
        yield _SEEN
    finally:
        _SEEN = None


def _loopback(address: Any) -> bool:
    try:
        return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def connections(seen: list[tuple[str, Any]]) -> list[Any]:
    return [address for kind, address in seen if kind == "connect"]


# Receivers -------------------------------------------------------------------------------

Respond = Callable[["Receiver", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Receiver:
    """A raw HTTP/1.1 server on loopback that reads one request and answers by `respond`."""

    respond: Respond
    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    written: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    server_names: list[str | None] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.heads.append(head)
            await self.respond(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            self.hung_up.set()
        finally:
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.written += len(data)


@contextlib.asynccontextmanager
async def receiving(
    respond: Respond, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Receiver]:
    receiver = Receiver(respond)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: receiver.server_names.append(name)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await receiver.handle(reader, writer)

    server = await asyncio.start_server(handle, host, 0, ssl=tls)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def answer(status: int, body: bytes) -> Respond:
    async def respond(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
        head += "Content-Type: text/plain\r\n\r\n"
        await receiver.write(writer, head.encode() + body)

    return respond


async def endless(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
    """200, then a chunked body that never ends, full of what must not be kept."""
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = (LEAKED + b" ") * 2048
    while True:
        await receiver.write(writer, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")


async def dribble(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
    """A status line, then a header one byte at a time: each read gets something."""
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        await receiver.write(writer, b"a")
        await asyncio.sleep(0.1)


# The qualifier ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def qualifier(
    database_url: str,
    tmp_path: Path,
    *,
    production: bool,
    log_level: str = "INFO",
    **overrides: Any,
) -> AsyncIterator[Harness]:
    common = CommonSettings(
        mode=Mode.production if production else Mode.dev,
        data_dir=tmp_path,
        kafka_bootstrap_servers=UNREACHABLE_KAFKA,
        auth_tokens=[ADMIN],
        log_level=log_level,
    )
    async with qualifier_app(
        database_url,
        tmp_path,
        common=common,
        partner_secrets={"webstudio": SECRET},
        partner_timeout_seconds=overrides.pop("partner_timeout_seconds", 5.0),
        **overrides,
    ) as q:
        q.http.headers.update(ADMIN_AUTH)
        yield q


@pytest.fixture
async def prod(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier(database_url, tmp_path, production=True) as q:
        yield q


@pytest.fixture
async def dev(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier(database_url, tmp_path, production=False) as q:
        yield q


async def owe(q: Harness, url: str) -> str:
    """A delivery of a (made-up) routing to `url`, due now; its id."""
    delivery_id = str(uuid.uuid4())
    async with q.runtime.engine.begin() as conn:
        row = repository.delivery_row(
            delivery_id=delivery_id,
            lead_id=str(uuid.uuid4()),
            target_id="webstudio",
            event_id=str(uuid.uuid4()),
            url=url,
            payload=b'{"type":"lead.routed"}',
            now=utcnow(),
        )
        await repository.insert_deliveries(conn, [row])
    return delivery_id


async def attempt(q: Harness, tls: ssl.SSLContext | None = None) -> None:
    """One pass of the real deliverer over what is due."""
    async with webhook_client(q.settings, tls=tls) as client:
        attempted = await asyncio.wait_for(
            Deliverer(q.settings, {"partner": PartnerSender(q.settings, client)}).deliver_due(
                q.runtime.engine
            ),
            60,
        )
    assert attempted == 1


async def row(q: Harness, delivery_id: str) -> Any:
    (found,) = await q.rows(deliveries, deliveries.c.id == delivery_id)
    return found


def hooked(url: str) -> str:
    return definition_text(
        ("    regions: [RU, KZ, BY]", f"    regions: [RU, KZ, BY]\n    webhook_url: {url}")
    )


class TestProductionRefuses:
    @pytest.mark.parametrize(
        ("host", "listen"),
        [
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("localhost", "127.0.0.1"),
            ("10.20.30.40", None),
            ("169.254.169.254", None),
            ("[::ffff:169.254.169.254]", None),
        ],
    )
    async def test_non_public_addresses_before_connecting(
        self, prod: Harness, host: str, listen: str | None
    ) -> None:
        async with receiving(answer(200, b"ok"), host=listen or "127.0.0.1") as receiver:
            port = receiver.port if listen else 443
            delivery_id = await owe(prod, f"https://{host}:{port}/latest/meta-data/")
            with watching_the_network() as seen:
                await attempt(prod)
        found = await row(prod, delivery_id)
        assert (found.status, found.last_outcome) == ("failed", "refused_address")
        assert found.attempts == 1 and found.last_status_code is None
        assert "public addresses only" in found.last_error
        assert receiver.connections == 0
        # Nothing but the database on loopback: no connection to the webhook's address.
        assert all(_loopback(a) for a in connections(seen)), connections(seen)
        assert not [a for a in connections(seen) if a[1] == port]

    async def test_plain_http(self, prod: Harness) -> None:
        delivery_id = await owe(prod, "http://partner.example/leads")
        with watching_the_network() as seen:
            await attempt(prod)
        found = await row(prod, delivery_id)
        assert (found.status, found.last_outcome) == ("failed", "refused_scheme")
        assert ("lookup", "partner.example") not in seen
        assert all(_loopback(a) for a in connections(seen))

    async def test_publishing_a_webhook_it_would_refuse(self, prod: Harness) -> None:
        for url in (
            "http://partner.example/leads",
            "https://10.0.0.7/leads",
            "https://169.254.169.254/latest",
            "https://localhost:8443/leads",
        ):
            r = await prod.http.post(
                "/v1/definitions", content=hooked(url), headers={"Content-Type": "application/yaml"}
            )
            assert r.status_code == 201, r.text
            r = await prod.http.post(f"/v1/definitions/{r.json()['version']}/publish")
            assert r.status_code == 422, url
            (problem,) = r.json()["detail"]
            assert "'webstudio'" in problem["msg"] and problem["type"] == "unsafe_webhook"
            assert problem["loc"][-1] == "webhook_url"
        r = await prod.http.post(
            "/v1/definitions",
            content=hooked("https://partner.example/l"),
            headers={"Content-Type": "application/yaml"},
        )
        r = await prod.http.post(f"/v1/definitions/{r.json()['version']}/publish")
        assert r.status_code == 200, r.text


class TestDevMode:
    async def test_allows_loopback_but_not_the_metadata_service(self, dev: Harness) -> None:
        r = await dev.http.post(
            "/v1/definitions",
            content=hooked("http://169.254.169.254/x"),
            headers={"Content-Type": "application/yaml"},
        )
        r = await dev.http.post(f"/v1/definitions/{r.json()['version']}/publish")
        assert r.status_code == 422 and "webstudio" in r.text
        delivery_id = await owe(dev, "http://169.254.169.254/latest/meta-data/")
        with watching_the_network() as seen:
            await attempt(dev)
        assert (await row(dev, delivery_id)).last_outcome == "refused_address"
        assert all(_loopback(a) for a in connections(seen))


class TestWhatIsKeptOfAnAnswer:
    async def test_a_refusal_is_kept_as_its_status_never_its_body(self, dev: Harness) -> None:
        body = LEAKED + b" " + b"x" * 1_000_000
        async with receiving(answer(400, body)) as receiver:
            delivery_id = await owe(dev, f"http://127.0.0.1:{receiver.port}/hook")
            await attempt(dev)
        found = await row(dev, delivery_id)
        assert (found.status, found.last_status_code) == ("failed", 400)
        assert (found.last_outcome, found.last_error) == ("http_4xx", "HTTP 400")
        listed = await dev.http.get("/v1/partners/deliveries")
        assert listed.status_code == 200 and delivery_id in listed.text
        assert LEAKED.decode() not in listed.text
        one = await dev.http.get(f"/v1/partners/deliveries/{delivery_id}")
        assert LEAKED.decode() not in one.text

    async def test_an_endless_answer_is_read_only_in_part(self, dev: Harness) -> None:
        async with receiving(endless) as receiver:
            delivery_id = await owe(dev, f"http://127.0.0.1:{receiver.port}/hook")
            await attempt(dev)
            # The deliverer hung up: the receiver's writes fail once the buffers are full.
            await asyncio.wait_for(receiver.hung_up.wait(), 30)
        found = await row(dev, delivery_id)
        assert (found.status, found.last_outcome) == ("delivered", "http_2xx")
        assert receiver.written < 64 * 1024 * 1024  # what the sockets' buffers took, at most

    async def test_a_dribbling_answer_is_cut_at_the_attempts_time(
        self, database_url: str, tmp_path: Path
    ) -> None:
        async with (
            qualifier(database_url, tmp_path, production=False, partner_timeout_seconds=1) as q,
            receiving(dribble) as receiver,
        ):
            delivery_id = await owe(q, f"http://127.0.0.1:{receiver.port}/hook")
            started = time.monotonic()
            await attempt(q)
            took = time.monotonic() - started
        found = await row(q, delivery_id)
        assert (found.status, found.last_outcome) == ("pending", "timeout")  # retried later
        assert found.last_status_code is None
        # Each read got a byte in time; only the attempt's own limit (1 s) ended it.
        assert took < 15


class TestWhatIsLoggedOfAnAnswer:
    async def test_only_its_status_and_outcome_even_at_debug_level(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A receiver's reason phrase, headers and body are its own words, whatever it puts
        there (a person's e-mail): no log line repeats them, not even httpx's request line
        (it quotes the reason phrase) or httpcore's trace (the headers)."""
        said = b"anna.petrova@private.example"

        async def respond(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
            body = b"no customer " + said
            head = b"HTTP/1.1 400 Unknown " + said + b"\r\nX-Customer: " + said + b"\r\n"
            head += f"Content-Length: {len(body)}\r\n\r\n".encode()
            await receiver.write(writer, head + body)

        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        root = logging.getLogger()
        level, keep = root.level, Keep()
        root.addHandler(keep)
        try:
            async with (
                qualifier(database_url, tmp_path, production=False, log_level="DEBUG") as q,
                receiving(respond) as receiver,
            ):
                delivery_id = await owe(q, f"http://127.0.0.1:{receiver.port}/hook")
                await attempt(q)
                assert (await row(q, delivery_id)).last_outcome == "http_4xx"
        finally:
            root.removeHandler(keep)
            root.setLevel(level)
        logged = "\n".join(logging.Formatter().format(r) for r in records)
        assert said.decode() not in logged
        parked = (
            f"delivery {delivery_id} (partner) to webstudio parked after 1 attempt(s): "
            "http_4xx (HTTP 400)"
        )
        assert parked in [r.getMessage() for r in records]


@pytest.fixture(scope="module")
def localhost_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    here = tmp_path_factory.mktemp("tls")
    cert, key = here / "cert.pem", here / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class TestPinnedConnections:
    async def test_the_checked_address_is_dialled_with_the_name_kept_for_tls_and_host(
        self, dev: Harness, localhost_cert: tuple[Path, Path]
    ) -> None:
        cert, key = localhost_cert
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        trusting = ssl.create_default_context(cafile=str(cert))
        async with receiving(answer(204, b""), tls=server_tls) as receiver:
            delivery_id = await owe(dev, f"https://localhost:{receiver.port}/hook")
            with watching_the_network() as seen:
                await attempt(dev, tls=trusting)
        assert (await row(dev, delivery_id)).last_outcome == "http_2xx"
        assert receiver.server_names == ["localhost"]  # SNI: the name, not the address
        assert f"host: localhost:{receiver.port}" in receiver.heads[0].decode().lower()
        # One lookup of the name, then a connection to the address it gave.
        assert ("lookup", "localhost") in seen
        assert (("127.0.0.1", receiver.port) in connections(seen)) or any(
            a[0] == "::1" and a[1] == receiver.port for a in connections(seen)
        )

    async def test_a_certificate_for_another_name_is_a_tls_error(
        self, dev: Harness, localhost_cert: tuple[Path, Path]
    ) -> None:
        cert, key = localhost_cert
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        trusting = ssl.create_default_context(cafile=str(cert))
        async with receiving(answer(204, b""), tls=server_tls) as receiver:
            delivery_id = await owe(dev, f"https://127.0.0.1:{receiver.port}/hook")
            await attempt(dev, tls=trusting)
        found = await row(dev, delivery_id)
        assert (found.status, found.last_outcome) == ("pending", "tls_error")
        assert receiver.heads == []
