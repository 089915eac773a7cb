"""The bad-input battery: every kind of bad request is a clear 4xx naming the problem.

Never a 5xx, and nothing half-written: after each refusal there is no lead and no
outbox row. Where a request is partly good (a batch, a CSV) the good part is stored
and published, which the tests check on the real topic.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.intake.tables import leads, outbox
from tests.integration.test_intake_support import (
    LOCALHOST,
    count,
    published,
    running_intake,
    zoom_headers,
)
from tests.support import DEV_AUTH, lead_payload

JSON_AUTH = {**DEV_AUTH, "Content-Type": "application/json"}


@pytest.fixture
async def intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    # The battery posts many forms from one address: the rate limits have their own tests.
    async with running_intake(
        database_url, kafka_bootstrap, tmp_path, form_ip_burst=1000, form_burst=1000
    ) as client:
        yield client


@dataclass
class Case:
    """One kind of bad input: the request, and the status and `loc` it must be answered with."""

    kind: str
    path: str
    status: int
    loc: list[str | int]
    method: str = "POST"
    kw: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)


def _json(body: Any, **headers: str) -> dict[str, Any]:
    return {"json": body, "headers": {**DEV_AUTH, **headers}}


def _raw(content: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": content, "headers": {**DEV_AUTH, "Content-Type": content_type}}


def _form(data: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    body = {"name": "Anna", "email": "anna@acme.example", "consent": "on", **(data or {})}
    return {"data": body, "headers": {**LOCALHOST, **kw.pop("headers", {})}, **kw}


def _signed(body: bytes) -> Callable[[], dict[str, Any]]:
    """Signed when sent: Zoom refuses timestamps over 5 minutes old, and the suite is long."""
    return lambda: {"content": body, "headers": zoom_headers(body)}


def _nested(depth: int) -> bytes:
    return (
        b'{"email": "a@b.example", "consent": true, "fields": {"a": '
        + (b"[" * depth + b"]" * depth)
        + b"}}"
    )


LEADS = "/v1/leads"
FORM = "/v1/forms/contact-us/submissions"
IMPORT = "/v1/webinars/webinar-demo/attendees:import"
CSV_HEADER = b"email,name\n"

CASES = [
    # JSON API: the body itself
    Case("malformed JSON", LEADS, 422, ["body"], kw=_raw(b'{"email": ')),
    Case("JSON array, not an object", LEADS, 422, ["body"], kw=_json([1, 2])),
    Case("JSON string, not an object", LEADS, 422, ["body"], kw=_raw(b'"hello"')),
    Case("empty body", LEADS, 422, ["body"], kw=_raw(b"")),
    Case("body over 64 KB", LEADS, 413, ["body"], kw=_json(lead_payload(message="x" * 70_000))),
    Case("JSON nested 20 000 deep", LEADS, 422, ["body"], kw=_raw(_nested(20_000))),
    Case("object where text belongs", LEADS, 422, ["body", "fields", "a"],
         kw=_json(lead_payload(fields={"a": {"b": "c"}}))),
    Case("text/plain body", LEADS, 415, ["header", "Content-Type"],
         kw=_raw(json.dumps(lead_payload()).encode(), "text/plain")),
    Case("form body to the JSON API", LEADS, 415, ["header", "Content-Type"],
         kw={"data": {"email": "a@b.example"}, "headers": DEV_AUTH}),
    Case("bytes that are not UTF-8", LEADS, 422, ["body"],
         kw=_raw(b'{"name": "\xff\xfe", "email": "a@b.example", "consent": true}')),
    Case("invalid Content-Length", LEADS, 400, ["body"],
         kw={"content": b"{}", "headers": {**JSON_AUTH, "Content-Length": "lots"}}),
    # JSON API: fields
    Case("unknown field", LEADS, 422, ["body", "shoe_size"], kw=_json(lead_payload(shoe_size=42))),
    Case("unknown UTM key", LEADS, 422, ["body", "utm", "gclid"],
         kw=_json(lead_payload(utm={"gclid": "x"}))),
    Case("budget is not a number", LEADS, 422, ["body", "budget"],
         kw=_json(lead_payload(budget="lots"))),
    Case("negative budget", LEADS, 422, ["body", "budget"], kw=_json(lead_payload(budget=-5))),
    Case("services is not a list", LEADS, 422, ["body", "services"],
         kw=_json(lead_payload(services="seo"))),
    Case("51 services", LEADS, 422, ["body", "services"],
         kw=_json(lead_payload(services=[f"s{i}" for i in range(51)]))),
    Case("consent is not a boolean", LEADS, 422, ["body", "consent"],
         kw=_json(lead_payload(consent="maybe"))),
    Case("consent false", LEADS, 422, ["body", "consent"], kw=_json(lead_payload(consent=False))),
    Case("no e-mail and no phone", LEADS, 422, ["body", "email"],
         kw=_json(lead_payload(email=None))),
    Case("bad e-mail", LEADS, 422, ["body", "email"], kw=_json(lead_payload(email="anna@@x"))),
    Case("SQL injection as e-mail", LEADS, 422, ["body", "email"],
         kw=_json(lead_payload(email="x'; DROP TABLE leads; --@a.example"))),
    Case("bad phone", LEADS, 422, ["body", "phone"],
         kw=_json(lead_payload(email=None, phone="+7 000"))),
    Case("name over 200 characters", LEADS, 422, ["body", "name"],
         kw=_json(lead_payload(name="Я" * 201))),
    Case("NUL byte in a name", LEADS, 422, ["body", "name"],
         kw=_json(lead_payload(name="An\x00na"))),
    Case("unpaired surrogate", LEADS, 422, ["body", "name"],
         kw=_raw(b'{"name": "\\ud800", "email": "a@b.example", "consent": true}')),
    Case("unknown source", LEADS, 422, ["body", "source"],
         kw=_json(lead_payload(source="carrier_pigeon"))),
    Case("webinar lead without its webinar", LEADS, 422, ["body", "webinar_id"],
         kw=_json(lead_payload(source="webinar_registration", form_id=None))),
    Case("company size outside the vocabulary", LEADS, 422, ["body", "company_size"],
         kw=_json(lead_payload(company_size="a lot"))),
    Case("submission time in the future", LEADS, 422, ["body", "occurred_at"],
         kw=_json(lead_payload(occurred_at="2999-01-01T00:00:00Z"))),
    Case("submission time that is no time", LEADS, 422, ["body", "occurred_at"],
         kw=_json(lead_payload(occurred_at="yesterday"))),
    Case("Idempotency-Key over 255 characters", LEADS, 422, ["header", "idempotency-key"],
         kw=_json(lead_payload(), **{"Idempotency-Key": "k" * 256})),
    Case("batch of 501", "/v1/leads:batch", 422, ["body", "leads"],
         kw=_json({"leads": [lead_payload()] * 501})),
    Case("batch that is not a list", "/v1/leads:batch", 422, ["body", "leads"],
         kw=_json({"leads": "all of them"})),
    # Public forms
    Case("unknown form", "/v1/forms/nope/submissions", 404, ["path", "form_id"], kw=_form()),
    Case("injection as form id", "/v1/forms/x' OR '1'='1/submissions", 404, ["path", "form_id"],
         kw=_form()),
    Case("foreign origin", FORM, 403, ["header", "Origin"],
         kw=_form(headers={"Origin": "https://evil.example"})),
    Case("JSON to the form endpoint", FORM, 415, ["header", "Content-Type"],
         kw={"json": {"email": "a@b.example"}, "headers": LOCALHOST}),
    Case("form without consent", FORM, 422, ["body", "consent"], kw=_form({"consent": ""})),
    Case("form with a bad e-mail", FORM, 422, ["body", "email"], kw=_form({"email": "nope"})),
    Case("form data not UTF-8", FORM, 422, ["body"],
         kw={"content": b"email=a%40b.example&name=%FF%FE&consent=on",
             "headers": {**LOCALHOST, "Content-Type": "application/x-www-form-urlencoded"}}),
    Case("NUL byte in a form field", FORM, 422, ["body", "name"], kw=_form({"name": "An\x00na"})),
    Case("file upload on a form", FORM, 422, ["body"],
         kw=_form(files={"cv": ("cv.pdf", b"%PDF-1.4", "application/pdf")})),
    Case("250 form fields", FORM, 422, ["body"],
         kw=_form({f"q{i}": "a" for i in range(250)})),
    Case("form body over 64 KB", FORM, 413, ["body"], kw=_form({"message": "x" * 70_000})),
    Case("render time that is no time", FORM, 422, ["body", "rendered_at"],
         kw=_form({"rendered_at": "soon"})),
    # "Rendered" a minute ahead of now (within clock skew): however slow the run, too fast.
    Case("sent a moment after rendering", FORM, 422, ["body", "rendered_at"],
         kw=_form({"rendered_at": "{render_time}"})),
    # Webinars and CSV
    Case("unknown webinar", "/v1/webinars/nope/attendees", 404, ["path", "webinar_id"],
         kw=_json({"email": "a@b.example"})),
    Case("webinar body neither person nor list", "/v1/webinars/webinar-demo/registrants", 422,
         ["body"], kw=_json("Anna")),
    Case("single attendee with a bad phone", "/v1/webinars/webinar-demo/attendees", 422,
         ["body", "phone"], kw=_json({"phone": "12"})),
    Case("CSV upload without a file part", IMPORT, 422, ["body", "file"],
         kw={"data": {"mapping": "{}"}, "files": {"x": ("x", b"")}, "headers": DEV_AUTH}),
    Case("CSV sent as JSON", IMPORT, 415, ["header", "Content-Type"], kw=_json({"file": "x"})),
    Case("binary file as CSV", IMPORT, 422, ["body", "file"],
         kw={"files": {"file": ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00IHDR" * 50)},
             "headers": DEV_AUTH}),
    Case("CSV mapping that is not JSON", IMPORT, 422, ["body", "mapping"],
         kw={"files": {"file": ("a.csv", CSV_HEADER)}, "data": {"mapping": "{email"},
             "headers": DEV_AUTH}),
    Case("CSV mapping to an unknown field", IMPORT, 422, ["body", "mapping"],
         kw={"files": {"file": ("a.csv", CSV_HEADER)}, "data": {"mapping": '{"email": "mail"}'},
             "headers": DEV_AUTH}),
    Case("CSV mapping a column the file lacks", IMPORT, 422, ["body", "mapping"],
         kw={"files": {"file": ("a.csv", CSV_HEADER)}, "data": {"mapping": '{"Phone": "phone"}'},
             "headers": DEV_AUTH}),
    Case("CSV over 5 MB", IMPORT, 413, ["body"],
         kw={"files": {"file": ("big.csv", CSV_HEADER + b"a@b.example,A\n" * 400_000)},
             "headers": DEV_AUTH}),
    # Zoom
    Case("Zoom event with a bad signature", "/v1/webhooks/zoom", 401, ["header", "x-zm-signature"],
         kw=lambda: {"content": b"{}",
                     "headers": {**zoom_headers(b"{}"), "x-zm-signature": "v0=00"}}),
    Case("signed Zoom body that is not JSON", "/v1/webhooks/zoom", 422, ["body"],
         kw=_signed(b"{not json")),
    Case("signed Zoom challenge without its token", "/v1/webhooks/zoom", 422,
         ["body", "payload", "plainToken"],
         kw=_signed(b'{"event": "endpoint.url_validation", "payload": {}}')),
    # Configuration and erasure
    Case("form origin with a path", "/v1/forms/f1", 422, ["body", "allowed_origins", 0],
         method="PUT", kw=_json({"allowed_origins": ["https://acme.example/contact"]})),
    Case("form id with a slash-free injection", "/v1/forms/a;drop", 422, ["path", "form_id"],
         method="PUT", kw=_json({})),
    Case("erasing a lead that does not exist", f"/v1/leads/{uuid.uuid4()}/personal-data", 404,
         ["path", "lead_id"], method="DELETE", kw={"headers": DEV_AUTH}),
]  # fmt: skip


def _at_send_time(kw: dict[str, Any] | Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Cases are built at collection; what depends on the clock is made when sent: signed
    Zoom requests, and a render time a minute ahead of now (within the accepted skew),
    which is too fast however slow the run."""
    if callable(kw):
        return kw()
    data = kw.get("data")
    if isinstance(data, dict) and data.get("rendered_at") == "{render_time}":
        return {**kw, "data": {**data, "rendered_at": str(int((time.time() + 60) * 1000))}}
    return kw


async def test_every_kind_of_bad_input_is_a_named_4xx_and_stores_nothing(
    intake: httpx.AsyncClient, database_url: str
) -> None:
    assert len({c.kind for c in CASES}) >= 30
    wrong = []
    for case in CASES:
        r = await intake.request(case.method, case.path, **_at_send_time(case.kw))
        try:
            detail = r.json()["detail"]
            named = any(d["loc"][: len(case.loc)] == case.loc for d in detail)
            ok = r.status_code == case.status and named and all(d["msg"] for d in detail)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            wrong.append(f"{case.kind}: {r.status_code} {r.text[:300]}")
    assert not wrong, "\n".join(wrong)
    assert await count(database_url, leads) == 0
    assert await count(database_url, outbox) == 0


async def test_random_junk_never_gets_a_5xx(
    intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
) -> None:
    """Mutations of a good lead: every answer is a 202 or a named 4xx, and every lead
    answered 202 is stored and on `leads.received`."""
    rng = random.Random(20261101)
    junk: list[Any] = [
        None,
        0,
        -1,
        1e308,
        True,
        "",
        "x" * 5000,
        [],
        {},
        [[[]]],
        {"a": {}},
        "\x00",
        "\ud83d",
        "😀" * 50,
        "'; DROP TABLE leads; --",
        "<script>",
        "\u202e\u200f",
        "%00",
        "NaN",
        "9" * 400,
    ]
    accepted: set[str] = set()
    for _ in range(150):
        body: dict[str, Any] = lead_payload()
        for key in rng.sample([*sorted(body), "phone", "fields", "occurred_at"], k=2):
            body[key] = rng.choice(junk)
        # ensure_ascii: an unpaired surrogate travels as the \ud83d escape, as a client sends it.
        r = await intake.post("/v1/leads", content=json.dumps(body).encode(), headers=JSON_AUTH)
        assert r.status_code in (202, 413, 422), (body, r.status_code, r.text)
        if r.status_code == 202:
            accepted.add(r.json()["lead_id"])
        else:
            assert r.json()["detail"][0]["loc"][0] in ("body", "header")
    assert await count(database_url, leads) == len(accepted)
    events = await published(database_url, kafka_bootstrap, accepted)
    assert {e.subject for e in events} == accepted


async def test_a_batch_stores_its_good_items_and_names_the_bad_ones(
    intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
) -> None:
    good = [lead_payload(), lead_payload(name="Şevval 😀 \u200fשלום")]
    bad = [
        lead_payload(email="nope"),
        lead_payload(shoe=1),
        "not a lead",
        lead_payload(consent=False),
    ]
    duplicate = {**good[0], "name": "Again"}
    r = await intake.post(
        "/v1/leads:batch",
        json={"leads": [good[0], *bad, good[1], duplicate]},
        headers=DEV_AUTH,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (2, 4, 1)
    statuses = [x["status"] for x in body["results"]]
    assert statuses == ["accepted", *["rejected"] * 4, "accepted", "duplicate"]
    locs = [x["errors"][0]["loc"] for x in body["results"][1:5]]
    assert locs == [
        ["body", "leads", 1, "email"],
        ["body", "leads", 2, "shoe"],
        ["body", "leads", 3],
        ["body", "leads", 4, "consent"],
    ]
    assert body["results"][6]["duplicate_of"] == body["results"][0]["lead_id"]
    ids = {x["lead_id"] for x in body["results"] if x["status"] == "accepted"}
    assert await count(database_url, leads) == 2
    events = await published(database_url, kafka_bootstrap, ids)
    assert sorted(e.type for e in events) == ["lead.received", "lead.received"]
    names = {e.data.name for e in events}  # type: ignore[union-attr]
    assert "Şevval 😀 \u200fשלום" in names
