"""The HubSpot simulator's `/_sim/` control API: knobs, a salesperson's moves, state.

Not HubSpot's surface: how tests misconfigure the vendor and look inside it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request

from tests.crm_sim.hubspot_store import Record

if TYPE_CHECKING:
    from tests.crm_sim.hubspot import Sim


def _full(record: Record, sim: Sim) -> dict[str, Any]:
    view = {"id": record.id, "properties": dict(record.properties)}
    if record.kind == "deals":
        view["contacts"] = sorted(sim.account.deal_contacts.get(record.id, ()))
        view["notes"] = sorted(n for n, d in sim.account.note_deals.items() if record.id in d)
    return view


def control(sim: Sim) -> APIRouter:
    router = APIRouter(prefix="/_sim")

    @router.post("/receiver")
    async def receiver(body: dict[str, Any]) -> dict[str, Any]:
        sim.outbox.receiver = body.get("url")
        sim.outbox.poke()
        return {"url": sim.outbox.receiver}

    @router.post("/knobs")
    async def knobs(body: dict[str, Any]) -> dict[str, Any]:
        """drop_fraction, early_seconds, search_lag, retry_delays, rate_limit
        {"requests", "per_seconds"}, search_rate_limit {...}, batch_size."""
        out = sim.outbox
        if "drop_fraction" in body:
            out.drop_fraction = float(body["drop_fraction"])
        if "retry_delays" in body:
            out.retry_delays = tuple(float(d) for d in body["retry_delays"])
        if "batch_size" in body:
            out.batch_size = int(body["batch_size"])
        if "early_seconds" in body:
            sim.early_seconds = float(body["early_seconds"])
        if "search_lag" in body:
            sim.search_lag = float(body["search_lag"])
        for key, attr in (("rate_limit", "window"), ("search_rate_limit", "search_window")):
            if key in body:
                window = getattr(sim, attr)
                window.limit = int(body[key]["requests"])
                window.seconds = float(body[key]["per_seconds"])
                window.times.clear()
        return {"ok": True}

    @router.post("/fail")
    async def fail(body: dict[str, Any]) -> dict[str, Any]:
        """The next `count` vendor calls answer `status` (default 502); with
        `after_commit` the call is carried out first and only its answer is lost."""
        sim.fail = {"count": int(body.get("count", 1)), **body}
        return sim.fail

    @router.post("/deals/{deal_id}/move")
    async def move(deal_id: str, request: Request) -> dict[str, Any]:
        """A salesperson drags the deal to `stage` (optionally `pipeline`, `amount`,
        `closed_lost_reason`). With `early_seconds` set, the notification leaves first and
        the record changes that much later."""
        body = await request.json()
        record = sim.account.objects["deals"].get(deal_id)
        if record is None:
            raise HTTPException(404, "no such deal")
        props = {"dealstage": body["stage"]}
        for key in ("pipeline", "amount", "closed_lost_reason"):
            if body.get(key) is not None:
                props[key] = str(body[key])
        bad = sim.check_stage(record, props)
        if bad:
            raise HTTPException(400, "not a stage of that pipeline")
        early = float(body.get("early_seconds", sim.early_seconds))
        if early <= 0:
            sim.write("deals", record, props, "CRM_UI")
            return _full(record, sim)
        for name in ("dealstage", "amount", "closed_lost_reason"):
            if name in props and props[name] != record.properties.get(name):
                sim.outbox.event("deal.propertyChange", deal_id, name, props[name], "CRM_UI")
        loop = asyncio.get_running_loop()
        loop.call_later(early, lambda: sim.account.update(record, dict(props), datetime.now(UTC)))
        return _full(record, sim)

    @router.get("/deals")
    async def deals() -> list[dict[str, Any]]:
        return [_full(r, sim) for r in sim.account.objects["deals"].values()]

    @router.get("/deals/{deal_id}")
    async def deal(deal_id: str) -> dict[str, Any]:
        record = sim.account.objects["deals"].get(deal_id)
        if record is None:
            raise HTTPException(404, "no such deal")
        return _full(record, sim)

    @router.get("/state")
    async def state() -> dict[str, Any]:
        objects = sim.account.objects
        return {
            "contacts": [_full(r, sim) for r in objects["contacts"].values()],
            "notes": [_full(r, sim) for r in objects["notes"].values()],
            "deals_created_per_lead": dict(sim.account.created_per_lead),
            "notifications": dict(sim.outbox.stats),
            "requests": sim.requests,
            "limited": sim.limited,
        }

    return router
