"""`POST /v1/leads` answers alike whether intake's front (before the middleware stack),
the route's fast path or FastAPI's own handler takes a request: the fast paths serve the
common lead and leave every refusal to FastAPI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.intake.hot_path.front import Front
from services.intake.sources import json_api
from shared.runtime import Runtime
from tests.support import DEV_AUTH, lead_payload

JSON_AUTH = {**DEV_AUTH, "Content-Type": "application/json"}


def _raw(content: bytes, **headers: str) -> dict[str, Any]:
    return {"content": content, "headers": {**JSON_AUTH, **headers}}


def _lead(**overrides: Any) -> bytes:
    return json.dumps(lead_payload(**overrides)).encode()


def _chunked(content: bytes) -> dict[str, Any]:
    """No Content-Length: the body comes in pieces, as a streaming client sends it."""

    async def pieces() -> Any:
        for i in range(0, len(content), 100):
            yield content[i : i + 100]

    return {"content": pieces(), "headers": JSON_AUTH}


# Each a request made afresh per call (new e-mails, so no run sees another's leads).
REQUESTS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("a lead", lambda: _raw(_lead())),
    (
        "a lead, charset named",
        lambda: _raw(_lead(), **{"Content-Type": "application/json; charset=utf-8"}),
    ),
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
    (
        "a lone surrogate",
        lambda: _raw(b'{"name": "\\ud800", "email": "a@b.example", "consent": true}'),
    ),
    ("an unknown field", lambda: _raw(_lead(shoe_size=42))),
    ("consent false", lambda: _raw(_lead(consent=False))),
    ("a bad e-mail", lambda: _raw(_lead(email="anna@@acme"))),
    ("no e-mail, no phone", lambda: _raw(_lead(email=None))),
    ("a time in the future", lambda: _raw(_lead(occurred_at="2999-01-01T00:00:00Z"))),
    ("an empty Idempotency-Key", lambda: _raw(_lead(), **{"Idempotency-Key": ""})),
    ("a lead in pieces", lambda: _chunked(_lead())),
    ("an Origin", lambda: _raw(_lead(), Origin="https://example.com")),
    ("over the size limit", lambda: _raw(_lead() + b" " * 70_000)),
    ("over the size limit, in pieces", lambda: _chunked(_lead() + b" " * 70_000)),
]


async def _answers(
    client: httpx.AsyncClient, reads: list[bool]
) -> list[tuple[str, int, dict[str, str], Any, bool]]:
    """Each request's answer, and whether a fast path read its body (`reads` is appended to
    by a watched `json_body`)."""
    answers = []
    for kind, request in REQUESTS:
        before = len(reads)
        r = await client.post("/v1/leads", **request())
        body = r.json()
        if isinstance(body, dict) and "lead_id" in body:
            body = {**body, "lead_id": "(new)"}
        headers = {k: v for k, v in r.headers.items() if k != "content-length"}
        answers.append((kind, r.status_code, headers, body, any(reads[before:])))
    return answers


def _watch_json_body(monkeypatch: pytest.MonkeyPatch, reads: list[bool]) -> None:
    json_body = json_api.json_body

    async def watched(*args: Any, **kwargs: Any) -> bytes | None:
        body = await json_body(*args, **kwargs)
        reads.append(body is not None)
        return body

    monkeypatch.setattr(json_api, "json_body", watched)


def _watch_front(monkeypatch: pytest.MonkeyPatch, answered: list[bool]) -> None:
    serve = Front.serve

    async def watched(*args: Any, **kwargs: Any) -> Any:
        declined = await serve(*args, **kwargs)
        answered.append(declined is None)
        return declined

    monkeypatch.setattr(Front, "serve", watched)


async def test_the_fast_path_answers_as_fastapi_does(
    intake: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[bool] = []
    _watch_json_body(monkeypatch, reads)
    by_front: list[bool] = []
    _watch_front(monkeypatch, by_front)
    fast = await _answers(intake, reads)
    # The route's fast path alone (the front takes nothing), then FastAPI alone.
    monkeypatch.setattr(Front, "_takes", staticmethod(lambda *args: False))
    route_only = await _answers(intake, reads)

    async def declined(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(json_api, "json_body", declined)
    slow = await _answers(intake, [])
    assert [a[:4] for a in fast] == [a[:4] for a in route_only] == [a[:4] for a in slow]
    # It read the body of every JSON request with a writer's token and no Idempotency-Key.
    refused_unread = {
        "no token",
        "a wrong token",
        "an empty bearer",
        "basic auth",
        "a token without intake:write",
        "text/plain",
        "no content type",
        "an empty Idempotency-Key",
        "over the size limit",
        "over the size limit, in pieces",
    }
    assert {kind for kind, *_, read in fast if read} == {
        kind for kind, _ in REQUESTS
    } - refused_unread
    assert [a[4] for a in fast] == [a[4] for a in route_only]
    accepted = {kind for kind, status, *_ in fast if status == 202}
    assert accepted == {
        "a lead",
        "a lead, charset named",
        "a lead of no form",
        "a lead in pieces",
        "an Origin",
    }
    # The front answered every lead accepted but the one with an Origin (CORS's to answer).
    answered = {kind for (kind, *_), by in zip(fast, by_front[: len(fast)], strict=True) if by}
    assert answered == accepted - {"an Origin"}


async def test_a_failure_in_the_front_is_answered_by_the_stack(
    intake: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("down"))

    monkeypatch.setattr(Runtime, "write_batched", unavailable)
    answers = []
    for front in (True, False):
        if not front:
            monkeypatch.setattr(Front, "_takes", staticmethod(lambda *args: False))
        r = await intake.post("/v1/leads", **_raw(_lead()))
        answers.append((r.status_code, dict(r.headers), r.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 503 and answers[0][1]["retry-after"] == "2"


async def test_a_lead_with_an_idempotency_key_is_fastapis(intake: httpx.AsyncClient) -> None:
    request = _raw(_lead(), **{"Idempotency-Key": "k-1"})
    first = await intake.post("/v1/leads", **request)
    again = await intake.post("/v1/leads", **request)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
