"""Reviewing a version over a range of received leads, within the back-test's bounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.definitions import service as definitions
from services.qualifier.review import repository
from services.qualifier.review.tally import LeadFacts, Review

PAGE = 1000


class ReviewRefused(ValueError):
    """The review asks for more than its bounds allow; the message names the bound."""

    def __init__(self, kind: Literal["too_many_leads", "over_budget"], message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class VersionRatios:
    version: int
    leads: int
    contacted: int
    briefed: int
    sal: int
    rejected_by_sales: int
    won: int
    lost: int


@dataclass(frozen=True)
class ReviewRun:
    review: Review
    since: datetime
    until: datetime
    versions: list[VersionRatios]


async def review(
    conn: AsyncConnection,
    number: int,
    *,
    since: datetime,
    until: datetime,
    max_leads: int,
    budget_seconds: float,
    list_limit: int,
) -> ReviewRun:
    """Tally version `number` over the leads received in [since, until); raise
    UnknownDefinition, or ReviewRefused past the bounds (the leads of the whole range are
    counted before any is read; the time budget is checked before each page)."""
    started = monotonic()
    _, definition = await definitions.version(conn, number)
    total = await repository.count_leads(conn, since=since, until=until)
    if total > max_leads:
        raise ReviewRefused(
            "too_many_leads",
            f"the range holds {total} leads, more than {max_leads}, the most a review reads: "
            "narrow it (from, to)",
        )
    tally = Review(definition, number, list_limit=list_limit)
    after: str | None = None
    while True:
        if monotonic() - started > budget_seconds:
            raise ReviewRefused(
                "over_budget",
                f"the review had not finished after {budget_seconds:g} s, its time budget: "
                "narrow the range (from, to)",
            )
        page = await repository.lead_page(
            conn, number, since=since, until=until, after=after, limit=PAGE
        )
        if not page:
            break
        after = page[-1][0]
        facts = await repository.facts(conn, page)
        # Tallying thousands of decisions is CPU work: off the event loop, page by page.
        await asyncio.to_thread(_tally, tally, facts)
    versions = [
        VersionRatios(*row)
        for row in await repository.ratios_by_version(conn, since=since, until=until)
    ]
    return ReviewRun(tally, since, until, versions)


def _tally(tally: Review, facts: list[LeadFacts]) -> None:
    for lead in facts:
        tally.add(lead)
