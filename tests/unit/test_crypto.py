"""Crypto-shredding on the wire (shared.crypto): sealing, opening, associated data, a
destroyed key, and no personal field in clear on an encoded event whatever it holds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.erasure.redact import redact
from services.intake.keys.ring import KeyRing
from shared.crypto import (
    LEAD_PERSON,
    SEALED_FIELDS,
    associated_data,
    is_sealed,
    new_lead_key,
    open_event,
    open_value,
    seal_payload,
    seal_value,
    sealed_subject,
)
from shared.events import (
    EVENT_TYPES,
    LeadBriefFilled,
    LeadBriefFilledData,
    LeadReceived,
    LeadRouted,
    _Envelope,
    encode_event,
)
from tests.support import received, snapshot
from tests.wire_samples import one_of_each_type

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def person(**overrides: Any) -> LeadReceived:
    return received(
        name="Анна Петрова",
        email="anna.petrova@acme-corp.example",
        phone="+79161234567",
        job_title="CMO",
        message="Call me after 6, my daughter is at school until then",
        fields={"how_did_you_hear": "from Ivan Sidorov"},
        page_url="https://acme.example/contact?email=anna.petrova%40acme-corp.example",
        referrer="https://mail.example/inbox?u=anna",
        **overrides,
    )


class TestSealing:
    def test_an_event_sealed_and_opened_with_its_key_is_the_same_event(self) -> None:
        event, key = person(), new_lead_key()
        sealed = seal_payload(encode_event(event), key)
        assert open_event(sealed, {event.subject: key}) == event

    def test_every_personal_field_is_sealed_and_everything_else_stays_readable(self) -> None:
        event = person()
        doc = orjson.loads(seal_payload(encode_event(event), new_lead_key()))
        clear = orjson.loads(encode_event(event))
        for field in LEAD_PERSON:
            assert is_sealed(doc["data"][field]), field
        kept = {k: v for k, v in clear["data"].items() if k not in LEAD_PERSON}
        assert {k: doc["data"][k] for k in kept} == kept
        assert {k: v for k, v in doc.items() if k != "data"} == {
            k: v for k, v in clear.items() if k != "data"
        }

    def test_an_event_without_personal_fields_goes_out_byte_for_byte(self) -> None:
        for event in one_of_each_type(AT):
            if event.type in SEALED_FIELDS:
                continue
            raw = encode_event(event)
            assert seal_payload(raw, new_lead_key()) is raw

    def test_without_a_key_personal_fields_are_left_out_never_sent_in_clear(self) -> None:
        event = person()
        raw = seal_payload(encode_event(event), None)
        assert b"anna" not in raw.lower() and b"+7916" not in raw
        opened = open_event(raw, {})
        assert isinstance(opened, LeadReceived)
        assert opened.data.email is None and opened.data.fields == {}
        assert opened.data.budget == event.data.budget and opened.data.utm == event.data.utm


class TestOpening:
    def test_a_destroyed_key_leaves_the_person_out_and_the_rest_readable(self) -> None:
        erased, kept = person(), person()
        keys = {erased.subject: new_lead_key(), kept.subject: new_lead_key()}
        sealed = {e.subject: seal_payload(encode_event(e), keys[e.subject]) for e in (erased, kept)}
        del keys[erased.subject]  # the erasure destroyed it
        gone = open_event(sealed[erased.subject], keys)
        assert isinstance(gone, LeadReceived)
        assert all(getattr(gone.data, f) in (None, {}) for f in LEAD_PERSON)
        assert gone.data.dimensions() == erased.data.dimensions()
        assert gone.data.services == erased.data.services
        assert open_event(sealed[kept.subject], keys) == kept

    def test_another_key_opens_nothing(self) -> None:
        event = person()
        sealed = seal_payload(encode_event(event), new_lead_key())
        opened = open_event(sealed, {event.subject: new_lead_key()})
        assert isinstance(opened, LeadReceived) and opened.data.name is None

    def test_a_sealed_event_another_json_encoder_wrote_opens_too(self) -> None:
        # A record re-sent by another producer (a mirror, a replay tool, `json.dumps` with
        # its spaces) holds the same sealed values: opened, or left out without the key,
        # never refused as undecodable for its whitespace.
        event, key = person(), new_lead_key()
        spaced = json.dumps(orjson.loads(seal_payload(encode_event(event), key))).encode()
        assert b'"alg": "A256GCM"' in spaced
        assert open_event(spaced, {event.subject: key}) == event
        gone = open_event(spaced, {})
        assert isinstance(gone, LeadReceived) and gone.data.email is None
        assert sealed_subject(spaced) == event.subject

    def test_events_from_before_sealing_read_as_they_are(self) -> None:
        event = person()
        assert open_event(encode_event(event), {}) == event


class TestAssociatedData:
    """A sealed value is bound to its event id, its lead and its field."""

    def test_moved_to_another_field_event_or_lead_it_opens_to_nothing(self) -> None:
        key = new_lead_key()
        aad = associated_data("event-1", "lead-1", "email")
        sealed = seal_value("anna@acme.example", key, aad)
        assert open_value(sealed, key, aad) == "anna@acme.example"
        for other in (
            associated_data("event-1", "lead-1", "name"),
            associated_data("event-2", "lead-1", "email"),
            associated_data("event-1", "lead-2", "email"),
        ):
            assert open_value(sealed, key, other) is None

    def test_a_field_swapped_between_events_of_one_lead_is_left_out(self) -> None:
        key = new_lead_key()
        first = person()
        second = received(lead_id=first.subject, name="Somebody Else")
        one = orjson.loads(seal_payload(encode_event(first), key))
        two = orjson.loads(seal_payload(encode_event(second), key))
        two["data"]["name"] = one["data"]["name"]
        opened = open_event(orjson.dumps(two), {first.subject: key})
        assert isinstance(opened, LeadReceived) and opened.data.name is None

    def test_a_tampered_ciphertext_is_left_out(self) -> None:
        event, key = person(), new_lead_key()
        doc = orjson.loads(seal_payload(encode_event(event), key))
        ct = doc["data"]["email"]["ct"]
        doc["data"]["email"]["ct"] = ("A" if ct[0] != "A" else "B") + ct[1:]
        opened = open_event(orjson.dumps(doc), {event.subject: key})
        assert isinstance(opened, LeadReceived)
        assert opened.data.email is None and opened.data.name == event.data.name


class TestWhatIsSealed:
    def test_every_field_an_erasure_removes_is_sealed_on_the_wire(self) -> None:
        lead = person().data
        erased = redact(lead)
        changed = {f for f in type(lead).model_fields if getattr(lead, f) != getattr(erased, f)}
        assert changed <= set(LEAD_PERSON), changed - set(LEAD_PERSON)

    def test_the_sealed_fields_are_fields_of_their_events(self) -> None:
        for event_type, fields in SEALED_FIELDS.items():
            data_model = EVENT_TYPES[event_type].model_fields["data"].annotation
            assert set(fields) <= set(data_model.model_fields), event_type  # type: ignore[union-attr]


class TestMasterKeys:
    def test_a_lead_key_is_unwrapped_only_by_its_master_for_its_lead(self) -> None:
        ring = KeyRing({"m1": b"1" * 32, "m2": b"2" * 32}, "m2")
        key = new_lead_key()
        wrapped = ring.wrap("lead-1", key)
        assert ring.unwrap("lead-1", key.kid, "m2", wrapped) == key
        assert ring.unwrap("lead-2", key.kid, "m2", wrapped) is None
        assert ring.unwrap("lead-1", key.kid, "m1", wrapped) is None
        assert ring.unwrap("lead-1", key.kid, "gone", wrapped) is None
        assert "key=" not in repr(key)


# Personal values of any text, marked so that finding the mark in bytes means finding them
# in clear: ASCII (JSON escapes only the rest) with `#`, which base64url never writes.
def _marked(mark: str) -> st.SearchStrategy[str]:
    return st.text(min_size=0, max_size=30).map(lambda s: f"#{mark}#{s}")


_PERSONAL = {
    "name": _marked("PIIname"),
    "email": _marked("PIIemail"),
    "phone": _marked("PIIphone"),
    "company": _marked("PIIcompany"),
    "job_title": _marked("PIIjob"),
    "message": _marked("PIImessage"),
    "fields": st.dictionaries(_marked("PIIfkey"), _marked("PIIfval"), min_size=1, max_size=3),
    "page_url": _marked("PIIpage"),
    "referrer": _marked("PIIref"),
}


@st.composite
def events_with_a_person(draw: st.DrawFn) -> _Envelope:
    """Any event type that carries a person, with any personal values in any field."""
    values = {f: draw(s) for f, s in _PERSONAL.items() if draw(st.booleans())}
    values["name"] = draw(_PERSONAL["name"])  # at least one
    lead = snapshot(lead_id=str(uuid.uuid4()), **values)
    kind = draw(st.sampled_from(["lead.received", "lead.webinar_attended", "lead.routed"]))
    if kind == "lead.routed":
        routed = next(e for e in one_of_each_type(AT) if isinstance(e, LeadRouted))
        data = routed.data.model_validate(lead.model_dump() | {"decision": routed.data.decision})
        return routed.model_copy(update={"subject": lead.lead_id, "data": data})
    event = next(e for e in one_of_each_type(AT) if e.type == kind)
    return event.model_copy(update={"subject": lead.lead_id, "data": lead})


class TestNoPersonInClear:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events_with_a_person())
    def test_no_personal_value_is_readable_on_an_encoded_event(self, event: _Envelope) -> None:
        key = new_lead_key()
        sealed = seal_payload(encode_event(event), key)
        assert b"#PII" not in sealed
        assert open_event(sealed, {event.subject: key}) == event
        assert b"#PII" not in orjson.dumps(orjson.loads(open_event(sealed, {}).model_dump_json()))

    @settings(max_examples=100, deadline=None)
    @given(
        answers=st.dictionaries(_marked("PIIq"), _marked("PIIa"), min_size=1, max_size=4),
        reason=_marked("PIIreason"),
    )
    def test_sales_free_text_is_sealed_too(self, answers: dict[str, str], reason: str) -> None:
        key = new_lead_key()
        for each in one_of_each_type(AT):
            event: Any = each
            if isinstance(event, LeadBriefFilled):
                data: Any = LeadBriefFilledData.model_validate(
                    event.data.model_dump() | {"answers": answers}
                )
                event = event.model_copy(update={"data": data})
            elif "reason" in type(event.data).model_fields:
                data = event.data.model_copy(update={"reason": reason})
                event = event.model_copy(update={"data": data})
            sealed = seal_payload(encode_event(event), key)
            assert b"#PII" not in sealed, event.type
            assert open_event(sealed, {event.subject: key}) == event
