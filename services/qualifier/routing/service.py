"""Qualifier use cases: deciding leads, definitions, webinar attendance, erasure.

They run inside the caller's transaction (a consumed batch, an HTTP request): they may
write, never commit, so a decision, its history and the events it owes commit together.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from time import monotonic
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier import repository
from services.qualifier.backtest import Backtest, Bounds, Judged, SalesFeedback
from services.qualifier.definition import Assignment, LeadDefinition
from services.qualifier.definition_diff import Change, diff_documents, diff_text
from services.qualifier.definition_source import LoadedDefinition, load_definition
from services.qualifier.evaluator import AssignmentState, evaluate
from services.qualifier.snapshot import erase_person, merge_answers
from services.qualifier.tables import outbox
from services.qualifier.webhooks import url_problem
from shared.db import AnyRow
from shared.events import (
    SOURCE_QUALIFIER,
    Decision,
    Event,
    LeadBriefFilled,
    LeadErased,
    LeadErasedData,
    LeadFeedback,
    LeadReceived,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadStageChanged,
    LeadWebinarAttended,
    Route,
    Stage,
    decode_event,
    encode_event,
)
from shared.outbox import add_to_outbox

log = logging.getLogger(__name__)

# Ids of events derived from another event are a function of the cause, so even a
# second run of the same cause could only ever publish the same event id.
_DERIVED_ID_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-4d8e-9a57-1d7c1f4e2b10")
QUALIFIER = "qualifier"
# Attending a webinar is news for a lead still being warmed up or still missing
# information; one that sales or a partner already works is left as it is.
_REQUALIFY_ON_ATTENDANCE = {Route.nurture, Route.processing}


class NoActiveDefinition(RuntimeError):
    pass


class UnknownDefinition(LookupError):
    pass


def derived_event_id(cause_id: str, what: str) -> str:
    return str(uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{cause_id}/{what}"))


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


# Definitions ------------------------------------------------------------------------------


async def ensure_initial_definition(conn: AsyncConnection, text: str, now: datetime) -> None:
    """Publish the given definition (the bundled one) as version 1 on a fresh database."""
    if await repository.has_definitions(conn):
        return
    loaded = load_definition(text)
    await repository.insert_definition(
        conn, version=1, name=loaded.definition.name, status="active", document=loaded.document,
        source_text=text, at=now, by="leadflow (initial definition)",
    )  # fmt: skip


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
        conn, version=number, name=loaded.definition.name, status="draft",
        document=loaded.document, source_text=text, at=now, by=by,
    )  # fmt: skip
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


# Deciding ---------------------------------------------------------------------------------


async def assignment_state(
    conn: AsyncConnection, definition: LeadDefinition, now: datetime
) -> AssignmentState:
    """Counters, loads and absences, under the lock that serializes assignment."""
    await repository.lock_round_robin(conn)
    least_loaded = any(t.assign is Assignment.least_loaded for t in definition.sales_teams)
    return AssignmentState(
        round_robin_next=await repository.round_robin_counters(conn),
        open_leads=await repository.open_leads_by_assignee(conn) if least_loaded else {},
        absent=await repository.absent_members(conn, now),
    )


@dataclass(frozen=True)
class Cause:
    """A lead to decide, and the event that asks for it (its id and business time)."""

    lead: LeadSnapshot
    cause_id: str
    time: datetime
    # The lead has a row already: it is updated, not inserted.
    stored: bool = False
    # Already contacted: if it still lacks information it stays `contacted`, so its brief
    # can be completed without a second first contact.
    contacted: bool = False
    # The person was erased: the decision is made and counted, but what is stored and
    # published about them holds no personal data and no partner receives it.
    erased_at: datetime | None = None


async def decide(
    conn: AsyncConnection, causes: Sequence[Cause], *, now: datetime
) -> list[tuple[Decision, LeadRouted]]:
    """Decide leads with the active definition, store them and owe their `lead.routed`
    (and partner deliveries), as if one after the other, in a few multi-row statements:
    the definition and the assignment state are read once, and the state moves on in
    memory from one lead's assignment to the next.

    Each event's id derives from its cause, and it carries the cause's business `time`.
    """
    number, definition = await active(conn)
    state = await assignment_state(conn, definition, now)
    writes = _Writes()
    decided: list[tuple[Decision, LeadRouted]] = []
    for cause in causes:
        result = evaluate(cause.lead, definition, number, now=now, assignment=state)
        decision = result.decision
        state = _advance(state, result.round_robin_advance, decision)
        if result.round_robin_advance is not None:
            team, next_index = result.round_robin_advance
            writes.round_robin[team] = next_index
        decided.append((decision, writes.add(cause, decision, definition, now=now)))
    await writes.flush(conn)
    return decided


async def qualify_leads(
    conn: AsyncConnection, causes: Sequence[LeadReceived], *, now: datetime
) -> list[Decision]:
    """Decide received leads together (`decide`); one decision per cause.

    A lead that came in first by another event (its webinar attendance, say) was decided
    then; a second `lead.received` for it is not a second lead.
    """
    ids = [c.data.lead_id for c in causes]
    existing = {
        lead_id: Decision.model_validate(stored)
        for lead_id, stored in (await repository.current_decisions(conn, ids)).items()
    }
    erased_at = await repository.erasures_of(conn, ids)
    new: dict[str, Cause] = {}
    for received in causes:
        lead = received.data
        if lead.lead_id in existing or lead.lead_id in new:
            log.warning(
                "lead %s is already qualified; ignoring lead.received %s", lead.lead_id, received.id
            )
            continue
        erased = erased_at.get(lead.lead_id)
        new[lead.lead_id] = Cause(lead, received.id, received.time, erased_at=erased)
    decided = await decide(conn, list(new.values()), now=now)
    existing |= {lead_id: decision for lead_id, (decision, _) in zip(new, decided, strict=True)}
    return [existing[c.data.lead_id] for c in causes]


def _advance(
    state: AssignmentState, advance: tuple[str, int] | None, decision: Decision
) -> AssignmentState:
    """The assignment state the next lead of a run sees: what re-reading it would give."""
    counters = dict(state.round_robin_next)
    if advance is not None:
        counters[advance[0]] = advance[1]
    loads = dict(state.open_leads)
    if decision.route is Route.sales and decision.assignee is not None:
        loads[decision.assignee] = loads.get(decision.assignee, 0) + 1
    return AssignmentState(round_robin_next=counters, open_leads=loads, absent=state.absent)


class _Writes:
    """The rows a run of decisions owes, written together at the end."""

    def __init__(self) -> None:
        self.new_leads: list[dict[str, Any]] = []
        self.stored_leads: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.events: list[LeadRouted] = []
        self.deliveries: list[dict[str, Any]] = []
        self.round_robin: dict[str, int] = {}

    def add(
        self, cause: Cause, decision: Decision, definition: LeadDefinition, *, now: datetime
    ) -> LeadRouted:
        lead, erased = cause.lead, cause.erased_at is not None
        stage = (
            Stage.contacted
            if cause.contacted and decision.route is Route.processing
            else Stage.routed
        )
        stored = lead.model_dump(mode="json")
        if erased:
            stored = erase_person(stored)
        routed = _routed(lead, stored, decision, cause_id=cause.cause_id, time=cause.time)
        row = {"lead_id": lead.lead_id} | repository.lead_row(lead, stored, decision, stage, now)
        if not cause.stored:
            self.new_leads.append(row | {"erased_at": cause.erased_at})
        else:
            self.stored_leads.append(row | ({"erased_at": cause.erased_at} if erased else {}))
        self.decisions.append(repository.decision_row(lead.lead_id, decision, cause.cause_id))
        self.history.append(
            repository.history_row(
                lead_id=lead.lead_id, stage=stage, at=cause.time, by=QUALIFIER,
                reason=" ".join(decision.reasons), event_id=routed.id, event_type=routed.type,
            )
        )  # fmt: skip
        self.events.append(routed)
        partner = definition.partner(decision.partner) if decision.partner else None
        if partner is not None and partner.webhook_url and not erased:
            self.deliveries.append(
                repository.delivery_row(
                    delivery_id=derived_event_id(routed.id, "delivery"), lead_id=lead.lead_id,
                    partner_id=partner.id, event_id=routed.id, url=partner.webhook_url,
                    payload=encode_event(routed), now=now,
                )
            )  # fmt: skip
        return routed

    async def flush(self, conn: AsyncConnection) -> None:
        for team, next_index in self.round_robin.items():
            await repository.set_round_robin(conn, team, next_index)
        for row in self.stored_leads:
            await repository.update_lead(conn, **row)
        await repository.insert_decided(conn, self.new_leads, self.decisions, self.history)
        await repository.insert_deliveries(conn, self.deliveries)
        await add_to_outbox(conn, outbox, self.events)


def _routed(
    lead: LeadSnapshot, stored: dict[str, Any], decision: Decision, *, cause_id: str, time: datetime
) -> LeadRouted:
    return LeadRouted(
        id=derived_event_id(cause_id, "routed"),
        source=SOURCE_QUALIFIER,
        time=time,
        subject=lead.lead_id,
        data=LeadRoutedData(**LeadSnapshot.model_validate(stored).model_dump(), decision=decision),
    )


async def record_webinar_attendance(
    conn: AsyncConnection, cause: LeadWebinarAttended, *, now: datetime
) -> Decision | None:
    """Keep the updated snapshot; qualify again a lead still warmed up or in processing.

    A new routing is stored and published only when the route changes: a nurtured lead
    that still scores too low stays nurtured without a second `lead.routed` to count.
    Returns the new decision, if any.
    """
    lead = cause.data
    row = await repository.lock_lead(conn, lead.lead_id)
    if row is None:
        # Attendance is the first we hear of this lead: it is a lead like any other.
        erased_at = await repository.erasure_of(conn, lead.lead_id)
        [(decision, _)] = await decide(
            conn, [Cause(lead, cause.id, cause.time, erased_at=erased_at)], now=now
        )
        return decision
    if row.erased_at is not None:
        return None
    if row.brief_answers:
        lead = merge_answers(lead, row.brief_answers)
    await repository.update_snapshot(conn, lead.lead_id, lead.model_dump(mode="json"), now)
    route, stage = Route(row.route), Stage(row.stage)
    if route not in _REQUALIFY_ON_ATTENDANCE or stage not in (Stage.routed, Stage.contacted):
        return None
    number, definition = await active(conn)
    preview = evaluate(lead, definition, number, now=now).decision
    if preview.route is route:
        return None
    again = Cause(lead, cause.id, cause.time, stored=True, contacted=stage is Stage.contacted)
    [(decision, _)] = await decide(conn, [again], now=now)
    return decision


async def erase_lead(conn: AsyncConnection, cause: LeadErased, *, now: datetime) -> bool:
    """Forget the person; keep the decisions, the route, the stages and the counts.

    Partners that may have the lead (a delivery was attempted) are owed a signed
    `lead.erased` webhook, through the same queue as leads. True when one is owed.
    """
    lead_id = cause.data.lead_id
    await repository.record_erasure(conn, lead_id, cause.data.at, cause.id)
    row = await repository.lock_lead(conn, lead_id)
    if row is None:
        return False  # the tombstone erases it on arrival
    owed: list[dict[str, Any]] = []
    if row.erased_at is None:
        await repository.update_lead(
            conn, lead_id, snapshot=erase_person(row.snapshot), brief_answers=None,
            erased_at=cause.data.at, updated_at=now,
        )  # fmt: skip
        owed = await _erasure_webhooks(conn, cause, now=now)
    await repository.erase_history_text(conn, lead_id)
    await repository.cancel_deliveries_of(conn, lead_id, now)
    await repository.insert_deliveries(conn, owed)
    # Events of the lead still waiting for Kafka go out without the person, too.
    for pending in await repository.pending_events_of(conn, lead_id):
        scrubbed = _without_person(decode_event(pending.payload))
        if scrubbed is not None:
            await repository.replace_pending_payload(conn, pending.id, encode_event(scrubbed))
    return bool(owed)


async def _erasure_webhooks(
    conn: AsyncConnection, cause: LeadErased, *, now: datetime
) -> list[dict[str, Any]]:
    """One `lead.erased` delivery per partner that may have the lead: to its webhook in the
    active definition, else where the lead was sent. It is due once any attempt under way
    to send the lead has had its time, so the erasure does not overtake the lead."""
    lead_id = cause.data.lead_id
    sent = await repository.partners_that_may_have_the_lead(conn, lead_id)
    if not sent:
        return []
    try:
        _, definition = await active(conn)
        current = {p.id: p.webhook_url for p in definition.partners if p.webhook_url}
    except NoActiveDefinition:
        current = {}
    leases = [r.next_attempt_at for r in sent if r.claim_token is not None]
    due = max([now, *leases])
    rows: list[dict[str, Any]] = []
    for partner_id in dict.fromkeys(r.partner_id for r in sent):
        last_url = next(r.url for r in sent if r.partner_id == partner_id)
        event = LeadErased(
            id=derived_event_id(cause.id, f"erased/{partner_id}"), source=SOURCE_QUALIFIER,
            time=cause.time, subject=lead_id,
            data=LeadErasedData(lead_id=lead_id, at=cause.data.at),
        )  # fmt: skip
        rows.append(
            repository.delivery_row(
                delivery_id=derived_event_id(event.id, "delivery"), lead_id=lead_id,
                partner_id=partner_id, event_id=event.id, event_type=event.type,
                url=current.get(partner_id, last_url), payload=encode_event(event), now=now,
                due=due,
            )
        )  # fmt: skip
    return rows


def _without_person(event: Event) -> Event | None:
    """A pending event of an erased lead rewritten without the person; None if it holds
    nothing of theirs. Sales' free text goes too (it may name people)."""
    if isinstance(event, LeadRouted):
        data = LeadRoutedData.model_validate(erase_person(event.data.model_dump(mode="json")))
        return event.model_copy(update={"data": data})
    if isinstance(event, LeadBriefFilled):
        return event.model_copy(update={"data": event.data.model_copy(update={"answers": {}})})
    if isinstance(event, LeadFeedback | LeadStageChanged) and event.data.reason is not None:
        return event.model_copy(update={"data": event.data.model_copy(update={"reason": None})})
    return None


# Back-test --------------------------------------------------------------------------------


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
