"""`POST /crm/v3/objects/{type}/search` of the HubSpot simulator.

As documented (developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm):
`filterGroups` are ORed, the filters inside one are ANDed (at most 5 groups, 25
filters); operators EQ, NEQ, LT, LTE, GT, GTE, IN, HAS_PROPERTY, NOT_HAS_PROPERTY; date
values in milliseconds since the epoch; `sorts` by one property; `limit` at most 200;
`after` the paging cursor; at most 10,000 results per query (a request past them is
refused with 400). Answer: `{"total", "results", "paging": {"next": {"after"}}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.responses import JSONResponse

from tests.crm_sim.hubspot_store import Account, Record, parse_iso

DATES = frozenset({"createdate", "hs_lastmodifieddate", "lastmodifieddate", "closedate"})
MAX_LIMIT, MAX_RESULTS = 200, 10_000


def _value(record: Record, prop: str) -> Any:
    raw = record.id if prop == "hs_object_id" else record.properties.get(prop)
    if raw is None:
        return None
    if prop in DATES:
        return int(parse_iso(raw).timestamp() * 1000)
    try:
        return float(raw)
    except ValueError:
        return raw


def _wanted(prop: str, text: Any) -> Any:
    if prop in DATES and isinstance(text, str) and not text.isdigit():
        return int(parse_iso(text).timestamp() * 1000)
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _match(record: Record, f: dict[str, Any]) -> bool:
    prop, op = f.get("propertyName", ""), f.get("operator", "EQ")
    have = _value(record, prop)
    if op == "HAS_PROPERTY":
        return have is not None
    if op == "NOT_HAS_PROPERTY":
        return have is None
    if op == "IN":
        return have in [_wanted(prop, v) for v in f.get("values", [])]
    want = _wanted(prop, f.get("value"))
    if have is None:
        return op == "NEQ"
    try:
        return {
            "EQ": have == want,
            "NEQ": have != want,
            "LT": have < want,
            "LTE": have <= want,
            "GT": have > want,
            "GTE": have >= want,
        }[op]
    except (KeyError, TypeError):
        return False


def search(
    account: Account,
    kind: str,
    body: dict[str, Any],
    lag: float,
    error: Callable[..., JSONResponse],
) -> JSONResponse:
    groups = body.get("filterGroups") or []
    limit = int(body.get("limit", 10))
    after = int(body.get("after") or 0)
    if len(groups) > 5 or sum(len(g.get("filters", [])) for g in groups) > 25:
        return error(400, "VALIDATION_ERROR", "too many filters")
    if not 0 < limit <= MAX_LIMIT:
        return error(400, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_LIMIT}")
    if after + limit > MAX_RESULTS:
        return error(400, "VALIDATION_ERROR", "The maximum number of results is 10,000")
    # The index trails the writes: what changed within `lag` seconds is not found yet.
    horizon = datetime.now(UTC) - timedelta(seconds=lag)
    found = [
        r
        for r in account.objects[kind].values()
        if r.updated <= horizon
        and (not groups or any(all(_match(r, f) for f in g.get("filters", [])) for g in groups))
    ]
    for sort in reversed(body.get("sorts") or []):
        prop = sort if isinstance(sort, str) else sort.get("propertyName", "")
        descending = isinstance(sort, dict) and sort.get("direction") == "DESCENDING"
        found.sort(
            key=lambda r: (_value(r, prop) is None, _value(r, prop) or 0), reverse=descending
        )
    names = body.get("properties") or None
    page = found[after : after + limit]
    answer: dict[str, Any] = {"total": len(found), "results": [r.view(names) for r in page]}
    if after + limit < len(found) and after + limit < MAX_RESULTS:
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return JSONResponse(answer)
