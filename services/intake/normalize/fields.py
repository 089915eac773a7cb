"""Pure field normalization: e-mail, phone, names, vocabularies, country, UTM. No I/O."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from shared.events import LeadSource

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
    "this month": "now",
    "within a month": "now",
    "сейчас": "now",
    "срочно": "now",
    "в течение месяца": "now",
    "1-3": "1-3 months",
    "1-3 месяца": "1-3 months",
    "3-6": "3-6 months",
    "4-6 months": "3-6 months",
    "3-6 месяцев": "3-6 months",
    "6-12": "6-12 months",
    "6-12 месяцев": "6-12 months",
    # Zoom's registration question offers these.
    "more than 6 months": "6-12 months",
    "no timeframe": "later",
    "next year": "later",
    "not sure": "later",
    "позже": "later",
}


_ROLE_SYNONYMS = {
    "decision_maker": "decision_maker",
    "decisionmaker": "decision_maker",
    "лпр": "decision_maker",
    "принимаю_решение": "decision_maker",
    "influencer": "influencer",
    "влияю_на_решение": "influencer",
    "evaluator": "evaluator",
    "recommender": "evaluator",
    # Zoom's registration question offers "Evaluator/Recommender".
    "evaluator/recommender": "evaluator",
    "not_involved": "not_involved",
}


_WS = re.compile(r"\s+")


_DASHES = str.maketrans({"–": "-", "—": "-", "−": "-"})


UTM_KEYS = ("source", "medium", "campaign", "term", "content")


WEBINAR_SOURCES = (LeadSource.webinar_registration, LeadSource.webinar_attendance)


class InvalidField(ValueError):
    """A value that cannot be normalized; `field` names it for the 422 body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_email(raw: str) -> str:
    """Syntax-checked, domain lower-cased (the local part is the mailbox owner's)."""
    plain = _PLAIN_EMAIL.fullmatch(raw)
    if plain is not None and len(raw) <= _EMAIL_MAX_LENGTH:
        domain = _KNOWN_DOMAINS.get(plain["domain"]) or _plain_domain(plain["domain"])
        if domain is not None and plain["local"].lower() not in _ROLE_MAILBOXES:
            return f"{plain['local']}@{domain}"
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidField("email", f"not a valid e-mail address: {exc}") from exc
    if (
        plain is not None
        and result.normalized == f"{plain['local']}@{result.domain}"
        and result.domain.isascii()
        and len(result.domain) == len(plain["domain"])
        and len(_KNOWN_DOMAINS) < _MAX_KNOWN_DOMAINS
    ):
        _KNOWN_DOMAINS[plain["domain"]] = result.domain
    return result.normalized


# Checking a domain is most of email_validator's work (IDNA, per-character Unicode rules:
# about 55 us of a lead's 80 us of normalizing), all of it needless for the usual domain.
# A plain address (an ASCII dot-atom before the @, letters, digits, dots and hyphens after
# it) normalizes as the validator would, the local part as given and the domain as the
# validator writes it, when its domain is one the validator accepted before and only
# lower-cased, or a plain host name (`_plain_domain`). Anything else goes to the validator.
_ATEXT = r"A-Za-z0-9_!#$%&'*+\-/=?^`{|}~"


_PLAIN_EMAIL = re.compile(
    rf"(?P<local>[{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@(?P<domain>[A-Za-z0-9.\-]+)", re.ASCII
)


_EMAIL_MAX_LENGTH = 254  # RFC 5321, as email_validator checks it


_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # the validator lower-cases these


_KNOWN_DOMAINS: dict[str, str] = {}


_MAX_KNOWN_DOMAINS = 10_000


# Labels of letters, digits and inner hyphens (1-63 characters), a letters-only top-level
# domain: what the validator accepts and only lower-cases. Narrower than its rules on
# purpose (no "--" anywhere, so no Punycode or R-LDH label, 253 characters at most).
_LDH_DOMAIN = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.ASCII | re.IGNORECASE
)


def _plain_domain(domain: str) -> str | None:
    """The domain lower-cased, if it is a plain host name the validator accepts; else None."""
    if len(domain) > 253 or "--" in domain or _LDH_DOMAIN.fullmatch(domain) is None:
        return None
    lowered = domain.lower()
    # The validator's list of special-use names (`.local`, `.test`...), read as it reads it.
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if lowered == special or lowered.endswith("." + special):
            return None
    return lowered


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


def _size_bucket(people: int) -> str | None:
    if people < 1:
        return None
    for bound, label in _SIZE_BOUNDS:
        if people <= bound:
            return label
    return "1000+"


def normalize_company_size(raw: str | None) -> str | None:
    """A size in the definition's vocabulary, or None when the answer cannot be read as one.

    Reads ranges ("51-100", Zoom's "501-1,000"), open ranges ("1000+", "more than 10,000",
    "больше 500") and head counts ("35 человек"): a range counts by its upper end.
    """
    if raw is None:
        return None
    text = re.sub(r"[\s,.\u00a0]", "", raw.lower().translate(_DASHES))
    if text in COMPANY_SIZES:
        return text
    if m := re.fullmatch(r"(\d+)-(\d+)", text):
        return _size_bucket(int(m.group(2)))
    if m := re.fullmatch(r"(?:(\d+)\+|(?:morethan|over|более|больше|свыше|>)(\d+))", text):
        return _size_bucket(int(m.group(1) or m.group(2)) + 1)
    if m := re.fullmatch(
        r"(?:до|upto|<=?)?(\d+)(?:человек|чел|сотрудников|employees|people)?", text
    ):
        return _size_bucket(int(m.group(1)))
    return None


def normalize_timeframe(raw: str | None) -> str | None:
    """A timeframe in the definition's vocabulary, or None when the answer is not one."""
    if raw is None:
        return None
    text = _WS.sub(" ", raw.strip().lower().translate(_DASHES))
    text = re.sub(r"\s*-\s*", "-", text)
    if text in TIMEFRAMES:
        return text
    return _TIMEFRAME_SYNONYMS.get(text)


def normalize_token(raw: str | None) -> str | None:
    """Vocabulary words (services, roles, industries) as `lower_snake`."""
    if raw is None:
        return None
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    text = re.sub(r"[\s\-]+", "_", text)
    return text or None


def normalize_role(raw: str | None) -> str | None:
    """The definition's role when the answer names one another way; else the answer as a token."""
    token = normalize_token(raw)
    if token is None:
        return None
    return _ROLE_SYNONYMS.get(token, token)


def _locale_data() -> dict[str, dict[str, str]]:
    """phonenumbers' country names by region and language, read from its one module.

    `import phonenumbers.geodata.locale` would first import the `geodata` package,
    which loads every number prefix's place names: about 85 MB kept for good. The module
    is loaded on its own, from its bytecode cache as an import would: compiling its 1 MB
    of source took 85 MB for a moment and left intake 17 MB larger for good.
    """
    path = Path(phonenumbers.__file__).parent / "geodata" / "locale.py"
    spec = importlib.util.spec_from_file_location("phonenumbers.geodata.locale", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)  # not in sys.modules: dropped once read
    spec.loader.exec_module(module)
    data: dict[str, dict[str, str]] = module.LOCALE_DATA
    return data


def _country_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for region, by_language in _locale_data().items():
        if region not in phonenumbers.SUPPORTED_REGIONS:
            continue
        for name in by_language.values():
            if not name.startswith("*"):  # "*xx": the same name as language xx
                names.setdefault(name.lower(), region)
    aliases = {"russian federation": "RU", "рф": "RU", "usa": "US", "uk": "GB"}
    return names | aliases


_COUNTRY_NAMES = _country_names()


def normalize_country(raw: str | None) -> str | None:
    """An ISO 3166 alpha-2 code when the answer is one or names one ("Россия"), else the answer."""
    text = clean_text(raw)
    if text is None:
        return None
    if len(text) == 2 and text.upper() in phonenumbers.SUPPORTED_REGIONS:
        return text.upper()
    return _COUNTRY_NAMES.get(text.lower(), text)


def phone_region(country: str | None, *fallbacks: str | None) -> str:
    """The region to read a national number in: the lead's country, else the first fallback."""
    if country and len(country) == 2 and country.isupper():
        return country
    return next((f.upper() for f in fallbacks if f), "RU")


def utm_from_url(url: str | None) -> dict[str, str]:
    """`utm_*` parameters of a page URL's query string, as {"source": ..., ...}."""
    if not url:
        return {}
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    utm = {k: clean_text(query.get(f"utm_{k}", [""])[0]) for k in UTM_KEYS}
    # Decoded from the URL, so as unchecked as the URL: no NUL, and no novel-length values.
    return {k: v[:200] for k, v in utm.items() if v}


def strip_query(url: str | None) -> str | None:
    """A URL without query string, fragment or user info: those can carry who the person is."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
