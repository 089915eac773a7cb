"""Intake's Prometheus counters: what came in, how it ended, and what was turned away."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from services.intake.leads.schemas import LeadAccepted
from shared.events import LeadSnapshot
from shared.observability import Series

LEADS = Counter(
    "leadflow_intake_leads_total",
    "Submissions stored or recognised, by source and outcome (accepted, updated, duplicate)",
    ["source", "status"],
)
_LEADS = Series(LEADS)
REFUSED = Counter(
    "leadflow_intake_refused_total",
    "Submissions turned away or trapped, by reason (rate_limited, origin, server_key, "
    "fill_time, honeypot, zoom_signature)",
    ["reason"],
)


def count(snapshots: Iterable[LeadSnapshot], results: Iterable[LeadAccepted]) -> None:
    """Count committed outcomes; call after the transaction, so a rollback counts nothing."""
    for snapshot, result in zip(snapshots, results, strict=True):
        _LEADS(snapshot.source.value, result.status).inc()


def refused(reason: str) -> None:
    REFUSED.labels(reason).inc()
