"""The qualifier's Kafka handler on a real database: one decision per lead whatever is
redelivered, webinar attendance, erasure, and its own events coming back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.qualifier.config import DEFAULT_DEFINITION, QualifierSettings
from services.qualifier.consumer import make_handler
from services.qualifier.definitions import service
from services.qualifier.event_ids import derived_event_id
from services.qualifier.tables import (
    decisions,
    deliveries,
    inbox,
    leads,
    outbox,
    stage_history,
)
from shared.db import utcnow
from shared.delivery import Delivered
from shared.events import (
    LeadErased,
    LeadErasedData,
    LeadFeedback,
    LeadReceived,
    LeadRouted,
    LeadWebinarAttended,
    decode_event,
    encode_event,
)
from shared.migrations import migrate
from shared.runtime import Runtime
from shared.settings import CommonSettings
from tests.fixtures.qualifier.harness import Harness, definition_text, publish, qualifier_app
from tests.support import received


async def test_a_redelivered_lead_is_decided_once(database_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url)
    settings = QualifierSettings(
        database_url=database_url,
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1"),
    )
    runtime = Runtime(settings, outbox=outbox)
    async with runtime.engine.begin() as conn:
        await service.ensure_initial_definition(
            conn, DEFAULT_DEFINITION.read_text(encoding="utf-8"), utcnow()
        )
    handle = make_handler(runtime)
    events = [received(), received(budget=None), received(services=["smm"])]
    batch = [Delivered(e, "leads.received", 0, i) for i, e in enumerate(events)]
    await handle(batch)
    await handle(batch)  # redelivery of the whole batch
    await handle(batch[1:2])  # and of one event alone

    async with runtime.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(leads)) == 3
        assert await conn.scalar(sa.select(sa.func.count()).select_from(decisions)) == 3
        payloads = (await conn.execute(sa.select(outbox.c.payload))).scalars().all()
        routes = (await conn.execute(sa.select(leads.c.lead_id, leads.c.route))).all()
    routed = [decode_event(p) for p in payloads]
    assert all(isinstance(e, LeadRouted) for e in routed)
    assert len({e.id for e in routed}) == 3
    assert dict(routes) == {
        events[0].subject: "sales",
        events[1].subject: "processing",
        events[2].subject: "partner",
    }
    # The routed event carries the business time of its cause.
    assert {e.time for e in routed} == {e.time for e in events}
    await runtime.stop()


# Webinar attendance, erasure, and the qualifier's own events coming back ------------------

WEBINAR_SCORES = (
    "    when: {email_free_provider: true}\n",
    "    when: {email_free_provider: true}\n  - points: 30\n    when: {webinar_attended: true}\n",
)
# 25 company size + 20 budget + 10 industry = 55: below 60, nurtured; +30 for attending.
LUKEWARM = {"role_in_purchase": "user", "timeframe": "later"}


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


def attended(lead: LeadReceived, **overrides: Any) -> LeadWebinarAttended:
    data = lead.data.model_copy(update={"webinar_attended": True, **overrides})
    return LeadWebinarAttended(
        source="/intake", time=lead.time + timedelta(days=3), subject=lead.subject, data=data
    )


def erased(lead_id: str) -> LeadErased:
    now = datetime.now(UTC)
    return LeadErased(
        source="/intake",
        time=now,
        subject=lead_id,
        data=LeadErasedData(lead_id=lead_id, at=now, by="dpo"),
    )


class TestWebinarAttendance:
    async def test_a_nurtured_lead_that_attends_is_qualified_again(self, q: Harness) -> None:
        await publish(q.http, definition_text(WEBINAR_SCORES))
        lead = received(**LUKEWARM)
        await q.receive(lead)
        assert (await q.lead(lead.subject))["route"] == "nurture"
        came = attended(lead)
        await q.receive(came)
        await q.receive(came)  # redelivered: applied once

        routed = await q.events(lead_id=lead.subject, type="lead.routed")
        assert [r.data.decision.route.value for r in routed] == ["nurture", "sales"]  # type: ignore[union-attr]
        again = routed[1]
        assert again.id == derived_event_id(came.id, "routed")
        assert again.time == came.time  # the attendance's business time
        assert again.data.webinar_attended is True  # type: ignore[union-attr]
        assert "+30 attended the webinar" in again.data.decision.reasons[0]  # type: ignore[union-attr]
        view = await q.lead(lead.subject)
        assert view["lead"]["webinar_attended"] is True
        assert (view["route"], view["stage"], len(view["decisions"])) == ("sales", "routed", 2)

    async def test_attending_without_a_change_of_route_publishes_nothing(self, q: Harness) -> None:
        lead = received(**LUKEWARM)  # the example definition gives no points for attending
        await q.receive(lead, attended(lead))
        assert len(await q.events(lead_id=lead.subject, type="lead.routed")) == 1
        view = await q.lead(lead.subject)
        assert view["lead"]["webinar_attended"] is True and len(view["decisions"]) == 1

    async def test_a_lead_sales_already_works_is_left_alone(self, q: Harness) -> None:
        await publish(q.http, definition_text(WEBINAR_SCORES))
        lead = received()
        await q.receive(lead)
        r = await q.http.post(f"/v1/leads/{lead.subject}/feedback", json={"decision": "accepted"})
        assert r.status_code == 200
        await q.receive(attended(lead))
        view = await q.lead(lead.subject)
        assert (view["stage"], len(view["decisions"])) == ("accepted", 1)
        assert view["lead"]["webinar_attended"] is True

    async def test_brief_answers_survive_a_later_snapshot_from_intake(self, q: Harness) -> None:
        await publish(q.http, definition_text(WEBINAR_SCORES))
        lead = received(budget=None, timeframe=None, role_in_purchase="user")
        await q.receive(lead)
        await q.http.post(f"/v1/leads/{lead.subject}/contact")
        r = await q.http.post(
            f"/v1/leads/{lead.subject}/brief",
            json={"answers": {"budget": "200000", "fields": {"crm": "none"}}},
        )
        assert r.json()["route"] == "processing"  # timeframe still missing
        # Intake knows nothing of the brief: its snapshot has no budget.
        await q.receive(attended(lead))
        view = await q.lead(lead.subject)
        assert view["lead"]["budget"] == "200000" and view["lead"]["fields"] == {"crm": "none"}
        assert view["lead"]["webinar_attended"] is True
        r = await q.http.post(
            f"/v1/leads/{lead.subject}/brief", json={"answers": {"timeframe": "later"}}
        )
        # 25 size + 20 budget + 10 industry + 30 webinar = 85: sales.
        assert (r.json()["route"], r.json()["decision"]["score"]) == ("sales", 85)

    async def test_attendance_of_an_unknown_lead_qualifies_it(self, q: Harness) -> None:
        lead = received()
        came = attended(lead)
        await q.receive(came)
        (routed,) = await q.events(lead_id=lead.subject, type="lead.routed")
        assert routed.id == derived_event_id(came.id, "routed")
        await q.receive(lead)  # the late lead.received decides nothing new
        assert len((await q.lead(lead.subject))["decisions"]) == 1


class TestErasure:
    async def test_the_person_is_forgotten_and_the_decisions_stay(self, q: Harness) -> None:
        lead = received(
            name="Anna Petrova",
            phone="+79123456789",
            job_title="CEO",
            message="call me at home",
            fields={"linkedin": "anna-p"},
            page_url="https://acme.example/?email=anna%40acme.example",
        )
        await q.receive(lead)
        rejection = {"decision": "rejected", "reason": "Anna is a student"}
        r = await q.http.post(f"/v1/leads/{lead.subject}/feedback", json=rejection)
        assert r.status_code == 200
        await q.receive(erased(lead.subject))

        view = await q.lead(lead.subject)
        person = view["lead"]
        assert view["erased"] is True
        for field in ("name", "email", "phone", "company", "job_title", "message"):
            assert person[field] is None, field
        assert person["fields"] == {}
        assert person["page_url"] == "https://acme.example/"
        # What describes the need and the channel stays, and so do the decisions.
        assert (person["company_size"], person["budget"], person["services"]) == (
            "101-500",
            "200000",
            ["seo"],
        )
        assert (view["route"], view["stage"], view["feedback"]) == ("sales", "rejected", "rejected")
        assert len(view["decisions"]) == 1 and view["decision"]["score"] == 100
        assert [h["stage"] for h in view["stages"]] == ["routed", "rejected"]
        # The history's words go: sales' notes, and reasons that may repeat the person.
        assert [(h["note"], h["reason"]) for h in view["stages"]] == [(None, None)] * 2
        # So do the person and sales' words in its events still waiting for Kafka.
        (routed,) = await q.events(lead_id=lead.subject, type="lead.routed")
        assert isinstance(routed, LeadRouted)
        assert (routed.data.name, routed.data.phone, routed.data.message) == (None, None, None)
        assert routed.data.decision.score == 100
        (feedback,) = await q.events(lead_id=lead.subject, type="lead.feedback")
        assert isinstance(feedback, LeadFeedback) and feedback.data.reason is None
        assert feedback.data.decision == "rejected"

    async def test_an_erasure_that_arrives_first_is_applied_on_arrival(self, q: Harness) -> None:
        lead = received(name="Boris", services=["smm"])
        # Topics do not order against each other: the erasure may come first.
        await q.receive(erased(lead.subject), lead)
        (routed,) = await q.events(lead_id=lead.subject, type="lead.routed")
        assert isinstance(routed, LeadRouted)
        assert routed.data.decision.route.value == "partner"  # decided and counted...
        assert (routed.data.name, routed.data.email) == (None, None)  # ...about nobody
        view = await q.lead(lead.subject)
        assert view["lead"]["name"] is None and view["erased"] is True
        # A later snapshot from intake (attendance) does not bring the person back.
        await q.receive(attended(lead, name="Boris"))
        assert (await q.lead(lead.subject))["lead"]["name"] is None

    async def test_a_lifecycle_call_after_erasure_still_counts(self, q: Harness) -> None:
        lead = received()
        await q.receive(lead, erased(lead.subject))
        r = await q.http.post(f"/v1/leads/{lead.subject}/feedback", json={"decision": "accepted"})
        assert r.status_code == 200
        (event,) = await q.events(lead_id=lead.subject, type="lead.feedback")
        assert event.data.dimensions.source == "web_form"  # type: ignore[union-attr]


async def test_the_qualifiers_own_events_are_not_applied_again(q: Harness) -> None:
    lead = received()
    await q.receive(lead)
    r = await q.http.post(f"/v1/leads/{lead.subject}/contact")
    assert r.status_code == 200
    own = await q.events(lead_id=lead.subject)
    await q.receive(*own)  # as they come back on leads.routed / leads.lifecycle
    async with q.runtime.engine.connect() as conn:
        claimed = (await conn.execute(sa.select(inbox.c.event_id))).scalars().all()
    assert claimed == [lead.id]
    assert await q.events(lead_id=lead.subject) == own


class TestRunsOfReceivedLeads:
    """A batch's received leads are decided together: the result is the one-by-one result."""

    async def test_round_robin_moves_on_within_a_batch_and_across_batches(self, q: Harness) -> None:
        first = [received() for _ in range(4)]
        await q.receive(*first)
        later = received()
        await q.receive(later)
        assignees = [(await q.lead(e.subject))["assignee"] for e in [*first, later]]
        # The example definition's smb team, in its order, from a fresh counter.
        assert assignees == ["vera", "grigory", "dmitry", "vera", "grigory"]
        routed = await q.events(type="lead.routed")
        assert [r.subject for r in routed] == [e.subject for e in [*first, later]]

    async def test_a_lead_received_twice_in_one_batch_is_one_lead(self, q: Harness) -> None:
        lead = received()
        again = LeadReceived(
            source="/intake", time=lead.time, subject=lead.subject, data=lead.data
        )  # another event id, the same lead
        other = received()
        await q.receive(lead, again, other)
        assert len(await q.rows(leads)) == 2
        assert len(await q.rows(decisions, decisions.c.lead_id == lead.subject)) == 1
        routed = await q.events(type="lead.routed")
        assert [r.subject for r in routed] == [lead.subject, other.subject]

    async def test_events_between_received_leads_apply_in_their_place(self, q: Harness) -> None:
        gone = received()
        lead = received(**LUKEWARM)
        # The erasure comes before its lead's `lead.received`, the attendance after it.
        await q.receive(erased(gone.subject), gone, lead, attended(lead), received())
        view = await q.lead(gone.subject)
        assert view["erased"] is True and view["lead"]["email"] is None
        assert (await q.lead(lead.subject))["lead"]["webinar_attended"] is True
        assert len(await q.rows(leads)) == 3


class TestOneDecidePath:
    """Whichever event brings a lead first, it is decided and stored the same way."""

    async def test_a_lead_first_seen_attending_is_stored_as_a_received_one(
        self, q: Harness
    ) -> None:
        hook = "    webhook_url: https://webstudio.example/hook"
        regions = "    regions: [RU, KZ, BY]"
        await publish(q.http, definition_text((regions, f"{regions}\n{hook}")))
        # Web development goes to the partner with a webhook; the second of each pair is
        # erased before it arrives (decided and counted, stored without the person).
        lead = {"services": ["web_development"], "webinar_attended": True}
        kept, gone = received(**lead), received(**lead)
        await q.receive(erased(gone.subject), kept, gone)
        kept_too, gone_too = received(**lead), received(**lead)
        await q.receive(erased(gone_too.subject), attended(kept_too), attended(gone_too))

        assert await self.stored(q, kept.subject) == await self.stored(q, kept_too.subject)
        assert await self.stored(q, gone.subject) == await self.stored(q, gone_too.subject)
        assert len((await self.stored(q, kept.subject))["deliveries"]) == 1
        assert (await self.stored(q, gone.subject))["deliveries"] == []

    @staticmethod
    async def stored(q: Harness, lead_id: str) -> dict[str, Any]:
        """What the qualifier keeps and owes of a decided lead, without its ids and times."""
        (row,) = await q.rows(leads, leads.c.lead_id == lead_id)
        (decided,) = await q.rows(decisions, decisions.c.lead_id == lead_id)
        (routed,) = await q.events(lead_id=lead_id, type="lead.routed")
        assert isinstance(routed, LeadRouted)
        assert routed.id == derived_event_id(decided.cause_event_id, "routed")
        history = await q.rows(stage_history, stage_history.c.lead_id == lead_id)
        owed = await q.rows(deliveries, deliveries.c.lead_id == lead_id)
        differ = {"lead_id", "decided_at"}  # from lead to lead, from run to run
        return {
            "lead": [row.route, row.stage, row.team, row.assignee, row.definition_version],
            "erased": row.erased_at is not None,
            "due": row.sla_due_at is not None,
            "snapshot": {k: v for k, v in row.snapshot.items() if k not in differ},
            "decision": {k: v for k, v in row.decision.items() if k not in differ},
            "decisions": [decided.route, decided.score, decided.decision == row.decision],
            "history": [
                (h.stage, h.by, h.reason, h.event_type, h.event_id == routed.id) for h in history
            ],
            # The event carries the lead as stored, with the decision as stored.
            "event": routed.data.model_dump(mode="json", exclude={"decision"})
            == row.snapshot | {"lead_id": lead_id},
            "event_decision": routed.data.decision.model_dump(mode="json") == row.decision,
            "deliveries": [
                [d.target_id, d.url, d.event_type, d.status, d.payload == encode_event(routed)]
                for d in owed
            ],
        }
