"""What the qualifier does to a stored lead: merge brief answers in, forget the person. Pure.

Brief answers are normalized the way intake normalizes a form (tokens in lower_snake,
countries upper-case, company sizes in the definition's buckets), so an answer given
on the phone matches the definition exactly like the same answer typed into a form.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.events import LeadSnapshot

# Fields a brief may set on the lead; any other answer is kept in `fields`.
BRIEF_FIELDS = (
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
    "region",
    "services",
    "budget",
    "timeframe",
    "role_in_purchase",
)
# What identifies the person, dropped on erasure (as intake drops it: name, e-mail, phone,
# company and job title together name a person; free text may too). What stays describes
# the need (size, industry, services, budget...) and where the lead came from (source,
# utm, pages without their query strings), so decisions, counts and dimensions survive.
PERSONAL_FIELDS = ("name", "email", "phone", "company", "job_title", "message")
_URL_FIELDS = ("page_url", "referrer")

_COMPANY_SIZES = ("1", "2-10", "11-20", "21-50", "51-100", "101-500", "500-1000", "1000+")
_SIZE_BOUNDS = (
    (1, "1"),
    (10, "2-10"),
    (20, "11-20"),
    (50, "21-50"),
    (100, "51-100"),
    (500, "101-500"),
    (1000, "500-1000"),
)
_WS = re.compile(r"\s+")


class InvalidAnswer(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _token(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    return re.sub(r"[\s\-]+", "_", text)


def _text(raw: str) -> str:
    return _WS.sub(" ", raw.replace("\x00", "")).strip()


def _company_size(raw: str) -> str:
    text = raw.strip().lower().replace(" ", "").replace("–", "-")
    if text in _COMPANY_SIZES:
        return text
    digits = re.fullmatch(r"(\d+)(?:-(\d+))?\+?", text)
    if not digits:
        return raw.strip()
    top = int(digits.group(2) or digits.group(1))
    for bound, label in _SIZE_BOUNDS:
        if top <= bound:
            return label
    return "1000+"


def _scalar(field: str, value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise InvalidAnswer(field, "expected a text, number or date answer")
    text = _text(str(value))
    if not text:
        raise InvalidAnswer(field, "the answer is empty")
    return text


def normalize_answers(answers: dict[str, Any]) -> dict[str, Any]:
    """Brief answers checked and normalized; raise InvalidAnswer naming the bad one."""
    clean: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in answers.items():
        if key == "fields":
            if not isinstance(value, dict):
                raise InvalidAnswer("fields", "expected a mapping of answers")
            for name, answer in value.items():
                extra[str(name)] = _scalar(f"fields.{name}", answer)
        elif key == "services":
            items = value if isinstance(value, list) else [value]
            services = [_token(_scalar("services", s)) for s in items]
            if not services:
                raise InvalidAnswer("services", "name at least one service")
            clean["services"] = list(dict.fromkeys(services))
        elif key == "budget":
            try:
                budget = Decimal(_scalar("budget", value).replace(" ", "").replace(",", "."))
            except InvalidOperation:
                raise InvalidAnswer("budget", "expected an amount, e.g. 150000") from None
            if not budget.is_finite() or budget < 0:
                raise InvalidAnswer("budget", "expected a positive amount")
            clean["budget"] = str(budget)
        elif key in ("industry", "role_in_purchase"):
            clean[key] = _token(_scalar(key, value))
        elif key == "timeframe":
            clean[key] = _text(_scalar(key, value)).lower()
        elif key == "company_size":
            clean[key] = _company_size(_scalar(key, value))
        elif key == "country":
            clean[key] = _scalar(key, value).upper()
        elif key in BRIEF_FIELDS:
            clean[key] = _scalar(key, value)
        elif key in (*PERSONAL_FIELDS, *_URL_FIELDS, "consent", "lead_id"):
            raise InvalidAnswer(key, f"{key} is not a brief answer (contact details stay as given)")
        else:
            extra[str(key)] = _scalar(key, value)
    if extra:
        clean["fields"] = extra
    return clean


def merge_answers(lead: LeadSnapshot, answers: dict[str, Any]) -> LeadSnapshot:
    """The lead with normalized brief answers merged in: answers win, other fields stay."""
    data = lead.model_dump(mode="json")
    for key, value in answers.items():
        if key == "fields":
            data["fields"] = {**data.get("fields", {}), **value}
        else:
            data[key] = value
    return LeadSnapshot.model_validate(data)


def combine_answers(earlier: dict[str, Any] | None, later: dict[str, Any]) -> dict[str, Any]:
    """All brief answers so far: later answers win, free-form answers accumulate."""
    combined = {**(earlier or {}), **later}
    if "fields" in (earlier or {}) and "fields" in later:
        combined["fields"] = {**(earlier or {})["fields"], **later["fields"]}
    return combined


def erase_person(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot without the person: personal fields and free-form answers gone."""
    erased = dict(snapshot)
    for field in PERSONAL_FIELDS:
        erased[field] = None
    for field in _URL_FIELDS:
        if erased.get(field):
            # A query string may carry an e-mail or a click id that leads back to the person.
            erased[field] = urlunsplit(urlsplit(erased[field])._replace(query="", fragment=""))
    erased["fields"] = {}
    return erased


def summarize_answers(answers: dict[str, Any]) -> str:
    """Which questions a brief answered, for the lead's history (the values stay in the lead)."""
    names = [k for k in answers if k != "fields"] + [
        f"fields.{k}" for k in answers.get("fields", {})
    ]
    return "brief answered: " + ", ".join(names) if names else "brief with no answers"
