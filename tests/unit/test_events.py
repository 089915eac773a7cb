"""The CloudEvents envelope: what goes on the wire comes back the same."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.events import (
    SOURCE_INTAKE,
    TOPIC_LIFECYCLE,
    TOPIC_RECEIVED,
    TOPIC_ROUTED,
    Decision,
    Dimensions,
    LeadPaymentReceived,
    LeadPaymentReceivedData,
    LeadReceived,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadSource,
    Route,
    UndecodableEvent,
    decode_event,
    encode_event,
    kafka_headers,
)
from shared.ids import random_uuid
from tests.support import received, snapshot


class TestEnvelope:
    def test_lead_received_round_trips(self) -> None:
        event = received(name="Анна 😀 \u200f", budget="150000.50")
        decoded = decode_event(encode_event(event))
        assert isinstance(decoded, LeadReceived)
        assert decoded == event
        assert decoded.data.name == "Анна 😀 \u200f"
        assert decoded.data.budget == Decimal("150000.50")

    def test_structured_mode_attributes(self) -> None:
        event = received()
        wire = json.loads(encode_event(event))
        assert wire["specversion"] == "1.0"
        assert wire["type"] == "lead.received"
        assert wire["source"] == "/intake"
        assert wire["subject"] == event.data.lead_id
        assert wire["datacontenttype"] == "application/json"
        assert wire["time"].endswith("Z") or wire["time"].endswith("+00:00")
        assert wire["data"]["budget"] == "200000"  # money as a string, never a float

    def test_topic_key_and_headers(self) -> None:
        event = received()
        assert event.topic == TOPIC_RECEIVED
        assert event.key == event.data.lead_id
        assert kafka_headers(event) == [
            ("content-type", b"application/cloudevents+json"),
            ("ce_type", b"lead.received"),
            ("ce_id", event.id.encode()),
        ]

    def test_routed_carries_snapshot_and_decision(self) -> None:
        lead = snapshot()
        decision = Decision(
            route=Route.sales,
            score=90,
            definition_version=3,
            reasons=["good"],
            team="smb",
            assignee="vera",
            decided_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        event = LeadRouted(
            source="/qualifier",
            time=lead.occurred_at,
            subject=lead.lead_id,
            data=LeadRoutedData(**lead.model_dump(), decision=decision),
        )
        decoded = decode_event(encode_event(event))
        assert isinstance(decoded, LeadRouted)
        assert decoded.topic == TOPIC_ROUTED
        assert decoded.data.email == lead.email
        assert decoded.data.decision.assignee == "vera"

    def test_payment_amount_is_exact(self) -> None:
        event = LeadPaymentReceived(
            source="/qualifier",
            time=datetime(2026, 1, 1, tzinfo=UTC),
            subject="L1",
            data=LeadPaymentReceivedData(
                lead_id="L1",
                at=datetime(2026, 1, 1, tzinfo=UTC),
                payment_id="p1",
                amount=Decimal("1500.10"),
                currency="RUB",
                dimensions=Dimensions(source="api"),
            ),
        )
        assert json.loads(encode_event(event))["data"]["amount"] == "1500.10"
        decoded = decode_event(encode_event(event))
        assert isinstance(decoded, LeadPaymentReceived)
        assert decoded.topic == TOPIC_LIFECYCLE
        assert decoded.data.amount == Decimal("1500.10")

    def test_event_ids_are_unique(self) -> None:
        assert received().id != received().id


class TestCompatibility:
    def test_unknown_fields_from_a_newer_producer_are_ignored(self) -> None:
        wire = json.loads(encode_event(received()))
        wire["newattr"] = "x"
        wire["data"]["loyalty_tier"] = "gold"
        decoded = decode_event(json.dumps(wire))
        assert isinstance(decoded, LeadReceived)

    @pytest.mark.parametrize(
        "raw",
        [
            b"not json",
            b"{}",
            b'{"specversion":"1.0","type":"lead.unknown","id":"x","source":"/x",'
            b'"time":"2026-01-01T00:00:00Z","subject":"s","data":{}}',
            b'{"specversion":"1.0","type":"lead.received","id":"x","source":"/x",'
            b'"time":"2026-01-01T00:00:00Z","subject":"s","data":{"lead_id":1}}',
        ],
    )
    def test_what_is_not_a_leadflow_event_is_refused(self, raw: bytes) -> None:
        with pytest.raises(UndecodableEvent):
            decode_event(raw)


def test_an_event_with_its_data_already_serialized_encodes_the_same_bytes() -> None:
    # Intake serializes a lead's snapshot once, for its column and its lead.received.
    snapshot = LeadSnapshot(
        lead_id="l-1",
        source=LeadSource.api,
        name='Zoë "Z" \u2028',
        budget=Decimal("12.50"),
        fields={"note": "tab\there"},
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        received_at=datetime(2026, 1, 2, 3, 4, 6, 789, tzinfo=UTC),
    )
    event = LeadReceived(
        source=SOURCE_INTAKE, time=snapshot.occurred_at, subject=snapshot.lead_id, data=snapshot
    )
    assert encode_event(event, data_json=snapshot.model_dump_json()) == encode_event(event)


def test_random_ids_are_version_4_uuids_in_canonical_text() -> None:
    ids = [random_uuid() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    # Every other bit is random: each of the 122 takes both values over the sample.
    values = [uuid.UUID(t).int for t in ids]
    fixed = {i for i in range(128) if len({(v >> i) & 1 for v in values}) == 1}
    assert fixed == {76, 77, 78, 79, 62, 63}  # the version (4 = 0100) and variant (10) bits
