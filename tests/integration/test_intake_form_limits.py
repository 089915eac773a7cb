"""Public form rate limits over HTTP, from many client addresses: IPv6 clients counted by
their /64, server posts limited per address too, and only stored posts charging the form."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from services.intake.config import IntakeSettings
from services.intake.main import create_app
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.integration.test_intake_support import LOCALHOST, count
from tests.support import DEV_AUTH

SUBMIT = "/v1/forms/contact-us/submissions"
SERVER_KEY = "tilda-key-" + "k" * 20


@contextlib.asynccontextmanager
async def intake_app(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[FastAPI]:
    """Intake (dev mode: the demo form exists) with its lifespan running."""
    await asyncio.to_thread(migrate, "intake", database_url)
    settings = IntakeSettings(
        database_url=database_url,
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap),
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


class Clients:
    """HTTP clients of one app, each posting from its own address."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._open: list[httpx.AsyncClient] = []

    def at(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 50123))
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        self._open.append(client)
        return client

    async def close(self) -> None:
        for client in self._open:
            await client.aclose()


@contextlib.asynccontextmanager
async def clients_of(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Clients]:
    async with intake_app(database_url, kafka_bootstrap, tmp_path, **overrides) as app:
        clients = Clients(app)
        try:
            yield clients
        finally:
            await clients.close()


def person(**overrides: str) -> dict[str, str]:
    values = {
        "name": "Анна Петрова",
        "email": f"anna.{uuid.uuid4().hex[:10]}@acme-corp.example",
        "consent": "on",
        "website": "",
    }
    values.update(overrides)
    return values


def addresses(n: int) -> Iterator[str]:
    """`n` IPv4 addresses, each a client of its own."""
    for i in range(n):
        yield f"198.51.{100 + i // 250}.{1 + i % 250}"


async def post_from(
    clients: Clients,
    address: str,
    *,
    data: dict[str, str] | None = None,
    key: str | None = None,
) -> int:
    """A browser's post from an allowed origin, or a server's with `key`: the status."""
    r = await clients.at(address).post(
        SUBMIT,
        data=data or person(),
        params={"key": key} if key else None,
        headers={} if key else LOCALHOST,
    )
    return r.status_code


class TestPerAddress:
    async def test_ipv6_clients_are_counted_by_their_64(
        self, database_url: str, kafka_bootstrap: str, tmp_path: Path
    ) -> None:
        async with clients_of(
            database_url, kafka_bootstrap, tmp_path, form_ip_burst=1, form_ip_rate_per_minute=1
        ) as clients:
            assert await post_from(clients, "2001:db8:1:2::1") == 202
            # Another address of the same /64 is the same client.
            assert await post_from(clients, "2001:db8:1:2:ffff:ffff:ffff:fffe") == 429
            # The next /64 is another client.
            assert await post_from(clients, "2001:db8:1:3::1") == 202
            # An IPv4 client written as IPv6 (a dual-stack socket) is its IPv4 address.
            assert await post_from(clients, "203.0.113.7") == 202
            assert await post_from(clients, "::ffff:203.0.113.7") == 429
        assert await count(database_url) == 3

    async def test_server_posts_with_the_form_key_are_limited_per_address_too(
        self, database_url: str, kafka_bootstrap: str, tmp_path: Path
    ) -> None:
        async with clients_of(
            database_url, kafka_bootstrap, tmp_path, form_ip_burst=2, form_ip_rate_per_minute=1
        ) as clients:
            admin = clients.at("127.0.0.1")
            r = await admin.put(
                "/v1/forms/contact-us",
                json={
                    "allowed_origins": ["http://localhost"],
                    "honeypot_field": "website",
                    "server_key": SERVER_KEY,
                },
                headers=DEV_AUTH,
            )
            assert r.status_code == 200, r.text
            keyed = [await post_from(clients, "192.0.2.10", key=SERVER_KEY) for _ in range(3)]
            assert keyed == [202, 202, 429]
            # A made-up key is no way around the limit either (it would be a 403).
            assert await post_from(clients, "192.0.2.10", key="guess") == 429
            # Another server has its own bucket.
            assert await post_from(clients, "192.0.2.11", key=SERVER_KEY) == 202
        assert await count(database_url) == 3


class TestPerForm:
    async def test_bots_and_broken_posts_from_many_addresses_do_not_lock_visitors_out(
        self, database_url: str, kafka_bootstrap: str, tmp_path: Path
    ) -> None:
        async with clients_of(
            database_url, kafka_bootstrap, tmp_path, form_burst=3, form_rate_per_minute=1
        ) as clients:
            too_fast = str(int(time.time() * 1000))
            refused = [
                person(website="http://spam.example"),  # the honeypot: answered as a person
                person(email="not an e-mail"),
                person(consent=""),
                person(rendered_at=too_fast),
            ]
            answers = [
                await post_from(clients, address, data=refused[i % len(refused)])
                for i, address in enumerate(addresses(40))
            ]
            assert answers == [202, 422, 422, 422] * 10
            # A visitor still gets through: the form's bucket is untouched.
            assert await post_from(clients, "203.0.113.99") == 202
            # Stored posts do charge it: two more people fill it, the next waits.
            later = ["203.0.113.100", "203.0.113.101", "203.0.113.102"]
            assert [await post_from(clients, a) for a in later] == [202, 202, 429]
        # The bots' valid-looking posts are kept (flagged, never anyone's first): 10 of them.
        assert await count(database_url) == 13

    async def test_refused_posts_still_take_from_their_address_s_bucket(
        self, database_url: str, kafka_bootstrap: str, tmp_path: Path
    ) -> None:
        async with clients_of(
            database_url, kafka_bootstrap, tmp_path, form_ip_burst=2, form_ip_rate_per_minute=1
        ) as clients:
            bad = person(email="not an e-mail")
            answers = [await post_from(clients, "192.0.2.50", data=bad) for _ in range(3)]
            assert answers == [422, 422, 429]
            assert await post_from(clients, "192.0.2.50") == 429
