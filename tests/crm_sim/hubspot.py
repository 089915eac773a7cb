"""A HubSpot account (one portal) as a real HTTP server for tests: `create_app(...)`.

Written from HubSpot's documentation, not from Leadflow's client (addresses next to each
fact). The vendor surface:

- `Authorization: Bearer <private app token>`; otherwise 401 with HubSpot's error JSON
  `{"status": "error", "message", "correlationId", "category": "INVALID_AUTHENTICATION"}`
  (developers.hubspot.com/docs/api-reference/latest/error-handling).
- contacts: `POST /crm/v3/objects/contacts` (an existing e-mail: 409 CONFLICT "Contact
  already exists. Existing ID: N"), `POST /crm/v3/objects/{contacts,deals}/batch/upsert`
  (`{"inputs": [{"id", "idProperty", "properties"}]}` keyed by a unique property;
  answer `{"status": "COMPLETE", "results": [{..., "new"}], "startedAt", "completedAt"}`,
  developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/
  upsert-contacts), `GET`/`PATCH /crm/v3/objects/{type}/{id}` (`?idProperty=`,
  `?properties=`, `?associations=`), `POST /crm/v3/objects/contacts/gdpr-delete`
  (`{"objectId", "idProperty"?}` -> 204; developers.hubspot.com/docs/api-reference/legacy/
  crm/objects/contacts/gdpr/gdpr-delete-contact).
- `POST /crm/v3/objects/deals/search`: filterGroups (OR of ANDed filters), sorts, `limit`
  at most 200, `after` paging, no more than 10,000 results per query, its own limit of a
  few requests a second per account and no rate-limit headers (developers.hubspot.com/
  docs/api-reference/2026-03/crm/search-the-crm; changelog "CRM Search API Rate Limit
  Increase": 4 a second; today's usage guidelines say 5: configurable). Results can lag
  behind writes (`search_lag` knob).
- `PUT /crm/v4/objects/deal/{id}/associations/default/contact/{id}`;
  `POST /crm/v3/objects/notes` with `associations` (type 214, note -> deal);
  `GET /crm/v3/pipelines/deals`.
- Rate limit per account: private apps 100 requests per rolling 10 s (Free/Starter;
  developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines); over it 429
  `{"status": "error", "message", "errorType": "RATE_LIMIT", "correlationId",
  "policyName": "TEN_SECONDLY_ROLLING", "requestId"}` with `X-HubSpot-RateLimit-Max`,
  `-Remaining`, `-Interval-Milliseconds`, `-Daily`, `-Daily-Remaining` (no `Retry-After`
  is documented; the `fail` knob can add one).

The control surface under `/_sim/` (not HubSpot's) sets the receiver, knobs (drop a
fraction of notifications, notify before the change lands, N failing answers before or
after the write commits, a tighter limit, search lag, retry delays), lets a "salesperson"
move a deal, and reads the state back (records, deals created per Leadflow lead id).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.crm_sim.hubspot_control import control
from tests.crm_sim.hubspot_search import search
from tests.crm_sim.hubspot_store import (
    DEAL_TO_CONTACT,
    NOTE_TO_DEAL,
    READ_ONLY,
    UNIQUE,
    Account,
    Record,
    iso,
)
from tests.crm_sim.hubspot_webhooks import Outbox
from tests.crm_sim.hubspot_wire import Window, error, invalid

KINDS = ("contacts", "deals", "notes")
WATCHED = ("dealstage", "amount", "closed_lost_reason")


class Sim:
    def __init__(
        self, token: str, portal_id: int, app_id: int, client_secret: str, seed: int
    ) -> None:
        self.token = token
        self.account = Account()
        self.outbox = Outbox(portal_id, app_id, client_secret, rng=random.Random(seed))
        self.window = Window(100, 10.0)
        self.search_window = Window(5, 1.0)
        self.daily = 250_000
        self.fail: dict[str, Any] = {"count": 0}
        self.early_seconds = 0.0
        self.search_lag = 0.0
        self.requests = 0
        # Calls answered 429, either limit (the tests show how often a client met them).
        self.limited = 0

    def validate(self, kind: str, props: dict[str, Any]) -> JSONResponse | None:
        known = self.account.known(kind)
        for name, value in props.items():
            if name in READ_ONLY:
                return invalid("READ_ONLY_VALUE", name, f"{name} is a read only property")
            if name not in known:
                return invalid(
                    "PROPERTY_DOESNT_EXIST", name, f'Property \\"{name}\\" does not exist'
                )
            if name == "email" and value and "@" not in str(value):
                return invalid("INVALID_EMAIL", name, f"Email address {value} is invalid")
        return None

    def check_stage(self, record: Record | None, props: dict[str, Any]) -> JSONResponse | None:
        if "dealstage" not in props and "pipeline" not in props:
            return None
        current = record.properties if record else {}
        pipeline = props.get("pipeline") or current.get("pipeline") or "default"
        stage = props.get("dealstage") or current.get("dealstage")
        if pipeline not in self.account.pipelines:
            return invalid("INVALID_OPTION", "pipeline", f"{pipeline} was not a valid pipeline")
        if stage and not self.account.stage(str(pipeline), str(stage)):
            return invalid("INVALID_OPTION", "dealstage", f"{stage} was not a valid stage")
        return None

    def write(self, kind: str, record: Record | None, props: dict[str, Any], source: str) -> Record:
        """Create or update, firing the app's subscriptions for what changed."""
        now = datetime.now(UTC)
        values = {k: (None if v is None else str(v)) for k, v in props.items()}
        if kind == "deals":
            values.setdefault("pipeline", None if record else "default")
            if values["pipeline"] is None:
                values.pop("pipeline")
            if record is None and not values.get("dealstage"):
                values["dealstage"] = self.account.pipelines[str(values["pipeline"])][1][0].id
        before = dict(record.properties) if record else {}
        if record is None:
            record = self.account.create(kind, values, now)
            if kind == "deals":
                self.outbox.event("deal.creation", record.id, None, None, source)
        else:
            self.account.update(record, values, now)
        if kind == "deals":
            for name in WATCHED:
                if name in values and values[name] != before.get(name) and before:
                    self.outbox.event("deal.propertyChange", record.id, name, values[name], source)
        return record


def create_app(
    *,
    token: str = "pat-na1-11111111-2222-3333-4444-555555555555",
    portal_id: int = 62515,
    app_id: int = 987654,
    client_secret: str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    seed: int = 0,
) -> FastAPI:
    sim = Sim(token, portal_id, app_id, client_secret, seed)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sender = asyncio.create_task(sim.outbox.run())
        yield
        sender.cancel()

    app = FastAPI(lifespan=lifespan)
    app.state.sim = sim

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith("/_sim"):
            return await call_next(request)
        sim.requests += 1
        fail = sim.fail
        if fail["count"] > 0 and not fail.get("after_commit"):
            fail["count"] -= 1
            return failure(fail)
        if request.headers.get("authorization") != f"Bearer {sim.token}":
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        is_search = request.url.path.endswith("/search")
        if is_search and not sim.search_window.admit():
            sim.limited += 1
            return error(
                429,
                "",
                "You have reached your secondly limit.",
                errorType="RATE_LIMIT",
                policyName="SECONDLY",
                requestId=str(uuid.uuid4()),
            )
        if not is_search and not sim.window.admit():
            sim.limited += 1
            answer = error(
                429,
                "",
                "You have reached your ten_secondly_rolling limit.",
                errorType="RATE_LIMIT",
                policyName="TEN_SECONDLY_ROLLING",
                requestId=str(uuid.uuid4()),
            )
            limit_headers(answer)
            return answer
        response = await call_next(request)
        if fail["count"] > 0 and fail.get("after_commit"):
            fail["count"] -= 1
            return failure(fail)
        if not is_search:
            limit_headers(response)
        return response

    def failure(fail: dict[str, Any]) -> Response:
        status = int(fail.get("status", 502))
        answer = error(status, "", "internal error") if status != 504 else Response(status_code=504)
        if fail.get("retry_after") is not None:
            answer.headers["Retry-After"] = str(fail["retry_after"])
        return answer

    def limit_headers(answer: Response) -> None:
        w = sim.window
        answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(w.seconds * 1000))
        answer.headers["X-HubSpot-RateLimit-Max"] = str(w.limit)
        answer.headers["X-HubSpot-RateLimit-Remaining"] = str(w.remaining())
        answer.headers["X-HubSpot-RateLimit-Daily"] = str(sim.daily)
        answer.headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(sim.daily - sim.requests)

    def not_found() -> JSONResponse:
        return error(404, "OBJECT_NOT_FOUND", "resource not found")

    def kind_of(name: str) -> str | None:
        plural = name if name.endswith("s") else f"{name}s"
        return plural if plural in KINDS else None

    def associations_view(record: Record, wanted: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "contacts" in wanted.split(",") and record.kind == "deals":
            ids = sorted(sim.account.deal_contacts.get(record.id, ()))
            out["contacts"] = {"results": [{"id": i, "type": "deal_to_contact"} for i in ids]}
        return out

    @app.get("/crm/v3/pipelines/deals")
    async def pipelines() -> dict[str, Any]:
        return sim.account.pipelines_view()

    @app.post("/crm/v3/objects/contacts/gdpr-delete")
    async def gdpr_delete(request: Request) -> Response:
        body = await request.json()
        key, prop = str(body.get("objectId", "")), body.get("idProperty")
        record = sim.account.get("contacts", key, prop)
        if record is None:
            if prop == "email":
                sim.account.blocklist.add(key)
                return Response(status_code=204)
            return not_found()
        sim.account.erase_contact(record.id)
        return Response(status_code=204)

    @app.post("/crm/v3/objects/{name}/batch/upsert")
    async def batch_upsert(name: str, request: Request) -> Response:
        kind = kind_of(name)
        if kind is None:
            return not_found()
        inputs = (await request.json()).get("inputs") or []
        if not 1 <= len(inputs) <= 100:
            return error(400, "VALIDATION_ERROR", "inputs must hold 1 to 100 entries")
        started, results = iso(datetime.now(UTC)), []
        for item in inputs:
            prop, key, props = (
                item.get("idProperty"),
                str(item.get("id", "")),
                item.get("properties", {}),
            )
            if prop not in UNIQUE[kind]:
                return invalid("INVALID_ID_PROPERTY", str(prop), f"{prop} is not a unique property")
            bad = sim.validate(kind, props)
            record = sim.account.find(kind, str(prop), key)
            bad = bad or (sim.check_stage(record, props) if kind == "deals" else None)
            if bad:
                return bad
            record = sim.write(kind, record, {**props, prop: key}, "INTEGRATION")
            results.append({**record.view(list(props)), "new": record.created == record.updated})
        return JSONResponse(
            {
                "status": "COMPLETE",
                "results": results,
                "startedAt": started,
                "completedAt": iso(datetime.now(UTC)),
            }
        )

    @app.post("/crm/v3/objects/{name}/search")
    async def search_objects(name: str, request: Request) -> Response:
        kind = kind_of(name)
        if kind is None:
            return not_found()
        return search(sim.account, kind, await request.json(), sim.search_lag, error)

    @app.post("/crm/v3/objects/{name}")
    async def create(name: str, request: Request) -> Response:
        kind = kind_of(name)
        if kind is None:
            return not_found()
        body = await request.json()
        props = body.get("properties") or {}
        bad = sim.validate(kind, props)
        if bad:
            return bad
        if kind == "notes" and not props.get("hs_timestamp"):
            return invalid("REQUIRED_PROPERTY", "hs_timestamp", "hs_timestamp is required")
        for unique in UNIQUE[kind]:
            existing = props.get(unique) and sim.account.find(kind, unique, str(props[unique]))
            if existing:
                return error(409, "CONFLICT", f"Contact already exists. Existing ID: {existing.id}")
        targets: list[str] = []
        for assoc in body.get("associations") or []:
            to = str(assoc.get("to", {}).get("id"))
            types = [t.get("associationTypeId") for t in assoc.get("types", [])]
            if kind == "notes" and NOTE_TO_DEAL in types:
                if to not in sim.account.objects["deals"]:
                    return error(400, "VALIDATION_ERROR", f"deal {to} does not exist")
                targets.append(to)
        record = sim.write(kind, None, props, "INTEGRATION")
        for deal in targets:
            sim.account.note_deals.setdefault(record.id, set()).add(deal)
        return JSONResponse(record.view(list(props)), status_code=201)

    @app.get("/crm/v3/objects/{name}/{key}")
    async def read(name: str, key: str, request: Request) -> Response:
        kind, q = kind_of(name), request.query_params
        record = sim.account.get(kind, key, q.get("idProperty")) if kind else None
        if record is None:
            return not_found()
        names = [p for p in q.get("properties", "").split(",") if p]
        view = record.view(names)
        extra = associations_view(record, q.get("associations", ""))
        return JSONResponse({**view, "associations": extra} if extra else view)

    @app.patch("/crm/v3/objects/{name}/{key}")
    async def patch(name: str, key: str, request: Request) -> Response:
        kind = kind_of(name)
        record = (
            sim.account.get(kind, key, request.query_params.get("idProperty")) if kind else None
        )
        if kind is None or record is None:
            return not_found()
        props = (await request.json()).get("properties") or {}
        bad = sim.validate(kind, props) or (
            sim.check_stage(record, props) if kind == "deals" else None
        )
        if bad:
            return bad
        sim.write(kind, record, props, "INTEGRATION")
        return JSONResponse(record.view(list(props)))

    @app.put("/crm/v4/objects/{src}/{src_id}/associations/default/{dst}/{dst_id}")
    async def associate(src: str, src_id: str, dst: str, dst_id: str) -> Response:
        pair = (kind_of(src), kind_of(dst))
        if pair not in (("deals", "contacts"), ("contacts", "deals")):
            return error(400, "VALIDATION_ERROR", f"no default association {src} -> {dst}")
        deal, contact = (src_id, dst_id) if pair[0] == "deals" else (dst_id, src_id)
        if (
            deal not in sim.account.objects["deals"]
            or contact not in sim.account.objects["contacts"]
        ):
            return not_found()
        sim.account.deal_contacts.setdefault(deal, set()).add(contact)
        now = iso(datetime.now(UTC))
        spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": DEAL_TO_CONTACT}
        return JSONResponse(
            {
                "status": "COMPLETE",
                "startedAt": now,
                "completedAt": now,
                "results": [
                    {"from": {"id": src_id}, "to": {"id": dst_id}, "associationSpec": spec}
                ],
            }
        )

    app.include_router(control(sim))
    return app
