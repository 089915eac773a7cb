"""Many people in one request: each item is checked on its own and answered on its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.intake.errors import error_items
from services.intake.leads.schemas import LeadAccepted
from services.intake.normalize.fields import InvalidField
from services.intake.sources.schemas import BatchResult, ErrorItem, ItemResult
from shared.events import LeadSnapshot

M = TypeVar("M", bound=BaseModel)


@dataclass
class Item:
    """One item on its way: its snapshot once it is valid, else why it was rejected."""

    index: int
    snapshot: LeadSnapshot | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


def prepare(
    raw: Sequence[Any],
    model: type[M],
    build: Callable[[M], LeadSnapshot],
    loc: Sequence[str | int],
) -> list[Item]:
    """Validate each item as `model`, then `build` its snapshot; errors stay with the item."""
    items = []
    for index, data in enumerate(raw):
        item = Item(index)
        try:
            item.snapshot = build(model.model_validate(data))
        except ValidationError as exc:
            item.errors = error_items(exc, (*loc, index))
        except InvalidField as exc:
            item.errors = [
                {"loc": [*loc, index, exc.field], "msg": exc.message, "type": "value_error"}
            ]
        items.append(item)
    return items


def answer(items: Sequence[Item], accepted: Sequence[LeadAccepted]) -> BatchResult:
    """The per-item answer; `accepted` holds the results of the valid items, in order."""
    results = iter(accepted)
    answers = []
    for item in items:
        if item.snapshot is None:
            answers.append(
                ItemResult(
                    index=item.index,
                    status="rejected",
                    errors=[ErrorItem.model_validate(e) for e in item.errors],
                )
            )
        else:
            outcome = next(results)
            answers.append(
                ItemResult(
                    index=item.index,
                    status=outcome.status,
                    lead_id=outcome.lead_id,
                    duplicate_of=outcome.duplicate_of,
                )
            )
    return BatchResult(
        accepted=sum(a.status == "accepted" for a in answers),
        updated=sum(a.status == "updated" for a in answers),
        duplicates=sum(a.status == "duplicate" for a in answers),
        rejected=sum(a.status == "rejected" for a in answers),
        results=answers,
    )
