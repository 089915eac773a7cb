"""The Bitrix24 simulator's portal: its deals, contacts, companies, funnels and the REST
methods a connector calls, answering as the vendor documents them.

Facts, from the vendor's documentation (github.com/bitrix24/b24restdocs, apidocs.bitrix24.com):
- crm.deal.add/update/get/list (api-reference/crm/deals/crm-deal-*.md): `fields` (the
  examples send `FIELDS`), an unknown field is ignored, `result` is the new id / `true` /
  the deal with every value a string; a missing deal is HTTP 400
  `{"error": "", "error_description": "Not found"}`; list pages are always 50 records,
  `start` = (N-1)*50, answers carry `total` and `next`; filter keys take the prefixes
  `>=`, `>`, `<=`, `<`, `@`, `!@`, `!=`, `!`, `=`.
- STAGE_SEMANTIC_ID is read-only, P/S/F (crm-deal-get.md); the default funnel's stages and
  their SEMANTICS are crm.status.list's example (api-reference/crm/status/crm-status-list.md);
  other funnels prefix `C{id}:` and list under `DEAL_STAGE_{id}`.
- Multi-fields PHONE/EMAIL (api-reference/crm/data-types.md#crm_multifield): items
  `{ID, VALUE_TYPE, VALUE, TYPE_ID}`; on update an item without ID is added, an item with
  ID and `DELETE=Y`, an empty or no VALUE is removed, else overwritten
  (api-reference/crm/contacts/crm-contact-update.md, "Working with Multiple Fields").
- crm.timeline.comment.add takes only a lowercase `fields` (crm version 23.100.0 on);
  errors `NOT_FOUND`, `INVALID_ARG_VALUE`
  (api-reference/crm/timeline/comments/crm-timeline-comment-add.md).
- Dates are ISO 8601 with the portal's offset and whole seconds (`2024-08-30T14:29:00+02:00`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

PAGE = 50
PORTAL_TZ = timezone(timedelta(hours=3))
BASE_STAGES = (
    ("NEW", "New", None),
    ("PREPARATION", "Document preparation", None),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", None),
    ("EXECUTING", "In progress", None),
    ("FINAL_INVOICE", "Final invoice", None),
    ("WON", "Deal successful", "S"),
    ("LOSE", "Deal failed", "F"),
    ("APOLOGY", "Failure reason analysis", "F"),
)
_EXTRA = {None: "process", "S": "success", "F": "failure"}
# "ids are cut at 21 characters" (crm-reference.md; unconfirmed at a vendor page).
STAGE_ID_MAX = 21
CURRENCIES = ("RUB", "USD", "EUR", "KZT", "BYN", "UAH")
MULTI = ("PHONE", "EMAIL", "WEB", "IM")
READ_ONLY = {"ID", "DATE_CREATE", "DATE_MODIFY", "STAGE_SEMANTIC_ID", "CREATED_BY_ID"}
NUMERIC = {"ID", "CATEGORY_ID", "ASSIGNED_BY_ID", "CONTACT_ID", "COMPANY_ID", "OPPORTUNITY"}
DATES = {"DATE_CREATE", "DATE_MODIFY", "BEGINDATE", "CLOSEDATE", "MOVED_TIME"}


class B24Error(Exception):
    """An error answer: HTTP status and the documented `{"error", "error_description"}`."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


@dataclass
class Listed:
    """A list method's page: `result`, `total` and, when more remain, `next`."""

    items: list[dict[str, Any]]
    total: int
    next: int | None


def stamp(moment: datetime) -> str:
    return moment.astimezone(PORTAL_TZ).replace(microsecond=0).isoformat()


def param(params: dict[str, Any], name: str) -> Any:
    """crm.deal.* and crm.contact.* read `fields` or `FIELDS` (the docs show both)."""
    for key in (name, name.upper(), name.capitalize()):
        if key in params:
            return params[key]
    return None


def _as_id(value: Any) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise B24Error(400, "", "ID is not defined or invalid")
    return number


def _fields(params: dict[str, Any], name: str = "fields") -> dict[str, Any]:
    value = param(params, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise B24Error(400, "", f"Parameter '{name}' must be array.")
    return value


@dataclass
class Portal:
    """One Bitrix24 account: its records, in memory, and who may call it."""

    domain: str = "leadflow-sim.bitrix24.ru"
    member_id: str = "5f1c0a9e7b3d4c2a8e6f1b0d9c7a5e3f"
    user_id: int = 1
    code: str = "simwebhookcode0001"
    application_token: str = "simapplicationtoken00000000000001"
    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    categories: dict[int, str] = field(default_factory=lambda: {0: "General"})
    # Fired on every add and update (Bitrix24 raises events for REST changes too).
    on_change: Callable[[str, int], None] = lambda event, deal_id: None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _ids: int = 0

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # ---- funnels and stages
    def stages(self, category: int) -> list[dict[str, Any]]:
        entity = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        out = []
        for i, (base, name, semantics) in enumerate(BASE_STAGES):
            status = base if category == 0 else f"C{category}:{base}"[:STAGE_ID_MAX]
            color = "#39A8EF"
            out.append(
                {
                    "ID": str(100 + category * 20 + i),
                    "ENTITY_ID": entity,
                    "STATUS_ID": status,
                    "NAME": name,
                    "NAME_INIT": name if semantics else "",
                    "SORT": str((i + 1) * 10),
                    "SYSTEM": "Y" if base in ("NEW", "WON", "LOSE") else "N",
                    "CATEGORY_ID": None if category == 0 else str(category),
                    "COLOR": color,
                    "SEMANTICS": semantics,
                    "EXTRA": {"SEMANTICS": _EXTRA[semantics], "COLOR": color},
                }
            )
        return out

    def _stage(self, category: int, stage_id: Any) -> dict[str, Any]:
        stages = self.stages(category)
        if stage_id in (None, ""):
            return stages[0]
        for stage in stages:
            if stage["STATUS_ID"] == stage_id:
                return stage
        raise B24Error(400, "", 'Invalid value for the "Stage" field')

    # ---- deals
    def _write_deal(self, deal: dict[str, Any], fields: dict[str, Any], *, new: bool) -> None:
        now = stamp(self.clock())
        category = int(deal["CATEGORY_ID"])
        for key, value in fields.items():
            key = str(key).upper()
            if key in READ_ONLY or (key == "CATEGORY_ID" and not new) or key == "CONTACT_IDS":
                continue
            if key == "CURRENCY_ID" and value not in CURRENCIES:
                raise B24Error(400, "", 'Invalid value for the "Currency" field')
            if key == "OPPORTUNITY":
                try:
                    value = f"{Decimal(str(value or 0)):.2f}"
                except InvalidOperation:
                    raise B24Error(400, "", 'Invalid value for the "Amount" field') from None
            if key == "STAGE_ID":
                stage = self._stage(category, value)
                deal["STAGE_SEMANTIC_ID"] = stage["SEMANTICS"] or "P"
                deal["CLOSED"] = "N" if stage["SEMANTICS"] is None else "Y"
                deal["MOVED_TIME"] = now
                value = stage["STATUS_ID"]
            deal[key] = None if value is None else value if isinstance(value, list) else str(value)
        contact_ids = param(fields, "CONTACT_IDS")
        if isinstance(contact_ids, list) and contact_ids:
            deal["CONTACT_ID"] = str(contact_ids[0])
        deal["DATE_MODIFY"] = now

    def deal_add(self, params: dict[str, Any]) -> int:
        fields = _fields(params)
        category = int(param(fields, "CATEGORY_ID") or 0)
        if category not in self.categories:
            raise B24Error(400, "", 'Invalid value for the "Funnel" field')
        deal_id = self._next_id()
        stage = self._stage(category, fields.get("STAGE_ID"))
        deal: dict[str, Any] = {
            "ID": str(deal_id),
            "TITLE": f"Deal #{deal_id}",
            "CATEGORY_ID": str(category),
            "CURRENCY_ID": "RUB",
            "OPPORTUNITY": "0.00",
            "ASSIGNED_BY_ID": str(self.user_id),
            "CREATED_BY_ID": str(self.user_id),
            "CONTACT_ID": None,
            "COMPANY_ID": None,
            "COMMENTS": None,
            "SOURCE_ID": None,
            "SOURCE_DESCRIPTION": None,
            "ORIGINATOR_ID": None,
            "ORIGIN_ID": None,
            "DATE_CREATE": stamp(self.clock()),
            **{f"UTM_{k}": None for k in ("SOURCE", "MEDIUM", "CAMPAIGN", "CONTENT", "TERM")},
        }
        self._write_deal(deal, {**fields, "STAGE_ID": stage["STATUS_ID"]}, new=True)
        self.deals[deal_id] = deal
        self.on_change("ONCRMDEALADD", deal_id)
        return deal_id

    def deal_get(self, params: dict[str, Any]) -> dict[str, Any]:
        deal = self.deals.get(_as_id(param(params, "id")))
        if deal is None:
            raise B24Error(400, "", "Not found")
        return dict(deal)

    def deal_update(self, params: dict[str, Any]) -> bool:
        deal_id = _as_id(param(params, "id"))
        if deal_id not in self.deals:
            raise B24Error(400, "", "Not found")
        self._write_deal(self.deals[deal_id], _fields(params), new=False)
        self.on_change("ONCRMDEALUPDATE", deal_id)
        return True

    def deal_list(self, params: dict[str, Any]) -> Listed:
        flt = param(params, "filter") or {}
        order = param(params, "order") or {"ID": "ASC"}
        select = param(params, "select") or ["*", "UF_*"]
        if not isinstance(flt, dict) or not isinstance(order, dict):
            raise B24Error(400, "", "Parameter 'filter' must be array.")
        rows = [d for d in self.deals.values() if all(_match(d, k, v) for k, v in flt.items())]
        for key, direction in reversed(list(order.items())):
            key = str(key).upper()
            rows.sort(key=lambda d: _sort_key(d, key), reverse=str(direction).upper() == "DESC")
        start = max(0, int(param(params, "start") or 0))
        page = rows[start : start + PAGE]
        nxt = start + PAGE if start + PAGE < len(rows) else None
        return Listed([_select(d, select) for d in page], len(rows), nxt)

    # ---- contacts and companies
    def _write_multi(self, record: dict[str, Any], key: str, items: Any) -> None:
        current: list[dict[str, Any]] = record.setdefault(key, [])
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if "ID" not in item:
                if item.get("VALUE"):
                    current.append(
                        {
                            "ID": str(self._next_id()),
                            "VALUE_TYPE": str(item.get("VALUE_TYPE") or "WORK"),
                            "VALUE": str(item["VALUE"]),
                            "TYPE_ID": key,
                        }
                    )
                continue
            for existing in list(current):
                if existing["ID"] == str(item["ID"]):
                    if item.get("DELETE") == "Y" or not item.get("VALUE"):
                        current.remove(existing)
                    else:
                        existing["VALUE"] = str(item["VALUE"])
                        existing["VALUE_TYPE"] = str(item.get("VALUE_TYPE") or "WORK")
        if not current:
            del record[key]
        record[f"HAS_{key}"] = "Y" if current else "N"

    def _write_person(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            key = str(key).upper()
            if key in READ_ONLY:
                continue
            if key in MULTI:
                self._write_multi(record, key, value)
            else:
                record[key] = None if value is None else str(value)
        record["DATE_MODIFY"] = stamp(self.clock())

    def contact_add(self, params: dict[str, Any]) -> int:
        contact_id = self._next_id()
        now = stamp(self.clock())
        contact: dict[str, Any] = {"ID": str(contact_id), "NAME": None, "LAST_NAME": None}
        contact.update(ASSIGNED_BY_ID=str(self.user_id), DATE_CREATE=now, COMPANY_ID=None)
        contact.update(HAS_PHONE="N", HAS_EMAIL="N")
        self._write_person(contact, _fields(params))
        self.contacts[contact_id] = contact
        return contact_id

    def contact_get(self, params: dict[str, Any]) -> dict[str, Any]:
        contact = self.contacts.get(_as_id(param(params, "id")))
        if contact is None:
            raise B24Error(400, "", "Not found")
        return {k: [dict(i) for i in v] if isinstance(v, list) else v for k, v in contact.items()}

    def contact_update(self, params: dict[str, Any]) -> bool:
        contact = self.contacts.get(_as_id(param(params, "id")))
        if contact is None:
            raise B24Error(400, "", "Not found")
        self._write_person(contact, _fields(params))
        return True

    def company_add(self, params: dict[str, Any]) -> int:
        company_id = self._next_id()
        company: dict[str, Any] = {"ID": str(company_id), "TITLE": f"Company #{company_id}"}
        self._write_person(company, _fields(params))
        self.companies[company_id] = company
        return company_id

    def comment_add(self, params: dict[str, Any]) -> int:
        fields = params.get("fields")  # lowercase only, as documented
        if not isinstance(fields, dict):
            raise B24Error(400, "ERROR_CORE", 'Required parameter "fields" is missing')
        entity_type = str(fields.get("ENTITY_TYPE") or "").lower()
        owners = {"deal": self.deals, "contact": self.contacts, "company": self.companies}
        try:
            owner_id = int(str(fields.get("ENTITY_ID")))
        except ValueError:
            owner_id = 0
        if entity_type not in owners or owner_id not in owners[entity_type]:
            raise B24Error(400, "NOT_FOUND", "Not found.")
        if not str(fields.get("COMMENT") or "").strip():
            raise B24Error(400, "INVALID_ARG_VALUE", "Empty comment.")
        comment_id = self._next_id()
        self.comments[comment_id] = {
            "ID": str(comment_id),
            "ENTITY_TYPE": entity_type,
            "ENTITY_ID": owner_id,
            "COMMENT": str(fields["COMMENT"]),
            "CREATED": stamp(self.clock()),
        }
        return comment_id

    def status_list(self, params: dict[str, Any]) -> Listed:
        flt = param(params, "filter") or {}
        rows = [s for c in self.categories for s in self.stages(c)]
        rows = [s for s in rows if all(_match(s, k, v) for k, v in flt.items())]
        return Listed(rows, len(rows), None)

    def methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "crm.deal.add": self.deal_add,
            "crm.deal.get": self.deal_get,
            "crm.deal.update": self.deal_update,
            "crm.deal.list": self.deal_list,
            "crm.contact.add": self.contact_add,
            "crm.contact.get": self.contact_get,
            "crm.contact.update": self.contact_update,
            "crm.company.add": self.company_add,
            "crm.timeline.comment.add": self.comment_add,
            "crm.status.list": self.status_list,
        }


_OPS = (">=", "<=", "!@", "!=", ">", "<", "@", "!", "=")


def _comparable(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in DATES:
        moment = datetime.fromisoformat(str(value))
        return moment if moment.tzinfo else moment.replace(tzinfo=PORTAL_TZ)
    if key in NUMERIC:
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return str(value)


def _match(record: dict[str, Any], key: str, wanted: Any) -> bool:
    op = next((o for o in _OPS if key.startswith(o)), "=")
    name = key[len(op) :].upper() if key.startswith(op) else key.upper()
    have = _comparable(name, record.get(name))
    if op in ("@", "!@"):
        values = wanted if isinstance(wanted, list) else [wanted]
        inside = have in {_comparable(name, v) for v in values}
        return inside if op == "@" else not inside
    want = _comparable(name, wanted)
    if op in ("!", "!="):
        return bool(have != want)
    if op == "=":
        return bool(have == want)
    if have is None or want is None:
        return False
    checks = {">": have > want, ">=": have >= want, "<": have < want, "<=": have <= want}
    return bool(checks[op])


def _sort_key(record: dict[str, Any], key: str) -> tuple[int, Any]:
    value = _comparable(key, record.get(key))
    return (0, "") if value is None else (1, value)


def _select(record: dict[str, Any], select: list[Any]) -> dict[str, Any]:
    names = {str(s).upper() for s in select}
    keep = {"ID"}
    for key in record:
        is_uf = key.startswith("UF_")
        if key in names or ("*" in names and not is_uf) or ("UF_*" in names and is_uf):
            keep.add(key)
    return {k: v for k, v in record.items() if k in keep}
