"""The Kommo simulator's account: pipelines, custom fields, leads, contacts and companies
in memory, and the vendor's validation of what a caller writes.

Shapes follow Kommo's API v4 reference (https://developers.kommo.com/reference/) and the
vendor's PHP SDK (github.com/amocrm/amocrm-api-php, `src/AmoCRM/Models/LeadModel.php`):
times are Unix seconds, `custom_fields_values` is null when empty, `_embedded.loss_reason`
is a one-element array. A validation failure is the documented 400 body
(https://www.amocrm.com/developers/content/api/errors/):
`{"validation-errors": [{"request_id", "errors": [{"code", "path", "detail"}]}], ...}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

WON, LOST = 142, 143
MAIN_PIPELINE, OTHER_PIPELINE = 7000, 8000
# The custom field the simulated account keeps Leadflow's lead id in (a text field with
# a code, as an administrator would create it for the integration).
LEAD_ID_FIELD_ID, LEAD_ID_FIELD_CODE = 900001, "LEADFLOW_ID"

Json = dict[str, Any]
# What a lead in `POST /api/v4/leads/complex` may hold (reference/complex-leads).
LEAD_KEYS = {
    "name",
    "price",
    "status_id",
    "pipeline_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "closed_at",
    "loss_reason_id",
    "responsible_user_id",
    "custom_fields_values",
    "tags_to_add",
    "tags_to_delete",
    "_embedded",
    "request_id",
}


def problem(status: int, title: str, detail: str) -> JSONResponse:
    body = {
        "title": title,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def hal(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type="application/hal+json")


class Invalid(Exception):
    """A 400 `validation-errors` answer: (code, path, detail) per error."""

    def __init__(self, request_id: str, errors: list[tuple[str, str, str]]) -> None:
        super().__init__(errors)
        self.request_id = request_id
        self.errors = errors

    def body(self) -> Json:
        errs = [{"code": c, "path": p, "detail": d} for c, p, d in self.errors]
        return {
            "validation-errors": [{"request_id": self.request_id, "errors": errs}],
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Request validation failed",
        }


def invalid(exc: Invalid) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=400, media_type="application/problem+json")


def _status(pipeline: int, sid: int, name: str, sort: int, editable: bool = True) -> Json:
    return {
        "id": sid,
        "name": name,
        "sort": sort,
        "is_editable": editable,
        "pipeline_id": pipeline,
        "color": "#99ccff",
        "type": 0,
    }


def _pipeline(pid: int, name: str, main: bool, stages: list[tuple[int, str]]) -> Json:
    statuses = [_status(pid, sid, n, 10 * (i + 1)) for i, (sid, n) in enumerate(stages)]
    # Every pipeline ends in the two system statuses, which repeat across pipelines
    # (https://developers.kommo.com/reference/leads-pipelines-and-stages).
    statuses += [
        _status(pid, WON, "Closed - won", 10000, False),
        _status(pid, LOST, "Closed - lost", 11000, False),
    ]
    return {"id": pid, "name": name, "sort": 1, "is_main": main, "statuses": statuses}


# field_id -> (code, type, name); PHONE/EMAIL are the contacts' predefined multitext fields,
# the UTM_* ones the leads' tracking_data fields (reference/custom-fields).
LEAD_FIELDS: dict[int, tuple[str | None, str, str]] = {
    LEAD_ID_FIELD_ID: (LEAD_ID_FIELD_CODE, "text", "Leadflow lead id"),
    900002: (None, "text", "Leadflow route"),
    900011: ("UTM_SOURCE", "tracking_data", "utm_source"),
    900012: ("UTM_MEDIUM", "tracking_data", "utm_medium"),
    900013: ("UTM_CAMPAIGN", "tracking_data", "utm_campaign"),
    900014: ("UTM_CONTENT", "tracking_data", "utm_content"),
    900015: ("UTM_TERM", "tracking_data", "utm_term"),
}
CONTACT_FIELDS: dict[int, tuple[str | None, str, str]] = {
    500001: ("PHONE", "multitext", "Phone"),
    500002: ("EMAIL", "multitext", "Email"),
    500003: ("POSITION", "text", "Position"),
}
ENUMS = {
    "PHONE": {"WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"},
    "EMAIL": {"WORK", "PRIV", "OTHER"},
}


@dataclass
class Account:
    account_id: int
    subdomain: str
    users: set[int] = field(default_factory=lambda: set(range(1, 101)))
    pipelines: dict[int, Json] = field(default_factory=dict)
    loss_reasons: dict[int, str] = field(
        default_factory=lambda: {11: "Too expensive", 12: "Chose a competitor", 13: "No budget"}
    )
    leads: dict[int, Json] = field(default_factory=dict)
    contacts: dict[int, Json] = field(default_factory=dict)
    companies: dict[int, Json] = field(default_factory=dict)
    notes: dict[int, list[Json]] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    next_id: int = 30_000_001

    def __post_init__(self) -> None:
        if not self.pipelines:
            self.pipelines = {
                MAIN_PIPELINE: _pipeline(
                    MAIN_PIPELINE,
                    "Sales",
                    True,
                    [
                        (70001, "Initial contact"),
                        (70002, "Qualified"),
                        (70003, "Demo held"),
                        (70004, "Proposal sent"),
                        (70005, "Contract sent"),
                    ],
                ),
                OTHER_PIPELINE: _pipeline(OTHER_PIPELINE, "Partners", False, [(80001, "New")]),
            }

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def link(self, path: str) -> Json:
        return {"self": {"href": f"https://{self.subdomain}.kommo.com/api/v4/{path}"}}

    # -- custom fields ------------------------------------------------------------------

    def custom_fields(
        self, rid: str, prefix: str, raw: Any, fields: dict[int, tuple[str | None, str, str]]
    ) -> dict[int, list[Json] | None]:
        """Validated `custom_fields_values` as field id -> values (None: clear the field)."""
        if not isinstance(raw, list):
            raise Invalid(rid, [("InvalidType", prefix, "This value should be of type array.")])
        by_code = {code: fid for fid, (code, _, _) in fields.items() if code}
        out: dict[int, list[Json] | None] = {}
        for i, entry in enumerate(raw):
            path = f"{prefix}.{i}"
            if not isinstance(entry, dict):
                raise Invalid(rid, [("InvalidType", path, "This value should be of type object.")])
            fid = entry.get("field_id")
            if fid is None and entry.get("field_code") in by_code:
                fid = by_code[entry["field_code"]]
            if fid not in fields:
                key = "field_id" if "field_id" in entry else "field_code"
                raise Invalid(
                    rid,
                    [
                        (
                            "NotSupportedChoice",
                            f"{path}.{key}",
                            "The value you selected is not a valid choice.",
                        )
                    ],
                )
            values = entry.get("values")
            if values is None:
                out[fid] = None
                continue
            if not isinstance(values, list) or not values:
                raise Invalid(
                    rid, [("InvalidType", f"{path}.values", "This value should not be blank.")]
                )
            code, kind, _ = fields[fid]
            kept: list[Json] = []
            for j, v in enumerate(values):
                vpath = f"{path}.values.{j}"
                if not isinstance(v, dict) or not isinstance(v.get("value"), str | int | float):
                    raise Invalid(
                        rid, [("InvalidType", f"{vpath}.value", "This value should not be blank.")]
                    )
                item: Json = {"value": v["value"]}
                if kind == "multitext":
                    enum = v.get("enum_code", "WORK")
                    if enum not in ENUMS.get(code or "", set()):
                        raise Invalid(
                            rid,
                            [
                                (
                                    "NotSupportedChoice",
                                    f"{vpath}.enum_code",
                                    "The value you selected is not a valid choice.",
                                )
                            ],
                        )
                    item["enum_code"] = enum
                    item["enum_id"] = 1000 + sorted(ENUMS[code or ""]).index(enum)
                kept.append(item)
            out[fid] = kept
        return out

    @staticmethod
    def apply_fields(
        entity: Json,
        changes: dict[int, list[Json] | None],
        fields: dict[int, tuple[str | None, str, str]],
    ) -> None:
        current = {e["field_id"]: e for e in entity.get("custom_fields_values") or []}
        for fid, values in changes.items():
            if values is None:
                current.pop(fid, None)
                continue
            code, kind, name = fields[fid]
            current[fid] = {
                "field_id": fid,
                "field_name": name,
                "field_code": code,
                "field_type": kind,
                "values": values,
            }
        entity["custom_fields_values"] = list(current.values()) or None

    # -- leads -----------------------------------------------------------------------------

    def check_stage(self, rid: str, pipeline_id: Any, status_id: Any) -> tuple[int, int]:
        if pipeline_id is None:
            pipeline_id = next(p for p, v in self.pipelines.items() if v["is_main"])
        if pipeline_id not in self.pipelines:
            raise Invalid(
                rid,
                [
                    (
                        "NotSupportedChoice",
                        "pipeline_id",
                        "The value you selected is not a valid choice.",
                    )
                ],
            )
        statuses = [s["id"] for s in self.pipelines[pipeline_id]["statuses"]]
        if status_id is None:
            status_id = statuses[0]
        if status_id not in statuses:
            raise Invalid(
                rid,
                [
                    (
                        "NotSupportedChoice",
                        "status_id",
                        "The value you selected is not a valid choice.",
                    )
                ],
            )
        return pipeline_id, status_id

    def check_user(self, rid: str, path: str, user: Any) -> None:
        if user is not None and user not in self.users:
            raise Invalid(
                rid, [("NotSupportedChoice", path, "The value you selected is not a valid choice.")]
            )

    def lead_view(self, lead: Json, with_: set[str]) -> Json:
        out = {k: v for k, v in lead.items() if not k.startswith("_")}
        embedded: Json = {
            "tags": [{"id": self.tags[t], "name": t, "color": None} for t in lead["_tags"]],
            "companies": [
                {"id": c, "_links": self.link(f"companies/{c}")} for c in lead["_companies"]
            ],
        }
        if "contacts" in with_:
            embedded["contacts"] = [
                {"id": c, "is_main": i == 0, "_links": self.link(f"contacts/{c}")}
                for i, c in enumerate(lead["_contacts"])
            ]
        reason = lead["loss_reason_id"]
        if "loss_reason" in with_ and reason in self.loss_reasons:
            embedded["loss_reason"] = [
                {
                    "id": reason,
                    "name": self.loss_reasons[reason],
                    "sort": 1,
                    "_links": self.link(f"leads/loss_reasons/{reason}"),
                }
            ]
        out["_links"] = self.link(f"leads/{lead['id']}")
        out["_embedded"] = embedded
        return out

    def lead_ids_for(self, leadflow_id: str) -> list[int]:
        """The records carrying `leadflow_id` in the lead id field (duplicate counting)."""
        found = []
        for lead in self.leads.values():
            for entry in lead["custom_fields_values"] or []:
                if (
                    entry["field_id"] == LEAD_ID_FIELD_ID
                    and entry["values"][0]["value"] == leadflow_id
                ):
                    found.append(lead["id"])
        return found

    def matches_query(self, lead: Json, query: str) -> bool:
        """`query` searches the filled fields of the entity (reference/leads-list)."""
        needle = query.casefold()
        texts = [lead["name"] or ""]
        for entry in lead["custom_fields_values"] or []:
            texts += [str(v["value"]) for v in entry["values"]]
        return any(needle in t.casefold() for t in texts)

    def touch(self, entity: Json) -> None:
        entity["updated_at"] = int(time.time())
