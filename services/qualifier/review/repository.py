"""The review's queries: leads received in a range, their decisions and what became of them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.review.tally import DecisionFact, LeadFacts
from services.qualifier.tables import decisions, leads, payments, stage_history
from shared.db import in_list

# What sales reported: its feedback (accepted, rejected) and the pipeline's stages.
_OUTCOME_EVENTS = ("lead.feedback", "lead.stage_changed")
_BRIEF = "lead.brief_filled"


def _in_range(since: datetime, until: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(leads.c.received_at >= since, leads.c.received_at < until)


def _entry_version() -> sa.ScalarSelect[int]:
    """The version of a lead's first decision (the one that took it in)."""
    return (
        sa.select(decisions.c.definition_version)
        .where(decisions.c.lead_id == leads.c.lead_id)
        .order_by(decisions.c.id)
        .limit(1)
        .correlate(leads)
        .scalar_subquery()
    )


async def count_leads(conn: AsyncConnection, *, since: datetime, until: datetime) -> int:
    count = await conn.scalar(sa.select(sa.func.count()).where(_in_range(since, until)))
    return int(count or 0)


async def lead_page(
    conn: AsyncConnection,
    version: int,
    *,
    since: datetime,
    until: datetime,
    after: str | None,
    limit: int,
) -> list[tuple[str, bool]]:
    """The next page of leads (id, contacted) received in range that `version` took in."""
    stmt = (
        sa.select(leads.c.lead_id, leads.c.first_contacted_at.is_not(None))
        .where(_in_range(since, until), _entry_version() == version)
        .order_by(leads.c.lead_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(leads.c.lead_id > after)
    return [(lead_id, bool(contacted)) for lead_id, contacted in await conn.execute(stmt)]


async def facts(conn: AsyncConnection, page: Sequence[tuple[str, bool]]) -> list[LeadFacts]:
    """Every decision of these leads, the stages sales reported, briefs and revenue."""
    ids = [lead_id for lead_id, _ in page]
    decided: dict[str, list[DecisionFact]] = defaultdict(list)
    rows = await conn.execute(
        sa.select(
            decisions.c.lead_id,
            decisions.c.definition_version,
            decisions.c.route,
            decisions.c.score,
            decisions.c.decision,
            decisions.c.decided_at,
        )
        .where(in_list(conn, decisions.c.lead_id, ids))
        .order_by(decisions.c.lead_id, decisions.c.id)
    )
    for lead_id, version, route, score, decision, at in rows:
        decided[lead_id].append(DecisionFact(version, route, score, decision, at))
    stages: dict[str, set[str]] = defaultdict(set)
    reasons: dict[str, list[str]] = defaultdict(list)
    briefed: set[str] = set()
    history = await conn.execute(
        sa.select(
            stage_history.c.lead_id,
            stage_history.c.stage,
            stage_history.c.event_type,
            stage_history.c.note,
        ).where(
            in_list(conn, stage_history.c.lead_id, ids),
            stage_history.c.event_type.in_((*_OUTCOME_EVENTS, _BRIEF)),
        )
    )
    for lead_id, stage, event_type, note in history:
        if event_type == _BRIEF:
            briefed.add(lead_id)
            continue
        stages[lead_id].add(stage)
        if stage == "rejected" and event_type == "lead.feedback" and note:
            reasons[lead_id].append(note)
    revenue = {
        lead_id: Decimal(total)
        for lead_id, total in await conn.execute(
            sa.select(payments.c.lead_id, sa.func.sum(payments.c.amount))
            .where(in_list(conn, payments.c.lead_id, ids))
            .group_by(payments.c.lead_id)
        )
    }
    return [
        LeadFacts(
            lead_id=lead_id,
            decisions=decided[lead_id],
            stages=frozenset(stages[lead_id]),
            rejection_reasons=tuple(reasons[lead_id]),
            revenue=revenue.get(lead_id, Decimal(0)),
            contacted=contacted,
            briefed=lead_id in briefed,
        )
        for lead_id, contacted in page
    ]


async def ratios_by_version(
    conn: AsyncConnection, *, since: datetime, until: datetime
) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """Per version that took leads in over the range: leads, contacted, briefed, SAL,
    rejected by sales, won, lost (what the brief, lead quality and win rates need)."""

    def reached(*stages: str, event_type: str | None = None) -> sa.ColumnElement[bool]:
        cond = [stage_history.c.lead_id == leads.c.lead_id]
        cond.append(
            stage_history.c.event_type == event_type
            if event_type
            else stage_history.c.event_type.in_(_OUTCOME_EVENTS)
        )
        if stages:
            cond.append(stage_history.c.stage.in_(stages))
        return sa.exists().where(*cond)

    version = _entry_version().label("version")
    per_lead = (
        sa.select(
            version,
            leads.c.first_contacted_at.is_not(None).label("contacted"),
            reached(event_type=_BRIEF).label("briefed"),
            reached("accepted").label("sal"),
            reached("rejected").label("rejected"),
            reached("won").label("won"),
            reached("lost").label("lost"),
        )
        .where(_in_range(since, until))
        .subquery()
    )

    def n(column: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count().filter(column)

    c = per_lead.c
    rows = await conn.execute(
        sa.select(
            c.version,
            sa.func.count(),
            n(c.contacted),
            n(c.briefed),
            n(c.sal),
            n(c.rejected),
            n(c.won),
            n(c.lost),
        )
        .where(c.version.is_not(None))
        .group_by(c.version)
        .order_by(c.version)
    )
    return [tuple(int(v) for v in row) for row in rows]  # type: ignore[misc]
