"""Synthetic event histories for the KPI benchmarks: leads with realistic lifecycles."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.events import (
    Decision,
    Dimensions,
    LeadContacted,
    LeadContactedData,
    LeadFeedback,
    LeadFeedbackData,
    LeadPaymentReceived,
    LeadPaymentReceivedData,
    LeadReceived,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadStageChanged,
    LeadStageChangedData,
    Route,
    Stage,
    Utm,
    _Envelope,
)

CHANNELS = ("google", "yandex", "facebook", None)
CAMPAIGNS = ("spring", "autumn", "brand", None)
SOURCES = ("web_form", "webinar_registration", "api", "import")
STAGES = (Stage.sql, Stage.demo_held, Stage.proposal_sent, Stage.contract_sent, Stage.won)


def lead_history(rng: random.Random, start: datetime, span_days: int) -> list[_Envelope]:
    """One lead's events in business-time order: on average about eight."""
    lead_id = str(uuid.uuid4())
    at = start + timedelta(seconds=rng.randrange(span_days * 86400))
    lead = LeadSnapshot(
        lead_id=lead_id,
        source=rng.choice(SOURCES),
        email=f"{lead_id[:8]}@bench.example",
        company="Bench",
        services=["seo"],
        consent=True,
        occurred_at=at,
        received_at=at,
        utm=Utm(source=rng.choice(CHANNELS), campaign=rng.choice(CAMPAIGNS)),
    )
    route = rng.choices(list(Route), weights=(10, 1, 1, 1, 1))[0]
    decision = Decision(
        route=route,
        score=70,
        definition_version=1,
        reasons=["bench"],
        decided_at=at,
        team="smb",
        assignee="vera",
    )
    dims = lead.dimensions().model_copy(update={"route": route.value, "definition_version": 1})
    events: list[_Envelope] = [
        LeadReceived(source="/intake", time=at, subject=lead_id, data=lead),
        LeadRouted(
            source="/qualifier",
            time=at,
            subject=lead_id,
            data=LeadRoutedData(**lead.model_dump(), decision=decision),
        ),
    ]
    if route is not Route.sales:
        return events
    at += timedelta(minutes=rng.randrange(5, 600))
    events.append(_lifecycle(LeadContacted, LeadContactedData, lead_id, at, dims))
    at += timedelta(hours=rng.randrange(1, 48))
    accepted = rng.random() < 0.7
    events.append(
        LeadFeedback(
            source="/qualifier",
            time=at,
            subject=lead_id,
            data=LeadFeedbackData(
                lead_id=lead_id,
                at=at,
                dimensions=dims,
                decision="accepted" if accepted else "rejected",
                reason=None if accepted else "no budget",
            ),
        )
    )
    if not accepted:
        return events
    previous = Stage.accepted
    for stage in STAGES:
        at += timedelta(days=rng.randrange(1, 10))
        if stage is not Stage.sql and rng.random() < 0.25:
            events.append(_stage(lead_id, at, dims, Stage.lost, previous))
            return events
        events.append(_stage(lead_id, at, dims, stage, previous))
        previous = stage
    for _ in range(rng.randrange(1, 4)):
        at += timedelta(days=rng.randrange(1, 40))
        events.append(
            LeadPaymentReceived(
                source="/qualifier",
                time=at,
                subject=lead_id,
                data=LeadPaymentReceivedData(
                    lead_id=lead_id,
                    at=at,
                    dimensions=dims,
                    payment_id=str(uuid.uuid4()),
                    amount=Decimal(rng.randrange(50_000, 500_000)),
                    currency="RUB",
                ),
            )
        )
    return events


def _lifecycle(
    cls: type[LeadContacted],
    data_cls: type[LeadContactedData],
    lead_id: str,
    at: datetime,
    dims: Dimensions,
) -> LeadContacted:
    return cls(
        source="/qualifier",
        time=at,
        subject=lead_id,
        data=data_cls(lead_id=lead_id, at=at, dimensions=dims),
    )


def _stage(
    lead_id: str, at: datetime, dims: Dimensions, stage: Stage, previous: Stage
) -> LeadStageChanged:
    return LeadStageChanged(
        source="/qualifier",
        time=at,
        subject=lead_id,
        data=LeadStageChangedData(
            lead_id=lead_id, at=at, dimensions=dims, stage=stage, previous_stage=previous
        ),
    )


def histories(leads: int, seed: int = 1) -> Iterator[_Envelope]:
    """`leads` lead histories over the two years before now."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=730)
    for _ in range(leads):
        yield from lead_history(rng, start, 700)
