"""`POST /v1/leads` answers alike whether its fast path or FastAPI's own handler takes a
request: the fast path serves the common lead and leaves every refusal to FastAPI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.intake import api
from tests.support import DEV_AUTH, lead_payload

JSON_AUTH = {**DEV_AUTH, "Content-Type": "application/json"}


def _raw(content: bytes, **headers: str) -> dict[str, Any]:
    return {"content": content, "headers": {**JSON_AUTH, **headers}}


def _lead(**overrides: Any) -> bytes:
    return json.dumps(lead_payload(**overrides)).encode()


# Each a request made afresh per call (new e-mails, so no run sees another's leads).
REQUESTS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("a lead", lambda: _raw(_lead())),
    ("a lead, charset named",
     lambda: _raw(_lead(), **{"Content-Type": "application/json; charset=utf-8"})),
    ("a lead of no form", lambda: _raw(_lead(source="api", form_id=None))),
    ("no token", lambda: {"content": _lead(), "headers": {"Content-Type": "application/json"}}),
    ("a wrong token", lambda: _raw(_lead(), Authorization="Bearer nope")),
    ("an empty bearer", lambda: _raw(_lead(), Authorization="Bearer ")),
    ("basic auth", lambda: _raw(_lead(), Authorization="Basic ZGV2OmRldg==")),
    ("a token without intake:write", lambda: _raw(_lead(), Authorization="Bearer bi-token")),
    ("text/plain", lambda: _raw(_lead(), **{"Content-Type": "text/plain"})),
    ("no content type", lambda: {"content": _lead(), "headers": DEV_AUTH}),
    ("malformed JSON", lambda: _raw(b'{"email": ')),
    ("empty body", lambda: _raw(b"")),
    ("a JSON array", lambda: _raw(b"[1, 2]")),
    ("not UTF-8", lambda: _raw(b'{"name": "\xff", "email": "a@b.example", "consent": true}')),
    ("nested too deep", lambda: _raw(b'{"fields": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")),
    ("a lone surrogate",
     lambda: _raw(b'{"name": "\\ud800", "email": "a@b.example", "consent": true}')),
    ("an unknown field", lambda: _raw(_lead(shoe_size=42))),
    ("consent false", lambda: _raw(_lead(consent=False))),
    ("a bad e-mail", lambda: _raw(_lead(email="anna@@acme"))),
    ("no e-mail, no phone", lambda: _raw(_lead(email=None))),
    ("a time in the future", lambda: _raw(_lead(occurred_at="2999-01-01T00:00:00Z"))),
    ("an empty Idempotency-Key", lambda: _raw(_lead(), **{"Idempotency-Key": ""})),
]  # fmt: skip


async def _answers(client: httpx.AsyncClient) -> list[tuple[str, int, dict[str, str], Any]]:
    answers = []
    for kind, request in REQUESTS:
        r = await client.post("/v1/leads", **request())
        body = r.json()
        if isinstance(body, dict) and "lead_id" in body:
            body = {**body, "lead_id": "(new)"}
        headers = {k: v for k, v in r.headers.items() if k != "content-length"}
        answers.append((kind, r.status_code, headers, body))
    return answers


async def test_the_fast_path_answers_as_fastapi_does(
    intake: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[bool] = []
    json_body = api.json_body

    async def watched(*args: Any, **kwargs: Any) -> bytes | None:
        body = await json_body(*args, **kwargs)
        taken.append(body is not None)
        return body

    monkeypatch.setattr(api, "json_body", watched)
    fast = await _answers(intake)

    async def declined(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(api, "json_body", declined)
    slow = await _answers(intake)
    assert fast == slow
    # It read the body of every JSON request with a writer's token and no Idempotency-Key.
    refused_unread = {"no token", "a wrong token", "an empty bearer", "basic auth",
                      "a token without intake:write", "text/plain", "no content type",
                      "an empty Idempotency-Key"}  # fmt: skip
    read = {kind for (kind, *_), t in zip(fast, taken, strict=True) if t}
    assert read == {kind for kind, _ in REQUESTS} - refused_unread
    assert [status for _, status, _, _ in fast[:3]] == [202, 202, 202]


async def test_a_lead_with_an_idempotency_key_is_fastapis(intake: httpx.AsyncClient) -> None:
    request = _raw(_lead(), **{"Idempotency-Key": "k-1"})
    first = await intake.post("/v1/leads", **request)
    again = await intake.post("/v1/leads", **request)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
