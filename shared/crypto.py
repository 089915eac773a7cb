"""Crypto-shredding: a lead's personal fields travel sealed under that lead's own key.

On the topics each personal field of an event (`SEALED_FIELDS`) is replaced by a sealed
value, `{"alg": "A256GCM", "kid": ..., "iv": ..., "ct": ...}` (AES-256-GCM, base64url
without padding; `ct` ends with the 16-byte tag), whose associated data binds it to its
event id, lead id and field name, so it cannot be moved to another event, lead or field.
Everything else (ids, times, source, UTM, business answers, decisions, amounts) stays
readable. Keys live in intake's key store (`services.intake.keys`), never on a topic:
destroying a lead's key makes every sealed copy of the person unreadable, wherever the
bytes are. Pure: no I/O; see docs/crypto-shredding.md.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.events import Event, UndecodableEvent, decode_event, validate_event

ALG = "A256GCM"
KEY_BYTES = 32
_IV_BYTES = 12
# What every JSON encoding of a sealed value holds, whatever its spacing (a record another
# producer re-sent is spaced as its encoder likes); a payload without it has nothing to
# open and is validated as it is. Free text quoting it only takes the slower path.
SEALED_MARK = b'"A256GCM"'

# Fields of a lead snapshot that identify the person or may (free text, free-form answers,
# URLs whose query strings carry e-mails and click ids). Company and job title are here
# because together with the rest of the lead they name a person in a small market.
LEAD_PERSON = (
    "name",
    "email",
    "phone",
    "company",
    "job_title",
    "message",
    "fields",
    "page_url",
    "referrer",
)
# Per event type, the fields of `data` sealed on the wire. Sales' free text (brief
# answers, reasons) may name people too. Not here: ids, times, dimensions, UTM, business
# answers, decisions (their reasons are the definition's words), amounts, and `by`,
# `team`, `assignee` (Leadflow's own clients and staff, not the person the lead is about).
SEALED_FIELDS: dict[str, tuple[str, ...]] = {
    "lead.received": LEAD_PERSON,
    "lead.webinar_attended": LEAD_PERSON,
    "lead.routed": LEAD_PERSON,
    "lead.brief_filled": ("answers",),
    "lead.feedback": ("reason",),
    "lead.stage_changed": ("reason",),
}


@dataclass(frozen=True)
class LeadKey:
    """One lead's data key: `kid` names it in sealed values, `key` is 32 random bytes."""

    kid: str
    key: bytes

    def __repr__(self) -> str:  # never the key in a log line or a traceback
        return f"LeadKey(kid={self.kid!r})"


def new_lead_key() -> LeadKey:
    return LeadKey(kid=secrets.token_hex(8), key=AESGCM.generate_key(bit_length=256))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def associated_data(event_id: str, lead_id: str, field: str) -> bytes:
    return f"leadflow/1|{event_id}|{lead_id}|{field}".encode()


def seal_value(value: Any, key: LeadKey, aad: bytes) -> dict[str, str]:
    """A JSON value (a string, an object) sealed: its JSON text encrypted under `key`."""
    iv = os.urandom(_IV_BYTES)
    ct = AESGCM(key.key).encrypt(iv, orjson.dumps(value), aad)
    return {"alg": ALG, "kid": key.kid, "iv": _b64(iv), "ct": _b64(ct)}


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.get("alg") == ALG and "ct" in value


def open_value(sealed: Mapping[str, Any], key: LeadKey | None, aad: bytes) -> Any | None:
    """The sealed JSON value, or None when it cannot be read: no key (destroyed, never
    made, not ours to fetch), another key, or bytes not sealed for this event and field."""
    if key is None or sealed.get("kid") != key.kid:
        return None
    try:
        plain = AESGCM(key.key).decrypt(_unb64(sealed["iv"]), _unb64(sealed["ct"]), aad)
    except (InvalidTag, ValueError, KeyError, TypeError):
        return None
    return orjson.loads(plain)


def seal_payload(raw: bytes, key: LeadKey | None) -> bytes:
    """An encoded event as it goes on a topic: each personal field sealed under `key`, or
    left out when there is no key (the lead was erased, or is unknown to the key store):
    never in clear. An event without personal fields is returned as it is."""
    doc = orjson.loads(raw)
    data = doc.get("data")
    fields = SEALED_FIELDS.get(doc.get("type", ""), ())
    present = [f for f in fields if isinstance(data, dict) and data.get(f) not in (None, {}, [])]
    if not present:
        return raw
    for field in present:
        if key is None:
            del data[field]
        elif not is_sealed(data[field]):
            aad = associated_data(doc["id"], doc["subject"], field)
            data[field] = seal_value(data[field], key, aad)
    return orjson.dumps(doc)


def sealed_subject(raw: bytes) -> str | None:
    """The lead id of a payload that holds sealed fields (its key to fetch), else None."""
    if SEALED_MARK not in raw:
        return None
    try:
        subject = orjson.loads(raw).get("subject")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return subject if isinstance(subject, str) else None


def open_event(raw: bytes, keys: Mapping[str, LeadKey]) -> Event:
    """Decode an event read off a topic, opening its sealed fields with the lead's key in
    `keys`. A field that cannot be opened is left out, as if the producer never had it
    (what an erased lead looks like). Fields in clear (events from before sealing) stay."""
    if SEALED_MARK not in raw:
        return decode_event(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UndecodableEvent(str(exc)) from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        subject = doc.get("subject")
        key = keys.get(subject) if isinstance(subject, str) else None
        for field in SEALED_FIELDS.get(str(doc.get("type")), ()):
            value = data.get(field)
            if not isinstance(value, dict) or not is_sealed(value):
                continue
            opened = open_value(
                value, key, associated_data(str(doc.get("id")), str(subject), field)
            )
            if opened is None:
                del data[field]
            else:
                data[field] = opened
    return validate_event(doc)
