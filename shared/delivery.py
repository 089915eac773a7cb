"""What a consumer hands its service's handler, and how the handler's failures are told apart.

A handler gets a batch of `Delivered` events. A failure that says "try again later" (the
database or Kafka cannot serve now) retries the batch; any other is the event's fault, and
the consumer finds and parks the event(s) that cause it (see `shared.consumer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from shared.db import is_unavailable
from shared.events import Event


@dataclass(frozen=True)
class Delivered:
    """A decoded event with where it came from, and its record's value as read (its
    personal fields sealed), which is what a dead-letter parking keeps."""

    event: Event
    topic: str
    partition: int
    offset: int
    raw: bytes | None = None


BatchHandler = Callable[[Sequence[Delivered]], Awaitable[None]]


class TransientFailure(Exception):
    """The database or Kafka cannot serve now: retry the same batch later."""


class HandlerTimedOut(Exception):
    """The handler did not apply `batch` within the bound. Not transient: an event that
    hangs its handler hangs it again, so it is found and parked."""

    def __init__(self, batch: Sequence[Delivered], seconds: float) -> None:
        super().__init__(f"a batch of {len(batch)} events not applied in {seconds:g}s")
        self.batch = batch


def is_transient(exc: BaseException) -> bool:
    """Failures that say "try again later", not "this event is bad"."""
    if isinstance(exc, HandlerTimedOut):
        return False
    return isinstance(exc, KafkaError | TransientFailure) or is_unavailable(exc)
