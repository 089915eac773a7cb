"""The AsyncAPI 3.0 document of the topics, generated from `shared.events`."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared.crypto import ALG, SEALED_FIELDS
from shared.events import (
    CONTENT_TYPE,
    EVENT_TYPES,
    LEAD_TOPICS,
    TOPIC_DEADLETTER,
    TOPIC_OF_TYPE,
)

SEALED_VALUE_SCHEMA: dict[str, Any] = {
    "title": "SealedValue",
    "type": "object",
    "description": "A personal field sealed under its lead's own key (crypto-shredding, "
    "docs/crypto-shredding.md): AES-256-GCM of the field's JSON value; associated data "
    "`leadflow/1|{event id}|{lead id}|{field name}`; iv and ct (ciphertext then 16-byte tag) "
    "in base64url without padding. The key: intake's POST /v1/keys:batch with a token "
    "holding keys:read. Once the lead is erased its key is destroyed and no one can open it; "
    "a field left out of an event was sealed for a lead already erased when it was sent.",
    "properties": {
        "alg": {"type": "string", "const": ALG},
        "kid": {"type": "string", "description": "the lead key's id"},
        "iv": {"type": "string", "description": "96-bit nonce, base64url"},
        "ct": {"type": "string", "description": "ciphertext and tag, base64url"},
    },
    "required": ["alg", "kid", "iv", "ct"],
}


def _mark_sealed(schemas: dict[str, Any]) -> None:
    """On the wire each personal field is a SealedValue (shared.crypto.SEALED_FIELDS)."""
    schemas["SealedValue"] = SEALED_VALUE_SCHEMA
    for event_type, fields in SEALED_FIELDS.items():
        data_model = EVENT_TYPES[event_type].model_fields["data"].annotation
        properties = schemas[getattr(data_model, "__name__", "")]["properties"]
        for field in fields:
            prop = properties[field]
            if prop.get("x-leadflow-sealed"):
                continue
            properties[field] = {
                "title": prop.get("title", field),
                "description": "Sealed on the topics (personal data); opened, it is: "
                + str(prop.get("description") or prop.get("title") or field),
                "x-leadflow-sealed": True,
                "oneOf": [
                    {"$ref": "#/components/schemas/SealedValue"},
                    {k: v for k, v in prop.items() if k not in ("title", "default")},
                ],
            }


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
    _mark_sealed(schemas)
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
        "kept as it was read (its personal fields sealed), a structured CloudEvent with its "
        "content-type, ce_type and ce_id headers; "
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
