"""Definition use cases: the active version, drafts, publishing, diffs and back-tests.

They run inside the caller's transaction; they may write, never commit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from time import monotonic
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.definitions import repository
from services.qualifier.definitions.backtest import Backtest, Bounds, Judged, SalesFeedback
from services.qualifier.definitions.diff import Change, diff_documents, diff_text
from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.definitions.source import LoadedDefinition, load_definition
from services.qualifier.partners.webhooks import url_problem
from shared.db import AnyRow
from shared.events import LeadSnapshot


class NoActiveDefinition(RuntimeError):
    pass


class UnknownDefinition(LookupError):
    pass


@lru_cache(maxsize=64)
def _definition(version: int, document_json: bytes) -> LeadDefinition:
    return LeadDefinition.model_validate(orjson.loads(document_json))


def definition_of(version: int, document: dict[str, Any]) -> LeadDefinition:
    """Parsed definitions are immutable per version, so they are parsed once."""
    return _definition(version, orjson.dumps(document, option=orjson.OPT_SORT_KEYS))


# Parsed active definitions by (database, version, created_at): a version never changes,
# so deciding a batch reads two small columns, not the document.
_ACTIVE: dict[tuple[str, int, datetime], LeadDefinition] = {}


async def active(conn: AsyncConnection) -> tuple[int, LeadDefinition]:
    head = await repository.active_definition(conn)
    if head is None:
        raise NoActiveDefinition("no active lead definition; publish one")
    key = (conn.engine.url.render_as_string(), head.version, head.created_at)
    definition = _ACTIVE.get(key)
    if definition is None:
        _, definition = await version(conn, head.version)
        _ACTIVE.clear()  # only the active one is kept
        _ACTIVE[key] = definition
    return head.version, definition


async def version(conn: AsyncConnection, number: int) -> tuple[AnyRow, LeadDefinition]:
    row = await repository.get_definition(conn, number)
    if row is None:
        raise UnknownDefinition(f"no definition version {number}")
    return row, definition_of(row.version, row.document)


async def ensure_initial_definition(conn: AsyncConnection, text: str, now: datetime) -> None:
    """Publish the given definition (the bundled one) as version 1 on a fresh database."""
    if await repository.has_definitions(conn):
        return
    loaded = load_definition(text)
    await repository.insert_definition(
        conn,
        version=1,
        name=loaded.definition.name,
        status="active",
        document=loaded.document,
        source_text=text,
        at=now,
        by="leadflow (initial definition)",
    )


async def create_draft(
    conn: AsyncConnection,
    text: str,
    *,
    by: str,
    now: datetime,
    loaded: LoadedDefinition | None = None,
) -> int:
    """Store a checked definition as the next version, a draft; raise DefinitionInvalid.

    `loaded`: the text read already (the API reads it off the event loop, before this
    transaction starts)."""
    loaded = loaded or load_definition(text)
    await repository.lock_definitions(conn)
    number = await repository.highest_definition_version(conn) + 1
    await repository.insert_definition(
        conn,
        version=number,
        name=loaded.definition.name,
        status="draft",
        document=loaded.document,
        source_text=text,
        at=now,
        by=by,
    )
    return number


def partners_without_secret(definition: LeadDefinition, secrets: set[str]) -> list[int]:
    """Indexes of partners with a webhook but no signing secret configured."""
    return [i for i, p in enumerate(definition.partners) if p.webhook_url and p.id not in secrets]


def unsafe_partner_webhooks(
    definition: LeadDefinition, *, production: bool
) -> list[tuple[int, str]]:
    """Partners whose webhook URL the deliverer would refuse whatever DNS says (index, why):
    not https in production, or a non-public address literal (`webhooks.url_problem`)."""
    return [
        (i, problem)
        for i, p in enumerate(definition.partners)
        if p.webhook_url and (problem := url_problem(p.webhook_url, production=production))
    ]


async def publish(conn: AsyncConnection, number: int, *, by: str, now: datetime) -> bool:
    """Make `number` the active version atomically; False when it already was."""
    await repository.lock_definitions(conn)
    row, _ = await version(conn, number)
    if row.status == "active":
        return False
    await repository.activate_definition(conn, number, at=now, by=by)
    return True


@dataclass(frozen=True)
class DefinitionDiff:
    old_version: int
    new_version: int
    changes: list[Change]
    text: str


async def diff(conn: AsyncConnection, old_number: int, new_number: int) -> DefinitionDiff:
    old, _ = await version(conn, old_number)
    new, _ = await version(conn, new_number)
    # A line diff of two large texts takes seconds of CPU (difflib): off the event loop.
    names = f"version {old_number}", f"version {new_number}"
    text = await asyncio.to_thread(diff_text, old.source_text, new.source_text, *names)
    return DefinitionDiff(
        old_version=old_number,
        new_version=new_number,
        changes=diff_documents(old.document, new.document),
        text=text,
    )


@dataclass(frozen=True)
class BacktestRun:
    tally: Backtest
    since: datetime
    until: datetime
    skipped_erased: int


async def backtest(
    conn: AsyncConnection,
    number: int,
    *,
    since: datetime,
    until: datetime,
    limit: int,
    bounds: Bounds | None = None,
) -> BacktestRun:
    """Run version `number` and the active one over the leads received in [since, until);
    raise BacktestRefused past the bounds (checked before each page is judged)."""
    bounds = bounds or Bounds()
    started = monotonic()
    _, tested = await version(conn, number)
    active_number, active_definition = await active(conn)
    tally = Backtest(
        Judged(tested, number), Judged(active_definition, active_number), change_limit=limit
    )
    skipped, after = 0, None
    while True:
        page = await repository.leads_for_backtest(
            conn, since=since, until=until, after=after, limit=_BACKTEST_PAGE
        )
        if not page:
            break
        bounds.check(leads=tally.leads + skipped + len(page), elapsed=monotonic() - started)
        after = page[-1].lead_id
        judgeable = [(r.snapshot, r.feedback) for r in page if r.erased_at is None]
        skipped += len(page) - len(judgeable)
        # Evaluating thousands of leads is CPU work: off the event loop, page by page.
        await asyncio.to_thread(_judge, tally, judgeable)
    return BacktestRun(tally, since, until, skipped)


_BACKTEST_PAGE = 500


def _judge(tally: Backtest, page: list[tuple[dict[str, Any], str | None]]) -> None:
    for snapshot, feedback in page:
        verdict: SalesFeedback | None = (
            "accepted" if feedback == "accepted" else "rejected" if feedback == "rejected" else None
        )
        tally.add(LeadSnapshot.model_validate(snapshot), verdict)
