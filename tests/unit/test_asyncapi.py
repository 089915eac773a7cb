"""The AsyncAPI document is generated from the event schemas and committed up to date."""

from __future__ import annotations

import json
from pathlib import Path

from shared.asyncapi import asyncapi_document
from shared.events import EVENT_TYPES, LEAD_TOPICS

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_every_event_type_is_a_message_on_its_topic() -> None:
    doc = asyncapi_document()
    assert set(doc["components"]["messages"]) == {t.replace(".", "_") for t in EVENT_TYPES}
    addresses = {c["address"] for c in doc["channels"].values()}
    assert set(LEAD_TOPICS) <= addresses
    routed = doc["channels"]["leads_routed"]["messages"]
    assert list(routed) == ["lead_routed"]


def test_the_committed_document_is_current() -> None:
    assert json.loads(COMMITTED.read_text()) == asyncapi_document(), (
        "docs/asyncapi.json is stale: run `make asyncapi`"
    )


def test_the_personal_fields_say_they_are_sealed_on_the_wire() -> None:
    schemas = asyncapi_document()["components"]["schemas"]
    sealed = {
        (model, field)
        for model, schema in schemas.items()
        for field, prop in schema.get("properties", {}).items()
        if prop.get("x-leadflow-sealed")
    }
    person = {"name", "email", "phone", "company", "job_title", "message", "fields"}
    for model in ("LeadSnapshot", "LeadRoutedData"):
        assert {(model, f) for f in person | {"page_url", "referrer"}} <= sealed
    assert {("LeadBriefFilledData", "answers"), ("LeadFeedbackData", "reason")} <= sealed
    assert ("LeadSnapshot", "budget") not in sealed and ("Dimensions", "source") not in sealed
    assert schemas["SealedValue"]["required"] == ["alg", "kid", "iv", "ct"]
