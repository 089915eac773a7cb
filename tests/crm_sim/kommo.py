"""A Kommo (amoCRM) account as a local HTTP server: the API v4 calls a connector makes,
the account webhooks it sends, and the ways the real one misbehaves.

Faithful to the vendor's documents, not to Leadflow's connector:
- `https://{subdomain}.kommo.com/api/v4/...` with `Authorization: Bearer <long-lived
  token>`; errors are `application/problem+json`, a missing or bad token answers 401
  (https://developers.kommo.com/docs/long-lived-token,
  https://www.amocrm.com/developers/content/api/errors/).
- At most 7 requests a second per account, HTTP 429 over it
  (https://developers.kommo.com/docs/limitations). The vendor documents no 429 body and
  no `Retry-After`: the 429 has an empty body, and `Retry-After` only when a test sets
  `retry_after` (the SDK treats a non-JSON 429 as "too many requests":
  github.com/amocrm/amocrm-api-php `src/AmoCRM/Client/AmoCRMApiRequest.php`).
- `POST /api/v4/leads/complex`: up to 50 leads, at most one contact and one company each;
  the answer is `[{"id", "contact_id", "company_id", "request_id": ["..."], "merged"}]`
  (request_id is an array, https://developers.kommo.com/reference/complex-leads); the
  server does not de-duplicate by request_id (duplicate control is off here).
- An empty list or a missing lead answers 204 with no body
  (https://kommo.com/developers/content/api_v4/errors: 204 when there is no content).
- Lists are HAL: `_page`, `_links.self/next`, `_embedded.leads`; `limit` at most 250,
  `filter[updated_at][from]` in Unix seconds (https://developers.kommo.com/reference/leads-list).
- Account webhooks POST `application/x-www-form-urlencoded`
  `leads[status][0][id]=..&..&account[subdomain]=..&account[id]=..` (also `leads[add]`,
  `leads[update]`; https://www.amocrm.ru/developers/content/crm_platform/webhooks-format:
  "x-www-form-urlencoded ... {entity: {action: {0: {fields}}}}"). No signature exists.
  Redelivery: none by default (older page); `retries` up to 4 within an hour per
  https://developers.kommo.com/docs/webhooks-dp.

The control API under `/_sim/` is no part of Kommo: knobs for tests and the salesperson's
actions (`move` a lead to a stage with a loss reason and amount).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.crm_sim.kommo_account import LOST, WON, Account, Invalid, Json, invalid, problem
from tests.crm_sim.kommo_routes import add_vendor_routes

TOKEN = "kommo-long-lived-token"
ACCOUNT_ID = 31337001
SUBDOMAIN = "leadflow"
RATE_LIMIT = 7  # requests per second per account (docs/limitations)


@dataclass
class Knobs:
    rate_limit: int = RATE_LIMIT
    retry_after: float | None = None
    drop_fraction: float = 0.0
    # Send a stage change's notification this many seconds before the record changes.
    early_seconds: float = 0.0
    retries: int = 0
    retry_delay: float = 1.0
    receiver_url: str | None = None
    events: set[str] = field(default_factory=lambda: {"status"})
    fail_count: int = 0
    fail_status: int = 500
    fail_after_commit: bool = False


class KommoSim:
    """One account's state, knobs and outgoing notifications."""

    def __init__(self, *, token: str, account_id: int, subdomain: str, seed: int) -> None:
        self.token = token
        self.account = Account(account_id=account_id, subdomain=subdomain)
        self.knobs = Knobs()
        self.random = random.Random(seed)
        self.calls: deque[float] = deque()
        # The rate limit's clock; a test may freeze it.
        self.clock: Callable[[], float] = time.monotonic
        self.sent: list[Json] = []
        self.http: httpx.AsyncClient | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Calls answered 429 (the tests show how often a client met the limit).
        self.limited = 0

    # -- the rate limit and failure knobs ------------------------------------------------

    def over_limit(self) -> bool:
        now = self.clock()
        while self.calls and now - self.calls[0] >= 1.0:
            self.calls.popleft()
        if len(self.calls) >= self.knobs.rate_limit:
            return True
        self.calls.append(now)
        return False

    # -- notifications -------------------------------------------------------------------

    def form(
        self, action: str, lead: Json, old_status: int | None, old_pipeline: int | None
    ) -> str:
        p = f"leads[{action}][0]"
        fields: list[tuple[str, Any]] = [
            (f"{p}[id]", lead["id"]),
            (f"{p}[name]", lead["name"] or ""),
            (f"{p}[status_id]", lead["status_id"]),
            (f"{p}[pipeline_id]", lead["pipeline_id"]),
            (f"{p}[price]", lead["price"] or 0),
            (f"{p}[responsible_user_id]", lead["responsible_user_id"]),
            (f"{p}[last_modified]", lead["updated_at"]),
            (f"{p}[modified_user_id]", 0),
            (f"{p}[created_user_id]", 0),
            (f"{p}[date_create]", lead["created_at"]),
            (f"{p}[account_id]", self.account.account_id),
        ]
        if action == "status":
            fields += [(f"{p}[old_status_id]", old_status), (f"{p}[old_pipeline_id]", old_pipeline)]
        fields += [
            ("account[subdomain]", self.account.subdomain),
            ("account[id]", self.account.account_id),
            ("account[_links][self]", f"https://{self.account.subdomain}.kommo.com"),
        ]
        return urlencode(fields)

    def notify(
        self,
        action: str,
        lead: Json,
        old_status: int | None = None,
        old_pipeline: int | None = None,
    ) -> None:
        if action not in self.knobs.events or not self.knobs.receiver_url:
            return
        body = self.form(action, lead, old_status, old_pipeline)
        record: Json = {
            "action": action,
            "lead_id": lead["id"],
            "body": body,
            "dropped": False,
            "attempts": 0,
        }
        self.sent.append(record)
        if self.random.random() < self.knobs.drop_fraction:
            record["dropped"] = True
            return
        task = asyncio.get_running_loop().create_task(self.deliver(self.knobs.receiver_url, record))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deliver(self, url: str, record: Json) -> None:
        assert self.http is not None
        for attempt in range(1 + min(self.knobs.retries, 4)):
            if attempt:
                await asyncio.sleep(self.knobs.retry_delay)
            record["attempts"] += 1
            try:
                answer = await self.http.post(
                    url,
                    content=record["body"],
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                record["status"] = answer.status_code
                if answer.status_code < 300:
                    return
            except httpx.HTTPError:
                record["status"] = None

    # -- salesperson actions ---------------------------------------------------------------

    def change(self, lead: Json, changes: Json) -> tuple[int, int]:
        old = (lead["status_id"], lead["pipeline_id"])
        for key in (
            "status_id",
            "pipeline_id",
            "loss_reason_id",
            "price",
            "responsible_user_id",
            "name",
        ):
            if key in changes:
                lead[key] = changes[key]
        closed = lead["status_id"] in (WON, LOST)
        lead["closed_at"] = lead["closed_at"] or (int(time.time()) if closed else None)
        self.account.touch(lead)
        return old

    async def move(self, lead: Json, changes: Json) -> None:
        """A salesperson drags the lead to a stage: the record changes (its updated_at too)
        and the account webhook fires; with `early_seconds` the webhook goes first."""
        if self.knobs.early_seconds > 0:
            preview = {**lead, **changes}
            self.notify("status", preview, lead["status_id"], lead["pipeline_id"])
            self.notify("update", preview)
            await asyncio.sleep(self.knobs.early_seconds)
            self.change(lead, changes)
            return
        old_status, old_pipeline = self.change(lead, changes)
        if old_status != lead["status_id"] or old_pipeline != lead["pipeline_id"]:
            self.notify("status", lead, old_status, old_pipeline)
        self.notify("update", lead)


def make_app(
    *, token: str = TOKEN, account_id: int = ACCOUNT_ID, subdomain: str = SUBDOMAIN, seed: int = 0
) -> FastAPI:
    sim = KommoSim(token=token, account_id=account_id, subdomain=subdomain, seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            sim.http = http
            yield
            for task in list(sim.tasks):
                task.cancel()

    app = FastAPI(lifespan=lifespan)
    app.state.sim = sim

    @app.middleware("http")
    async def vendor_gate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith("/api/v4/"):
            return await call_next(request)
        if sim.over_limit():
            sim.limited += 1
            headers = (
                {}
                if sim.knobs.retry_after is None
                else {"Retry-After": f"{sim.knobs.retry_after:g}"}
            )
            return Response(status_code=429, headers=headers)
        if sim.knobs.fail_count > 0:
            sim.knobs.fail_count -= 1
            status = sim.knobs.fail_status
            if sim.knobs.fail_after_commit:
                await call_next(request)  # the change lands, the answer is lost
            return problem(status, "Internal Server Error", "Internal Server Error")
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {sim.token}":
            return problem(401, "Unauthorized", "Unauthorized")
        return await call_next(request)

    add_vendor_routes(app, sim)
    add_control_routes(app, sim)
    return app


def add_control_routes(app: FastAPI, sim: KommoSim) -> None:
    acc = sim.account

    @app.post("/_sim/config")
    async def config(request: Request) -> Response:
        body = await request.json()
        for key, value in body.items():
            if not hasattr(sim.knobs, key):
                return problem(400, "Bad Request", f"unknown knob {key}")
            setattr(sim.knobs, key, set(value) if key == "events" else value)
        if "seed" in body:
            sim.random.seed(body["seed"])
        return JSONResponse({"ok": True})

    @app.post("/_sim/fail")
    async def fail(request: Request) -> Response:
        body = await request.json()
        sim.knobs.fail_count = int(body.get("count", 1))
        sim.knobs.fail_status = int(body.get("status", 500))
        sim.knobs.fail_after_commit = bool(body.get("after_commit", False))
        return JSONResponse({"ok": True})

    @app.post("/_sim/leads/{lead_id}/move")
    async def move(lead_id: int, request: Request) -> Response:
        lead = acc.leads.get(lead_id)
        if lead is None:
            return problem(404, "Not Found", "no such lead")
        body = await request.json()
        changes = {
            k: body[k]
            for k in ("status_id", "pipeline_id", "loss_reason_id", "price", "responsible_user_id")
            if k in body
        }
        try:
            p, s = acc.check_stage(
                "0",
                changes.get("pipeline_id", lead["pipeline_id"]),
                changes.get("status_id", lead["status_id"]),
            )
        except Invalid as exc:
            return invalid(exc)
        await sim.move(lead, changes | {"pipeline_id": p, "status_id": s})
        return JSONResponse(acc.lead_view(lead, {"loss_reason", "contacts"}))

    @app.get("/_sim/leads")
    async def all_leads() -> Response:
        return JSONResponse(
            [
                acc.lead_view(x, {"loss_reason", "contacts"})
                | {"notes": acc.notes.get(x["id"], [])}
                for x in acc.leads.values()
            ]
        )

    @app.get("/_sim/leads/by-lead-id/{leadflow_id}")
    async def by_lead_id(leadflow_id: str) -> Response:
        ids = acc.lead_ids_for(leadflow_id)
        return JSONResponse({"count": len(ids), "ids": ids})

    @app.get("/_sim/contacts/{contact_id}")
    async def contact(contact_id: int) -> Response:
        found = acc.contacts.get(contact_id)
        return JSONResponse(found) if found else problem(404, "Not Found", "no such contact")

    @app.get("/_sim/stats")
    async def stats() -> Response:
        return JSONResponse({"limited": sim.limited})

    @app.get("/_sim/notifications")
    async def notifications() -> Response:
        return JSONResponse(sim.sent)
