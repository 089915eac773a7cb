"""The AsyncAPI 3.0 document of the topics, generated from `shared.events`."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared.events import (
    CONTENT_TYPE,
    EVENT_TYPES,
    LEAD_TOPICS,
    TOPIC_DEADLETTER,
    TOPIC_OF_TYPE,
)

_PRODUCERS = {
    "leads.received": "intake",
    "leads.routed": "qualifier",
    "leads.lifecycle": "qualifier (intake for lead.erased)",
}


def asyncapi_document() -> dict[str, Any]:
    models = list(EVENT_TYPES.values())
    refs, schema = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas = schema.get("$defs", {})
    messages: dict[str, Any] = {}
    for event_type, model in EVENT_TYPES.items():
        name = event_type.replace(".", "_")
        messages[name] = {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
            "contentType": CONTENT_TYPE,
            "headers": {
                "type": "object",
                "properties": {
                    "content-type": {
                        "type": "string",
                        "const": CONTENT_TYPE,
                        "description": "structured content mode (CloudEvents Kafka binding)",
                    },
                    "ce_type": {"type": "string", "const": event_type},
                    "ce_id": {"type": "string", "format": "uuid"},
                },
            },
            "payload": refs[(model, "validation")],
            "bindings": {"kafka": {"key": {"type": "string", "description": "the lead id"}}},
        }
    channels: dict[str, Any] = {}
    for topic in LEAD_TOPICS:
        channels[topic.replace(".", "_")] = {
            "address": topic,
            "description": f"Produced by {_PRODUCERS[topic]}; Kafka key = lead id.",
            "messages": {
                t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"}
                for t, tp in TOPIC_OF_TYPE.items()
                if tp == topic
            },
        }
    channels[TOPIC_DEADLETTER.replace(".", "_")] = {
        "address": TOPIC_DEADLETTER,
        "description": "Messages a consumer could not apply, with headers dlq_reason, "
        "dlq_service, dlq_topic, dlq_partition, dlq_offset. An event the handler refused is "
        "re-encoded, a structured CloudEvent with its content-type, ce_type and ce_id headers; "
        "a message that is no event is kept verbatim, with its content-type header if it had "
        "one and no other header of its own.",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Leadflow event stream",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 structured JSON events (each record's content-type "
            "header says so, as the CloudEvents Kafka binding asks); every time is in UTC. "
            "Delivery is at-least-once; every event id is stable across retries, so consumers "
            "apply each id once.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"dev": {"host": "127.0.0.1:9092", "protocol": "kafka"}},
        "channels": channels,
        "components": {"messages": messages, "schemas": schemas},
    }
