"""A Bitrix24 portal over HTTP, as the vendor documents it, with knobs to misbehave.

The vendor's surface (github.com/bitrix24/b24restdocs):
- Incoming webhook calls `POST /rest/{user_id}/{code}/{method}.json` (the `.json` suffix
  may be omitted), JSON body or query parameters; success HTTP 200
  `{"result": ..., "time": {...}}` (+ `total`/`next` for lists); errors
  `{"error", "error_description"}` with the status of `_includes/system-errors.md`:
  401 `NO_AUTH_FOUND` for a wrong code, 404 `ERROR_METHOD_NOT_FOUND`, 500
  `INTERNAL_SERVER_ERROR`, 503 `QUERY_LIMIT_EXCEEDED` (local-integrations/local-webhooks.md).
- Rate limit (limits.md): a leaky bucket per portal; each request adds one, past 50 the next
  is refused with 503 `QUERY_LIMIT_EXCEEDED`, the counter drains 2 a second (Enterprise:
  250 and 5). No `Retry-After` is documented, so none is sent.
- `batch` (settings/how-to-call-rest-api/batch.md): `cmd` maps keys to `method?query`
  strings (PHP-style nested keys), `halt`, at most 50 (beyond: `ERROR_BATCH_LENGTH_EXCEEDED`),
  no nested batch (`ERROR_BATCH_METHOD_NOT_ALLOWED`), `$result[key][field]` references;
  the answer is `result: {result, result_error, result_total, result_next, result_time}`.
  One HTTP request, so one unit of the rate limit.
- Outbound webhook (local-integrations/local-webhooks.md "What the Handler Receives",
  api-reference/crm/deals/events/on-crm-deal-update.md, _includes/auth-params-in-events.md):
  POST `application/x-www-form-urlencoded` `event`, `event_handler_id`, `data[FIELDS][ID]`,
  `ts`, `auth[...]` (domain, member_id, application_token...). Only the id; a failed
  delivery is never resent (api-reference/events/index.md "No retries"), and events go
  through a queue, so they may arrive late.

The control API under `/_sim/` is not Bitrix24's: tests drive faults and salespeople there.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.crm_sim.bitrix24_portal import B24Error, Listed, Portal, stamp

MAX_BATCH = 50
_REF = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


@dataclass
class Knobs:
    receiver_url: str | None = None
    events: set[str] = field(default_factory=lambda: {"ONCRMDEALADD", "ONCRMDEALUPDATE"})
    drop_fraction: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # A salesperson's move is announced this long before it lands (None: after).
    early_seconds: float | None = None
    # Documented defaults: 50 requests, draining 2 a second.
    bucket_limit: float = 50
    bucket_drain: float = 2
    fail_next: int = 0
    fail_status: int = 500
    fail_after_commit: bool = False
    fail_methods: set[str] | None = None


@dataclass
class Stats:
    requests: int = 0
    limited: int = 0
    failed: int = 0
    notified: int = 0
    dropped: int = 0
    undelivered: int = 0
    calls: dict[str, int] = field(default_factory=dict)


class Simulator:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.knobs = Knobs()
        self.stats = Stats()
        self._level = 0.0
        self._at = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        portal.on_change = self.notify

    # ---- the rate limit: a leaky bucket per portal
    def admit(self) -> bool:
        # "The counter value automatically decreases by Y once per second" (limits.md).
        ticks = int(time.monotonic() - self._at)
        if ticks:
            self._level = max(0.0, self._level - ticks * self.knobs.bucket_drain)
            self._at += ticks
        if self._level >= self.knobs.bucket_limit:
            return False
        self._level += 1
        return True

    def take_fault(self, method: str) -> tuple[int, bool] | None:
        k = self.knobs
        if k.fail_next <= 0 or (k.fail_methods is not None and method not in k.fail_methods):
            return None
        k.fail_next -= 1
        return k.fail_status, k.fail_after_commit

    # ---- calls
    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.stats.calls[method] = self.stats.calls.get(method, 0) + 1
        if method == "batch":
            return {"result": self.batch(params)}
        handler = self.portal.methods().get(method)
        if handler is None:
            raise B24Error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        result = handler(params)
        if isinstance(result, Listed):
            out: dict[str, Any] = {"result": result.items, "total": result.total}
            if result.next is not None:
                out["next"] = result.next
            return out
        return {"result": result}

    def batch(self, params: dict[str, Any]) -> dict[str, Any]:
        cmd = params.get("cmd")
        if isinstance(cmd, list):
            cmd = {str(i): c for i, c in enumerate(cmd)}
        if not isinstance(cmd, dict):
            raise B24Error(400, "ERROR_BATCH_PARAMS", "Parameter 'cmd' must be array.")
        halt = str(params.get("halt", "0")).lower() in ("1", "true", "y")
        out: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for index, (key, query) in enumerate(cmd.items()):
            if index >= MAX_BATCH:
                errors[key] = _error("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
                continue
            method, _, qs = str(query).partition("?")
            try:
                if method == "batch":
                    raise B24Error(
                        405,
                        "ERROR_BATCH_METHOD_NOT_ALLOWED",
                        "Method is not allowed for batch usage",
                    )
                answer = self.call(method, _resolve(php_query(qs), out))
            except B24Error as e:
                errors[key] = _error(e.code, e.description)
                if halt:
                    break
                continue
            out[key] = answer["result"]
            times[key] = _time()
            if "total" in answer:
                totals[key] = answer["total"]
            if "next" in answer:
                nexts[key] = answer["next"]
        # PHP's json_encode writes an empty array for an empty map.
        return {
            "result": out or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": nexts or [],
            "result_time": times or [],
        }

    # ---- outbound webhook
    def notify(self, event: str, deal_id: int) -> None:
        k = self.knobs
        if k.receiver_url is None or event not in k.events:
            return
        if k.drop_fraction and k.rng.random() < k.drop_fraction:
            self.stats.dropped += 1
            return
        self.stats.notified += 1
        body = urlencode(
            [
                ("event", event),
                ("event_handler_id", "7"),
                ("data[FIELDS][ID]", str(deal_id)),
                ("ts", str(int(time.time()))),
                ("auth[domain]", self.portal.domain),
                ("auth[client_endpoint]", f"https://{self.portal.domain}/rest/"),
                ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
                ("auth[member_id]", self.portal.member_id),
                ("auth[scope]", "crm"),
                ("auth[status]", "L"),
                ("auth[application_token]", self.portal.application_token),
            ]
        )
        self.spawn(self._deliver(k.receiver_url, body))

    async def _deliver(self, url: str, body: str) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(url, content=body, headers=headers)
            if answer.status_code >= 300:
                self.stats.undelivered += 1  # logged by the vendor, never resent
        except httpx.HTTPError:
            self.stats.undelivered += 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- a salesperson at work
    async def move(self, deal_id: int, body: dict[str, Any]) -> None:
        fields = dict(body.get("fields") or {})
        fields["STAGE_ID"] = body["stage"]
        if body.get("amount") is not None:
            fields["OPPORTUNITY"] = body["amount"]
        if body.get("currency"):
            fields["CURRENCY_ID"] = body["currency"]
        portal = self.portal
        deal = portal.deals[deal_id]
        portal._stage(int(deal["CATEGORY_ID"]), fields["STAGE_ID"])  # refuse an unknown stage
        early = self.knobs.early_seconds
        if early is None:
            portal._write_deal(deal, fields, new=False)
            self.notify("ONCRMDEALUPDATE", deal_id)
            return
        self.notify("ONCRMDEALUPDATE", deal_id)

        async def land() -> None:
            await asyncio.sleep(early)
            portal._write_deal(deal, fields, new=False)

        self.spawn(land())


def _error(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": description}


def _time() -> dict[str, Any]:
    now = time.time()
    return {
        "start": now,
        "finish": now,
        "duration": 0.0,
        "processing": 0.0,
        "date_start": stamp_now(),
        "date_finish": stamp_now(),
        "operating_reset_at": int(now) + 600,
        "operating": 0,
    }


def stamp_now() -> str:
    return stamp(datetime.now(UTC))


def php_query(qs: str) -> dict[str, Any]:
    """PHP's parse_str: `fields[PHONE][0][VALUE]=1` becomes nested maps; maps keyed 0..n-1
    become lists (as a PHP array with those keys is one)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(qs, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"\[([^\]]*)\]", "[" + rest) if rest else [])
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and list(node) == [str(i) for i in range(len(node))]:
        return list(node.values())
    return node


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace `$result[key][field]...` with what an earlier command returned."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        node: Any = results.get(match.group(1))
        for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.get(part)
            else:
                node = None
        return "" if node is None else str(node)

    return _REF.sub(one, value)


def make_app(portal: Portal | None = None) -> FastAPI:
    """The simulator app; `app.state.sim` holds the Simulator for in-process assertions."""
    sim = Simulator(portal or Portal())
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.sim = sim

    def answer(status: int, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    @app.api_route("/rest/{user_id}/{code}/{method}", methods=["GET", "POST"])
    async def rest(user_id: str, code: str, method: str, request: Request) -> JSONResponse:
        sim.stats.requests += 1
        method = method.removesuffix(".json").lower()
        p = sim.portal
        if user_id != str(p.user_id) or code != p.code:
            return answer(401, _error("NO_AUTH_FOUND", "Wrong authorization data"))
        if not sim.admit():
            sim.stats.limited += 1
            return answer(503, _error("QUERY_LIMIT_EXCEEDED", "Too many requests"))
        params: dict[str, Any] = php_query(request.url.query)
        raw = await request.body()
        if raw:
            kind = request.headers.get("content-type", "")
            if "json" in kind:
                try:
                    body = await request.json()
                except ValueError:
                    return answer(400, _error("INVALID_REQUEST", "Invalid JSON"))
                params.update(body if isinstance(body, dict) else {})
            else:
                params.update(php_query(raw.decode("utf-8", "replace")))
        fault = sim.take_fault(method)
        if fault is not None and not fault[1]:
            sim.stats.failed += 1
            return answer(fault[0], _error("INTERNAL_SERVER_ERROR", "Internal server error"))
        try:
            out = sim.call(method, params)
        except B24Error as e:
            return answer(e.status, _error(e.code, e.description))
        if fault is not None:  # committed, but the answer is lost
            sim.stats.failed += 1
            return answer(fault[0], _error("INTERNAL_SERVER_ERROR", "Internal server error"))
        return answer(200, {**out, "time": _time()})

    # ---- control API (not Bitrix24's)
    @app.post("/_sim/config")
    async def config(body: dict[str, Any]) -> dict[str, Any]:
        k = sim.knobs
        if "receiver_url" in body:
            k.receiver_url = body["receiver_url"]
        if "events" in body:
            k.events = set(body["events"])
        if "drop_fraction" in body:
            k.drop_fraction = float(body["drop_fraction"])
        if "seed" in body:
            k.rng = random.Random(body["seed"])
        if "early_seconds" in body:
            k.early_seconds = body["early_seconds"]
        if "rate_limit" in body:
            k.bucket_limit = float(body["rate_limit"]["limit"])
            k.bucket_drain = float(body["rate_limit"]["drain_per_second"])
        if "categories" in body:
            for category_id, name in body["categories"].items():
                sim.portal.categories[int(category_id)] = str(name)
        return {"ok": True}

    @app.post("/_sim/faults")
    async def faults(body: dict[str, Any]) -> dict[str, Any]:
        k = sim.knobs
        k.fail_next = int(body.get("count", 1))
        k.fail_status = int(body.get("status", 500))
        k.fail_after_commit = bool(body.get("after_commit", False))
        methods = body.get("methods")
        k.fail_methods = set(methods) if methods else None
        return {"ok": True}

    @app.post("/_sim/deals/{deal_id}/move")
    async def move(deal_id: int, body: dict[str, Any]) -> JSONResponse:
        if deal_id not in sim.portal.deals:
            return answer(404, {"detail": "no such deal"})
        try:
            await sim.move(deal_id, body)
        except B24Error as e:
            return answer(400, {"detail": e.description})
        return answer(202, {"ID": str(deal_id)})

    @app.get("/_sim/deals")
    async def deals() -> dict[str, Any]:
        return {"deals": list(sim.portal.deals.values())}

    @app.get("/_sim/deals/{deal_id}")
    async def deal(deal_id: int) -> JSONResponse:
        found = sim.portal.deals.get(deal_id)
        if found is None:
            return answer(404, {"detail": "no such deal"})
        comments = [c for c in sim.portal.comments.values() if c["ENTITY_ID"] == deal_id]
        contact_id = found.get("CONTACT_ID")
        contact = sim.portal.contacts.get(int(contact_id)) if contact_id else None
        company_id = found.get("COMPANY_ID")
        company = sim.portal.companies.get(int(company_id)) if company_id else None
        extra = {"contact": contact, "company": company, "comments": comments}
        return answer(200, {"deal": found, **extra})

    @app.get("/_sim/origins")
    async def origins(originator: str = "leadflow") -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in sim.portal.deals.values():
            if d.get("ORIGINATOR_ID") == originator and d.get("ORIGIN_ID"):
                counts[d["ORIGIN_ID"]] = counts.get(d["ORIGIN_ID"], 0) + 1
        return {"counts": counts}

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return {**sim.stats.__dict__, "now": stamp_now()}

    return app


__all__ = ["Listed", "Portal", "Simulator", "make_app", "php_query"]
