"""The Kommo simulator's routes: the API v4 calls (vendor surface) and `/_sim/` (control).

Each vendor route cites the reference page whose shapes it follows, under
https://developers.kommo.com/reference/.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.crm_sim.kommo_account import (
    CONTACT_FIELDS,
    LEAD_FIELDS,
    LEAD_KEYS,
    Invalid,
    Json,
    hal,
    invalid,
)

if TYPE_CHECKING:
    from tests.crm_sim.kommo import KommoSim

MAX_COMPLEX = 50  # leads per complex request (reference/complex-leads)
MAX_LIMIT = 250  # entities per page (reference/leads-list)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise Invalid("0", [("InvalidJson", "", "Request body is not valid JSON.")]) from exc


def add_vendor_routes(app: FastAPI, sim: KommoSim) -> None:
    acc = sim.account

    @app.exception_handler(Invalid)
    async def _invalid(_: Request, exc: Invalid) -> JSONResponse:
        return invalid(exc)

    def create_lead(i: int, item: Any) -> Json:
        rid = str(item.get("request_id", i)) if isinstance(item, dict) else str(i)
        if not isinstance(item, dict):
            raise Invalid(rid, [("InvalidType", str(i), "This value should be of type object.")])
        unknown = sorted(set(item) - LEAD_KEYS)
        if unknown:
            raise Invalid(
                rid, [("UnknownField", f"{i}.{unknown[0]}", "This field was not expected.")]
            )
        embedded = item.get("_embedded") or {}
        contacts, companies = embedded.get("contacts") or [], embedded.get("companies") or []
        for key, items in (("contacts", contacts), ("companies", companies)):
            if len(items) > 1:
                raise Invalid(
                    rid, [("TooManyEntities", f"_embedded.{key}", "No more than one is allowed.")]
                )
        pipeline_id, status_id = acc.check_stage(
            rid, item.get("pipeline_id"), item.get("status_id")
        )
        acc.check_user(rid, "responsible_user_id", item.get("responsible_user_id"))
        lead_fields = acc.custom_fields(
            rid, "custom_fields_values", item.get("custom_fields_values", []), LEAD_FIELDS
        )
        contact_fields = (
            acc.custom_fields(
                rid,
                "_embedded.contacts.0.custom_fields_values",
                contacts[0].get("custom_fields_values", []),
                CONTACT_FIELDS,
            )
            if contacts
            else {}
        )
        now = int(time.time())
        owner = item.get("responsible_user_id") or 1
        lead: Json = {
            "id": acc.new_id(),
            "name": item.get("name") or f"Lead #{acc.next_id}",
            "price": item.get("price") or 0,
            "responsible_user_id": owner,
            "group_id": 0,
            "status_id": status_id,
            "pipeline_id": pipeline_id,
            "loss_reason_id": None,
            "created_by": 0,
            "updated_by": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "closest_task_at": None,
            "is_deleted": False,
            "custom_fields_values": None,
            "score": None,
            "account_id": acc.account_id,
            "labor_cost": None,
            "_tags": [],
            "_contacts": [],
            "_companies": [],
        }
        acc.apply_fields(lead, lead_fields, LEAD_FIELDS)
        for tag in embedded.get("tags") or []:
            name = str(tag.get("name", "")) if isinstance(tag, dict) else ""
            if name:
                acc.tags.setdefault(name, len(acc.tags) + 1)
                lead["_tags"].append(name)
        contact_id = company_id = None
        if contacts:
            c = contacts[0]
            contact_id = c.get("id") if c.get("id") in acc.contacts else acc.new_id()
            if contact_id not in acc.contacts:
                contact = {
                    "id": contact_id,
                    "name": c.get("name") or "",
                    "first_name": c.get("first_name", ""),
                    "last_name": c.get("last_name", ""),
                    "responsible_user_id": c.get("responsible_user_id") or owner,
                    "created_at": now,
                    "updated_at": now,
                    "custom_fields_values": None,
                    "account_id": acc.account_id,
                }
                acc.apply_fields(contact, contact_fields, CONTACT_FIELDS)
                acc.contacts[contact_id] = contact
            lead["_contacts"].append(contact_id)
        if companies:
            company_id = acc.new_id()
            acc.companies[company_id] = {
                "id": company_id,
                "name": companies[0].get("name", ""),
                "created_at": now,
            }
            lead["_companies"].append(company_id)
        acc.leads[lead["id"]] = lead
        sim.notify("add", lead)
        return {
            "id": lead["id"],
            "contact_id": contact_id,
            "company_id": company_id,
            "request_id": [rid],
            "merged": False,
        }

    @app.post("/api/v4/leads/complex")
    async def complex_leads(request: Request) -> Response:  # reference/complex-leads
        items = await _json(request)
        if not isinstance(items, list) or not items:
            raise Invalid("0", [("InvalidType", "", "This value should be a non-empty array.")])
        if len(items) > MAX_COMPLEX:
            raise Invalid(
                "0", [("TooManyEntities", "", f"No more than {MAX_COMPLEX} leads per request.")]
            )
        return hal([create_lead(i, item) for i, item in enumerate(items)])

    def update_lead(lead_id: Any, body: Any, rid: str) -> Json:
        if not isinstance(body, dict):
            raise Invalid(rid, [("InvalidType", "", "This value should be of type object.")])
        lead = acc.leads.get(lead_id) if isinstance(lead_id, int) else None
        if lead is None:
            raise Invalid(rid, [("NotFound", "id", "Entity not found.")])
        changes: Json = {}
        if "pipeline_id" in body or "status_id" in body:
            p, s = acc.check_stage(
                rid, body.get("pipeline_id", lead["pipeline_id"]), body.get("status_id")
            )
            changes |= {"pipeline_id": p, "status_id": s}
        if "responsible_user_id" in body:
            acc.check_user(rid, "responsible_user_id", body["responsible_user_id"])
        for key in ("name", "price", "responsible_user_id", "loss_reason_id"):
            if key in body:
                changes[key] = body[key]
        if "custom_fields_values" in body:
            fields = acc.custom_fields(
                rid, "custom_fields_values", body["custom_fields_values"], LEAD_FIELDS
            )
            acc.apply_fields(lead, fields, LEAD_FIELDS)
        old_status, old_pipeline = sim.change(lead, changes)
        if (old_status, old_pipeline) != (lead["status_id"], lead["pipeline_id"]):
            sim.notify("status", lead, old_status, old_pipeline)
        sim.notify("update", lead)
        return {
            "id": lead["id"],
            "updated_at": lead["updated_at"],
            "request_id": rid,
            "_links": acc.link(f"leads/{lead['id']}"),
        }

    @app.patch("/api/v4/leads/{lead_id}")
    async def patch_lead(lead_id: int, request: Request) -> Response:  # reference/update-lead
        answer = update_lead(lead_id, await _json(request), "0")
        answer.pop("request_id")
        return hal(answer)

    @app.patch("/api/v4/leads")
    async def patch_leads(request: Request) -> Response:  # reference/update-leads
        items = await _json(request)
        if not isinstance(items, list) or not items:
            raise Invalid("0", [("InvalidType", "", "This value should be a non-empty array.")])
        done = [
            update_lead(it.get("id") if isinstance(it, dict) else None, it, str(i))
            for i, it in enumerate(items)
        ]
        return hal({"_links": acc.link("leads"), "_embedded": {"leads": done}})

    @app.get("/api/v4/leads/loss_reasons")
    async def loss_reasons() -> Response:  # reference/loss-reasons-list
        reasons = [
            {
                "id": i,
                "name": n,
                "sort": 1,
                "created_at": 0,
                "updated_at": 0,
                "_links": acc.link(f"leads/loss_reasons/{i}"),
            }
            for i, n in acc.loss_reasons.items()
        ]
        return hal(
            {
                "_page": 1,
                "_links": acc.link("leads/loss_reasons"),
                "_embedded": {"loss_reasons": reasons},
            }
        )

    @app.get("/api/v4/leads/pipelines/{pipeline_id}")
    async def pipeline(pipeline_id: int) -> Response:  # reference/get-pipeline
        p = acc.pipelines.get(pipeline_id)
        if p is None:
            return Response(status_code=204)
        statuses = [
            {
                **s,
                "account_id": acc.account_id,
                "_links": acc.link(f"leads/pipelines/{pipeline_id}/statuses/{s['id']}"),
            }
            for s in p["statuses"]
        ]
        body = {k: v for k, v in p.items() if k != "statuses"}
        body |= {"is_unsorted_on": False, "is_archive": False, "account_id": acc.account_id}
        return hal(
            body
            | {
                "_links": acc.link(f"leads/pipelines/{pipeline_id}"),
                "_embedded": {"statuses": statuses},
            }
        )

    @app.get("/api/v4/leads/{lead_id}")
    async def get_lead(
        lead_id: int, request: Request
    ) -> Response:  # reference/getting-a-lead-by-its-id
        lead = acc.leads.get(lead_id)
        if lead is None:
            return Response(status_code=204)
        return hal(acc.lead_view(lead, _with(request)))

    @app.get("/api/v4/leads")
    async def list_leads(request: Request) -> Response:  # reference/leads-list
        q = request.query_params
        try:
            page, limit = int(q.get("page", "1")), int(q.get("limit", "50"))
            since = int(q["filter[updated_at][from]"]) if "filter[updated_at][from]" in q else None
            until = int(q["filter[updated_at][to]"]) if "filter[updated_at][to]" in q else None
            pipelines = {
                int(v)
                for k, v in q.multi_items()
                if k in ("filter[pipeline_id]", "filter[pipeline_id][]")
            }
        except ValueError:
            raise Invalid(
                "0", [("InvalidType", "filter", "This value should be of type int.")]
            ) from None
        if page < 1 or not 1 <= limit <= MAX_LIMIT:
            raise Invalid(
                "0", [("OutOfRange", "limit" if page >= 1 else "page", f"limit is 1..{MAX_LIMIT}.")]
            )
        leads = sorted(acc.leads.values(), key=lambda lead: lead["id"])
        if since is not None:
            leads = [x for x in leads if x["updated_at"] >= since]
        if until is not None:
            leads = [x for x in leads if x["updated_at"] <= until]
        if pipelines:
            leads = [x for x in leads if x["pipeline_id"] in pipelines]
        if q.get("query"):
            leads = [x for x in leads if acc.matches_query(x, q["query"])]
        chunk = leads[(page - 1) * limit : page * limit]
        if not chunk:
            return Response(status_code=204)
        base = f"https://{acc.subdomain}.kommo.com/api/v4/leads?"
        rest = [(k, v) for k, v in q.multi_items() if k != "page"]
        links: Json = {"self": {"href": base + urlencode([*rest, ("page", page)])}}
        if page * limit < len(leads):
            links["next"] = {"href": base + urlencode([*rest, ("page", page + 1)])}
        with_ = _with(request)
        return hal(
            {
                "_page": page,
                "_links": links,
                "_embedded": {"leads": [acc.lead_view(x, with_) for x in chunk]},
            }
        )

    @app.post("/api/v4/leads/{lead_id}/notes")
    async def add_notes(lead_id: int, request: Request) -> Response:  # reference/add-notes
        items = await _json(request)
        if lead_id not in acc.leads:
            raise Invalid("0", [("NotFound", "entity_id", "Entity not found.")])
        if not isinstance(items, list) or not items:
            raise Invalid("0", [("InvalidType", "", "This value should be a non-empty array.")])
        made = []
        for i, item in enumerate(items):
            text = (item.get("params") or {}).get("text") if isinstance(item, dict) else None
            if (
                not isinstance(item, dict)
                or item.get("note_type") != "common"
                or not isinstance(text, str)
            ):
                raise Invalid(
                    str(i),
                    [
                        (
                            "NotSupportedChoice",
                            f"{i}.note_type",
                            "The value you selected is not a valid choice.",
                        )
                    ],
                )
            note = {
                "id": acc.new_id(),
                "entity_id": lead_id,
                "note_type": "common",
                "params": {"text": text},
                "created_at": int(time.time()),
            }
            acc.notes.setdefault(lead_id, []).append(note)
            made.append(
                {
                    "id": note["id"],
                    "entity_id": lead_id,
                    "request_id": str(i),
                    "_links": acc.link(f"leads/notes/{note['id']}"),
                }
            )
        return hal({"_links": acc.link(f"leads/{lead_id}/notes"), "_embedded": {"notes": made}})

    @app.get("/api/v4/contacts/{contact_id}")
    async def get_contact(contact_id: int) -> Response:  # reference/get-contact-by-id
        contact = acc.contacts.get(contact_id)
        if contact is None:
            return Response(status_code=204)
        return hal(
            contact
            | {
                "_links": acc.link(f"contacts/{contact_id}"),
                "_embedded": {"tags": [], "companies": []},
            }
        )

    @app.patch("/api/v4/contacts/{contact_id}")
    async def patch_contact(
        contact_id: int, request: Request
    ) -> Response:  # reference/update-contact
        body = await _json(request)
        contact = acc.contacts.get(contact_id)
        if contact is None:
            raise Invalid("0", [("NotFound", "id", "Entity not found.")])
        if not isinstance(body, dict):
            raise Invalid("0", [("InvalidType", "", "This value should be of type object.")])
        for key in ("name", "first_name", "last_name"):
            if key in body:
                contact[key] = body[key]
        if "custom_fields_values" in body:
            fields = acc.custom_fields(
                "0", "custom_fields_values", body["custom_fields_values"], CONTACT_FIELDS
            )
            acc.apply_fields(contact, fields, CONTACT_FIELDS)
        acc.touch(contact)
        return hal(
            {
                "id": contact_id,
                "updated_at": contact["updated_at"],
                "_links": acc.link(f"contacts/{contact_id}"),
            }
        )


def _with(request: Request) -> set[str]:
    return {w.strip() for w in request.query_params.get("with", "").split(",") if w.strip()}
