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
