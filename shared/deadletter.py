"""Parking records on the dead-letter topic, with the reason and where they came from.

What is parked names a failure by its type (and SQLSTATE), never by its message, and keeps
no header of the record but its content-type: their values could be a person's e-mail.
"""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord
from prometheus_client import Counter
from pydantic import ValidationError

from shared.crypto import seal_payload
from shared.db import error_kind
from shared.delivery import Delivered
from shared.events import TOPIC_DEADLETTER, UndecodableEvent, encode_event, kafka_headers
from shared.kafka import ProducerHolder

log = logging.getLogger(__name__)

EVENTS_PARKED = Counter(
    "leadflow_events_deadlettered_total", "Messages parked on the dead-letter topic", ["service"]
)


def undecodable_reason(exc: UndecodableEvent) -> str:
    """Where and how a message fails the schema, without the values (pydantic's own text
    quotes them: a person's e-mail)."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return f"undecodable: {error_kind(cause or exc)}"
    errors = cause.errors(include_url=False, include_context=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['type']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"undecodable: {'; '.join(parts)}{more}"


class DeadLetters:
    """Parks what a service's consumer cannot apply."""

    def __init__(self, service: str, producer: ProducerHolder) -> None:
        self._service = service
        # A holder replaces a producer that failed.
        self._producer = producer

    async def park_record(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        # The record as it came, with the content-type it claimed (what its value is meant
        # to be) and no other header: their values could be anything, a person's e-mail.
        claimed = [(k, v) for k, v in record.headers if k.lower() == "content-type"][:1]
        await self._send(
            record.value or b"",
            record.key,
            claimed,
            record.topic,
            record.partition,
            record.offset,
            reason,
        )

    async def park_delivered(self, item: Delivered, reason: str) -> None:
        # As it was read, sealed fields and all, with the headers a published one has; one
        # handed over without its bytes is re-encoded with its personal fields left out.
        await self._send(
            item.raw if item.raw is not None else seal_payload(encode_event(item.event), None),
            item.event.subject.encode(),
            kafka_headers(item.event),
            item.topic,
            item.partition,
            item.offset,
            reason,
        )

    async def _send(
        self,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        topic: str,
        partition: int,
        offset: int,
        reason: str,
    ) -> None:
        EVENTS_PARKED.labels(self._service).inc()
        log.error(
            "%s consumer: parked %s[%d]@%d: %s",
            self._service,
            topic,
            partition,
            offset,
            reason[:500],
        )
        await self._producer.send_and_wait(
            TOPIC_DEADLETTER,
            value=value,
            key=key,
            headers=[
                *headers,
                ("dlq_reason", reason[:1000].encode()),
                ("dlq_service", self._service.encode()),
                ("dlq_topic", topic.encode()),
                ("dlq_partition", str(partition).encode()),
                ("dlq_offset", str(offset).encode()),
            ],
        )
