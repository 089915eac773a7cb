"""Pure lead normalization: e-mail, phone, names and vocabularies. No I/O."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# The lead definition's vocabulary (shared/examples/lead-definition.yaml).
COMPANY_SIZES = ("1", "2-10", "11-20", "21-50", "51-100", "101-500", "500-1000", "1000+")
_SIZE_BOUNDS = (
    (1, "1"),
    (10, "2-10"),
    (20, "11-20"),
    (50, "21-50"),
    (100, "51-100"),
    (500, "101-500"),
    (1000, "500-1000"),
)
TIMEFRAMES = ("now", "1-3 months", "3-6 months", "6-12 months", "later")
_TIMEFRAME_SYNONYMS = {
    "asap": "now",
    "immediately": "now",
    "urgent": "now",
    "сейчас": "now",
    "срочно": "now",
    "this month": "now",
    "1-3": "1-3 months",
    "3-6": "3-6 months",
    "6-12": "6-12 months",
    "next year": "later",
    "not sure": "later",
    "позже": "later",
}
_WS = re.compile(r"\s+")


class InvalidField(ValueError):
    """A value that cannot be normalized; `field` names it for the 422 body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_email(raw: str) -> str:
    """Syntax-checked, domain lower-cased (the local part is the mailbox owner's)."""
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidField("email", f"not a valid e-mail address: {exc}") from exc
    return result.normalized


def normalize_phone(raw: str, region: str) -> str:
    """E.164, read in the lead's region when the number has no country code."""
    try:
        number = phonenumbers.parse(raw, region.upper() if region else None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidField("phone", f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidField("phone", "not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_text(raw: str | None) -> str | None:
    """Trim and fold runs of white space; keep every other character as sent."""
    if raw is None:
        return None
    text = _WS.sub(" ", raw.replace("\x00", "")).strip()
    return text or None


def normalize_company_size(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = raw.strip().lower().replace(" ", "").replace("–", "-")
    if text in COMPANY_SIZES:
        return text
    digits = re.fullmatch(r"(\d+)(?:-(\d+))?\+?", text)
    if not digits:
        return raw.strip() or None
    top = int(digits.group(2) or digits.group(1))
    if text.endswith("+") and int(digits.group(1)) >= 1000:
        return "1000+"
    for bound, label in _SIZE_BOUNDS:
        if top <= bound:
            return label
    return "1000+"


def normalize_timeframe(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = _WS.sub(" ", raw.strip().lower())
    if text in TIMEFRAMES:
        return text
    return _TIMEFRAME_SYNONYMS.get(text, text or None)


def normalize_token(raw: str | None) -> str | None:
    """Vocabulary words (services, roles, industries) as `lower_snake`."""
    if raw is None:
        return None
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    text = re.sub(r"[\s\-]+", "_", text)
    return text or None


def email_domain(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1].lower() if email and "@" in email else None


@dataclass(frozen=True)
class DedupeKey:
    """Who a lead is, for de-duplication: the same person from the same place."""

    source: str
    origin_id: str
    email: str | None
    phone: str | None

    def lock_ids(self) -> list[int]:
        """Advisory-lock ids, one per identity, sorted so two writers never deadlock."""
        ids = set()
        for ident in (self.email, self.phone):
            if ident:
                digest = hashlib.sha256(f"{self.source}|{self.origin_id}|{ident}".encode()).digest()
                ids.add(int.from_bytes(digest[:8], "big", signed=True))
        return sorted(ids)


def dedupe_email(email: str | None) -> str | None:
    """Mailboxes compare case-insensitively in practice."""
    return email.lower() if email else None
