"""Suggesting edits of a definition version: split sales' answers by time, fit the older
ones in the fitting process, write the fit as the definition's own rules, judge the draft
beside the active version on the newer leads, and store it as a draft.

Runs inside the caller's transaction; it may write (the draft), never commits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import monotonic

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.definitions import service as definitions
from services.qualifier.definitions.backtest import Bounds, Judged
from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.definitions.source import load_definition
from services.qualifier.suggest import repository
from services.qualifier.suggest.features import Row, row_of
from services.qualifier.suggest.fit_process import FitProcess
from services.qualifier.suggest.fitted import Fit, Params
from services.qualifier.suggest.holdout import SideBySide
from services.qualifier.suggest.translate import Suggestion, draft_text, suggest
from shared.db import AnyRow
from shared.events import LeadSnapshot

_PAGE = 1000


@dataclass(frozen=True)
class Split:
    since: datetime
    until: datetime
    held_out_from: datetime | None  # None: too few outcomes to split
    outcomes: int
    training_outcomes: int


@dataclass(frozen=True)
class SuggestRun:
    version: int
    split: Split
    fit: Fit | None = None  # None when there were too few outcomes to start one
    suggestion: Suggestion | None = None
    why_not: str | None = None
    draft_version: int | None = None
    draft_text: str | None = None
    diff: definitions.DefinitionDiff | None = None
    side_by_side: SideBySide | None = None


async def suggest_edits(
    conn: AsyncConnection,
    number: int,
    *,
    since: datetime,
    until: datetime,
    params: Params,
    held_out_share: float,
    bounds: Bounds,
    by: str,
    now: datetime,
) -> SuggestRun:
    """Raise UnknownDefinition, BacktestRefused (past the bounds)."""
    started = monotonic()
    row, definition = await definitions.version(conn, number)
    active_number, active_definition = await definitions.active(conn)
    bounds.check(leads=await repository.count_leads(conn, since=since, until=until), elapsed=0)
    outcomes = await repository.count_outcomes(conn, since=since, until=until)
    older = int(outcomes * (1 - held_out_share))
    cut = await repository.split_time(conn, since=since, until=until, older=older)
    split = Split(since, until, cut, outcomes, older)

    def refused(why: str, fit: Fit | None = None) -> SuggestRun:
        return SuggestRun(number, split, fit, why_not=why)

    if cut is None or older < params.min_outcomes:
        return refused(
            f"not enough evidence yet: {outcomes} leads with sales' answer in the range, "
            f"{older} of them older than the held-out ones; a suggestion needs at least "
            f"{params.min_outcomes} (LEADFLOW_QUALIFIER_SUGGEST_MIN_OUTCOMES)"
        )

    def elapsed() -> float:
        return monotonic() - started

    async def send(page: list[AnyRow]) -> None:
        await process.send(await asyncio.to_thread(_rows, page, definition))

    async with FitProcess([r.points for r in definition.score], params) as process:
        await _pages(conn, since, cut, bounds, elapsed, send, answered_only=True)
        try:
            async with asyncio.timeout(_left(bounds, elapsed())):
                fit = await process.result()
        except TimeoutError:
            bounds.check(leads=0, elapsed=float("inf"))
            raise
    if not fit.enough:
        return refused(f"not enough evidence yet: {fit.why_not}", fit)
    suggestion = suggest(row.document, fit)
    if not suggestion.changes:
        why = "the evidence supports the version as it is: no change to suggest"
        return SuggestRun(number, split, fit, suggestion, why)
    text = draft_text(suggestion, version=number, outcomes=fit.outcomes)
    loaded = await asyncio.to_thread(load_definition, text)
    side = SideBySide(Judged(loaded.definition, number), Judged(active_definition, active_number))

    async def judge(page: list[AnyRow]) -> None:
        await asyncio.to_thread(_judge, side, page)

    await _pages(conn, cut, until, bounds, elapsed, judge, answered_only=False)
    draft = await definitions.create_draft(conn, text, by=by, now=now, loaded=loaded)
    diff = await definitions.diff(conn, number, draft)
    return SuggestRun(number, split, fit, suggestion, None, draft, text, diff, side)


def _left(bounds: Bounds, elapsed: float) -> float | None:
    return None if bounds.budget_seconds is None else max(0.0, bounds.budget_seconds - elapsed)


async def _pages(
    conn: AsyncConnection,
    since: datetime,
    until: datetime,
    bounds: Bounds,
    elapsed: Callable[[], float],
    consume: Callable[[list[AnyRow]], Awaitable[None]],
    *,
    answered_only: bool,
) -> None:
    """Hand `consume` the readable leads of [since, until) page by page, within the budget."""
    after = None
    while True:
        page = await repository.page(
            conn, since=since, until=until, after=after, limit=_PAGE, answered_only=answered_only
        )
        if not page:
            return
        bounds.check(leads=0, elapsed=elapsed())
        after = page[-1].lead_id
        await consume(page)


# Reading and judging thousands of leads is CPU work: these run off the event loop.
def _rows(page: list[AnyRow], definition: LeadDefinition) -> list[Row]:
    rows = [
        row_of(
            LeadSnapshot.model_validate(r.snapshot), definition, accepted=r.feedback == "accepted"
        )
        for r in page
    ]
    return [r for r in rows if r is not None]


def _judge(side: SideBySide, page: list[AnyRow]) -> None:
    for r in page:
        feedback = r.feedback if r.feedback in ("accepted", "rejected") else None
        snapshot = LeadSnapshot.model_validate(r.snapshot)
        side.add(snapshot, feedback, bool(r.won), Decimal(r.revenue or 0))
