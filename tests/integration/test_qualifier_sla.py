"""The SLA watch on a real database: a missed deadline is reported once and reassigned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.qualifier.event_ids import derived_event_id
from services.qualifier.sla import watch as sla
from shared.db import create_engine
from shared.events import LeadSlaBreached
from tests.fixtures.qualifier.harness import Harness, qualifier_app
from tests.support import received


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


async def sales_lead(q: Harness) -> tuple[str, datetime]:
    lead = received()
    await q.receive(lead)
    view = await q.lead(lead.subject)
    assert view["route"] == "sales"
    return lead.subject, datetime.fromisoformat(view["sla_due_at"])


async def breaches(q: Harness, lead_id: str) -> list[LeadSlaBreached]:
    found = await q.events(lead_id=lead_id, type="lead.sla_breached")
    return [e for e in found if isinstance(e, LeadSlaBreached)]


class TestBreach:
    async def test_a_missed_deadline_is_reported_and_the_lead_reassigned(self, q: Harness) -> None:
        lead_id, due = await sales_lead(q)
        now = due + timedelta(minutes=5)
        assert await sla.breach_overdue(q.runtime.engine, now=now) == 1

        (event,) = await breaches(q, lead_id)
        assert event.id == derived_event_id(f"{lead_id}@{due.isoformat()}", "sla_breached")
        assert (event.time, event.source, event.subject) == (due, "/qualifier", lead_id)
        data = event.data
        assert (data.team, data.assignee, data.reassigned_to) == ("smb", "vera", "grigory")
        assert data.sla_due_at == due
        assert (data.dimensions.route, data.dimensions.definition_version) == ("sales", 1)
        view = await q.lead(lead_id)
        assert view["assignee"] == "grigory"
        assert datetime.fromisoformat(view["sla_due_at"]) == now + timedelta(hours=8)
        last = view["stages"][-1]
        assert last["event"] == "lead.sla_breached" and "reassigned to grigory" in last["reason"]

    async def test_nothing_happens_before_the_deadline(self, q: Harness) -> None:
        lead_id, due = await sales_lead(q)
        assert await sla.breach_overdue(q.runtime.engine, now=due - timedelta(seconds=1)) == 0
        assert await breaches(q, lead_id) == []

    async def test_feedback_in_time_stops_the_clock_and_a_contact_does_not(
        self, q: Harness
    ) -> None:
        answered, due = await sales_lead(q)
        contacted, _ = await sales_lead(q)
        assert (
            await q.http.post(f"/v1/leads/{answered}/feedback", json={"decision": "accepted"})
        ).status_code == 200
        assert (await q.http.post(f"/v1/leads/{contacted}/contact")).status_code == 200
        await sla.breach_overdue(q.runtime.engine, now=due + timedelta(hours=1))
        assert await breaches(q, answered) == []
        assert len(await breaches(q, contacted)) == 1

    async def test_each_missed_deadline_is_one_breach(self, q: Harness) -> None:
        lead_id, due = await sales_lead(q)
        first = due + timedelta(minutes=1)
        await sla.breach_overdue(q.runtime.engine, now=first)
        await sla.breach_overdue(q.runtime.engine, now=first + timedelta(hours=1))  # not due
        await sla.breach_overdue(q.runtime.engine, now=first + timedelta(hours=9))  # due again
        found = await breaches(q, lead_id)
        assert [(b.data.assignee, b.data.reassigned_to) for b in found] == [
            ("vera", "grigory"),
            ("grigory", "dmitry"),
        ]
        assert len({b.id for b in found}) == 2

    async def test_two_replicas_report_a_breach_exactly_once(
        self, q: Harness, database_url: str
    ) -> None:
        leads = [await sales_lead(q) for _ in range(6)]
        now = max(due for _, due in leads) + timedelta(minutes=1)
        replicas = [create_engine(database_url) for _ in range(2)]
        try:
            counts = await asyncio.gather(
                *(sla.breach_overdue(engine, now=now) for engine in replicas)
            )
        finally:
            for engine in replicas:
                await engine.dispose()
        assert sum(counts) == 6
        for lead_id, _ in leads:
            assert len(await breaches(q, lead_id)) == 1


class TestAbsence:
    async def test_reassignment_skips_absent_members(self, q: Harness) -> None:
        r = await q.http.put(
            "/v1/sales/members/grigory/absence", json={"absent": True, "note": "vacation"}
        )
        assert r.status_code == 200 and r.json()["absent"] is True
        lead_id, due = await sales_lead(q)
        await sla.breach_overdue(q.runtime.engine, now=due + timedelta(minutes=1))
        (event,) = await breaches(q, lead_id)
        assert event.data.reassigned_to == "dmitry"

    async def test_with_nobody_else_there_the_lead_stays_and_the_clock_restarts(
        self, q: Harness
    ) -> None:
        for member in ("grigory", "dmitry"):
            await q.http.put(f"/v1/sales/members/{member}/absence", json={"absent": True})
        lead_id, due = await sales_lead(q)
        now = due + timedelta(minutes=1)
        await sla.breach_overdue(q.runtime.engine, now=now)
        (event,) = await breaches(q, lead_id)
        assert (event.data.assignee, event.data.reassigned_to) == ("vera", None)
        view = await q.lead(lead_id)
        assert view["assignee"] == "vera"
        assert datetime.fromisoformat(view["sla_due_at"]) == now + timedelta(hours=8)

    async def test_new_leads_skip_absent_members_and_absence_ends(self, q: Harness) -> None:
        await q.http.put("/v1/sales/members/vera/absence", json={"absent": True})
        first, _ = await sales_lead(q)
        assert (await q.lead(first))["assignee"] == "grigory"
        members = {m["member"]: m for m in (await q.http.get("/v1/sales/members")).json()}
        assert members["vera"]["absent"] is True and members["grigory"]["open_leads"] == 1
        assert members["anna"]["teams"] == ["enterprise"]
        await q.http.put("/v1/sales/members/vera/absence", json={"absent": False})
        second, _ = await sales_lead(q)
        assert (await q.lead(second))["assignee"] == "dmitry"
        third, _ = await sales_lead(q)
        assert (await q.lead(third))["assignee"] == "vera"

    async def test_an_absence_until_a_past_time_is_refused(self, q: Harness) -> None:
        r = await q.http.put(
            "/v1/sales/members/vera/absence", json={"absent": True, "until": "2020-01-01T00:00:00Z"}
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "until"]
