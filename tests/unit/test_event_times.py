"""Every time on the wire is UTC, whatever offset its producer or caller used."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.events import EVENT_TYPES, LeadContacted, decode_event, encode_event
from tests.wire_samples import one_of_each_type

MSK = timezone(timedelta(hours=3))
AT = datetime(2026, 10, 15, 15, 0, tzinfo=MSK)  # 12:00 UTC


def date_time_paths(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> set[str]:
    """The dotted path of every `date-time` field a model's JSON schema declares."""
    if "$ref" in schema:
        return date_time_paths(defs[schema["$ref"].split("/")[-1]], defs, path)
    found: set[str] = set()
    if schema.get("format") == "date-time":
        found.add(path)
    for option in schema.get("anyOf", []):
        found |= date_time_paths(option, defs, path)
    for name, field in schema.get("properties", {}).items():
        found |= date_time_paths(field, defs, f"{path}.{name}" if path else name)
    return found


def at_path(wire: dict[str, Any], path: str) -> Any:
    value: Any = wire
    for part in path.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("event", one_of_each_type(AT), ids=lambda e: e.type)
def test_every_time_of_every_event_type_goes_out_in_utc(event: Any) -> None:
    schema = type(event).model_json_schema()
    paths = date_time_paths(schema, schema.get("$defs", {}))
    assert "time" in paths and len(paths) > 1, "the envelope's time and the data's times"
    wire = json.loads(encode_event(event))
    for path in paths:
        text = at_path(wire, path)
        assert text is not None, f"the sample leaves {path} out"
        assert text.endswith("Z"), f"{event.type} {path} = {text}"
        sent = datetime.fromisoformat(text)
        assert sent.utcoffset() == timedelta(0)
        # The same instant as given, not the wall-clock time relabelled.
        assert AT <= sent <= AT + timedelta(hours=6)
    # The samples' business times: the lead's 15:00+03:00, a sales call three hours later,
    # the erasure five.
    hour = {
        "lead.received": 12,
        "lead.webinar_attended": 12,
        "lead.routed": 12,
        "lead.erased": 17,
    }.get(event.type, 15)
    assert wire["time"] == f"2026-10-15T{hour}:00:00Z"


def test_the_samples_cover_every_event_type() -> None:
    assert {e.type for e in one_of_each_type(AT)} == set(EVENT_TYPES)


def test_a_decoded_event_holds_utc_whatever_its_producer_sent() -> None:
    event = one_of_each_type(datetime(2026, 10, 15, 12, 0, tzinfo=UTC))[3]
    assert isinstance(event, LeadContacted)
    foreign = json.loads(encode_event(event))
    foreign["time"] = "2026-10-15T18:30:00+03:00"
    foreign["data"]["at"] = "2026-10-15T10:30:00-05:00"
    decoded = decode_event(json.dumps(foreign))
    assert decoded.time == datetime(2026, 10, 15, 15, 30, tzinfo=UTC)
    assert decoded.time.utcoffset() == timedelta(0)
    assert isinstance(decoded, LeadContacted)
    assert decoded.data.at.utcoffset() == timedelta(0)
    assert json.loads(encode_event(decoded))["data"]["at"] == "2026-10-15T15:30:00Z"


def test_a_time_without_an_offset_is_read_as_utc() -> None:
    event = one_of_each_type(datetime(2026, 10, 15, 12, 0, tzinfo=UTC))[3]
    foreign = json.loads(encode_event(event))
    foreign["time"] = "2026-10-15T12:00:00"
    assert decode_event(json.dumps(foreign)).time == datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
