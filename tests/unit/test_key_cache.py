"""The qualifier's cache of leads' keys stays small whatever the lead rate: expired keys go
as they expire, and past its bound the oldest go (they are only fetched again)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from shared.keys import HttpKeySource


class KeyEndpoint:
    """Intake's `POST /v1/keys:batch` answer shape, counting the keys asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        ids = json.loads(body)["lead_ids"]
        self.asked += ids
        key = base64.urlsafe_b64encode(bytes(32)).decode()
        answer = {"keys": [{"lead_id": i, "kid": f"k-{i}", "key": key} for i in ids]}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def source(endpoint: KeyEndpoint, **kwargs: Any) -> HttpKeySource:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint), base_url="http://i")
    return HttpKeySource("http://i", "token", client=client, **kwargs)


async def test_a_cached_key_is_not_asked_for_again() -> None:
    endpoint = KeyEndpoint()
    keys = source(endpoint, ttl=60)
    assert set(await keys.fetch(["a", "b"])) == {"a", "b"}
    assert set(await keys.fetch(["a", "b", "c"])) == {"a", "b", "c"}
    assert endpoint.asked == ["a", "b", "c"]


async def test_the_cache_holds_at_most_its_bound() -> None:
    endpoint = KeyEndpoint()
    keys = source(endpoint, ttl=60, max_cached=100)
    for batch in range(50):
        await keys.fetch([f"{batch}-{i}" for i in range(10)])
    assert len(keys._cache) == 100
    # The newest are kept, the oldest fetched again.
    await keys.fetch(["49-9", "0-0"])
    assert endpoint.asked[-1] == "0-0" and endpoint.asked.count("49-9") == 1


async def test_expired_keys_leave_the_cache() -> None:
    endpoint = KeyEndpoint()
    keys = source(endpoint, ttl=0)
    await keys.fetch(["a", "b"])
    assert len(keys._cache) == 0
    await keys.fetch(["a"])
    assert endpoint.asked == ["a", "b", "a"]
