"""The sales lifecycle over HTTP on a real database: transitions, their events, and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.qualifier.event_ids import derived_event_id
from services.qualifier.tables import idempotency_keys, leads, payments
from shared.events import (
    LeadBriefFilled,
    LeadContacted,
    LeadFeedback,
    LeadPaymentReceived,
    LeadRouted,
    LeadStageChanged,
)
from tests.fixtures.qualifier.harness import BI_AUTH, CRM_AUTH, Harness, qualifier_app
from tests.support import received

T0 = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)  # when tests.support leads were received
UTM = {"source": "google", "medium": "cpc", "campaign": "autumn"}


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


async def lead_in(q: Harness, **overrides: Any) -> str:
    event = received(**{"utm": UTM, **overrides})
    await q.receive(event)
    return event.subject


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


async def post(
    q: Harness, lead_id: str, call: str, body: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    return await q.http.post(f"/v1/leads/{lead_id}/{call}", json=body or {}, **kwargs)


async def sold(q: Harness) -> str:
    """A lead taken through the pipeline to a won deal."""
    lead_id = await lead_in(q)
    assert (await post(q, lead_id, "feedback", {"decision": "accepted", "at": at(1)})).is_success
    for i, stage in enumerate(["sql", "demo_held", "proposal_sent", "contract_sent", "won"]):
        r = await post(q, lead_id, "stage", {"stage": stage, "at": at(2 + i)})
        assert r.status_code == 200, r.text
    return lead_id


class TestSalesLifecycle:
    async def test_the_whole_sales_lifecycle_over_http(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        calls: list[tuple[str, dict[str, Any], str]] = [
            ("contact", {"at": at(0.5), "by": "vera"}, "contacted"),
            ("feedback", {"decision": "accepted", "at": at(1), "by": "vera"}, "accepted"),
            ("stage", {"stage": "sql", "at": at(24)}, "sql"),
            ("stage", {"stage": "demo_held", "at": at(48)}, "demo_held"),
            ("stage", {"stage": "proposal_sent", "at": at(72)}, "proposal_sent"),
            ("stage", {"stage": "contract_sent", "at": at(96)}, "contract_sent"),
            ("stage", {"stage": "won", "at": at(120)}, "won"),
        ]
        for call, body, stage in calls:
            r = await post(q, lead_id, call, body)
            assert r.status_code == 200, r.text
            assert r.json()["stage"] == stage and r.json()["changed"] is True
        first = await post(
            q, lead_id, "payments", {"amount": "1500.00", "currency": "RUB", "at": at(130)}
        )
        invoice = {"amount": "500.50", "payment_id": "inv-42", "at": at(200)}
        second = await post(q, lead_id, "payments", invoice)
        assert (first.status_code, second.status_code) == (201, 201), second.text
        assert second.json()["payment_id"] == "inv-42" and second.json()["currency"] == "RUB"

        view = await q.lead(lead_id)
        assert (view["route"], view["stage"], view["feedback"]) == ("sales", "won", "accepted")
        assert view["first_contacted_at"] == at(0.5).replace("+00:00", "Z")
        assert [p["amount"] for p in view["payments"]] == ["1500.00", "500.50"]
        assert [h["stage"] for h in view["stages"]] == [
            "routed",
            "contacted",
            "accepted",
            "sql",
            "demo_held",
            "proposal_sent",
            "contract_sent",
            "won",
            "won",
            "won",
        ]

        events = [e for e in await q.events(lead_id=lead_id) if not isinstance(e, LeadRouted)]
        assert [e.type for e in events] == [
            "lead.contacted",
            "lead.feedback",
            *["lead.stage_changed"] * 5,
            "lead.payment_received",
            "lead.payment_received",
        ]
        for event in events:
            assert (event.source, event.subject) == ("/qualifier", lead_id)
            data = event.data
            assert event.time == data.at  # type: ignore[union-attr]
            dims = data.dimensions  # type: ignore[union-attr]
            assert (dims.source, dims.channel, dims.campaign) == ("web_form", "google", "autumn")
            assert (dims.route, dims.definition_version) == ("sales", 1)
        contacted, fed_back, *stages, paid, paid_again = events
        assert isinstance(contacted, LeadContacted) and contacted.data.first_contact
        assert contacted.data.by == "vera" and contacted.time == T0 + timedelta(hours=0.5)
        assert isinstance(fed_back, LeadFeedback) and fed_back.data.decision == "accepted"
        moves = [
            (e.data.previous_stage, e.data.stage) for e in stages if isinstance(e, LeadStageChanged)
        ]
        assert [(str(a), str(b)) for a, b in moves] == [
            ("accepted", "sql"),
            ("sql", "demo_held"),
            ("demo_held", "proposal_sent"),
            ("proposal_sent", "contract_sent"),
            ("contract_sent", "won"),
        ]
        assert isinstance(paid, LeadPaymentReceived) and isinstance(paid_again, LeadPaymentReceived)
        assert (paid.data.amount, paid.data.currency) == (Decimal("1500.00"), "RUB")
        assert paid_again.data.payment_id == "inv-42"
        assert paid_again.id == derived_event_id("payment/inv-42", "received")

    async def test_a_second_contact_is_not_a_first_contact(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        for _ in range(2):
            assert (await post(q, lead_id, "contact")).status_code == 200
        contacts = await q.events(lead_id=lead_id, type="lead.contacted")
        assert [c.data.first_contact for c in contacts] == [True, False]  # type: ignore[union-attr]

    async def test_a_lost_deal_says_why_and_can_go_back_to_nurture(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        await post(q, lead_id, "feedback", {"decision": "accepted"})
        await post(q, lead_id, "stage", {"stage": "sql"})
        r = await post(q, lead_id, "stage", {"stage": "lost", "reason": "went with a competitor"})
        assert r.json()["stage"] == "lost"
        lost = (await q.events(lead_id=lead_id, type="lead.stage_changed"))[-1]
        assert lost.data.reason == "went with a competitor"  # type: ignore[union-attr]

        r = await post(q, lead_id, "nurture", {"reason": "try again next year"})
        assert r.status_code == 200, r.text
        assert (r.json()["route"], r.json()["stage"]) == ("nurture", "routed")
        routed = (await q.events(lead_id=lead_id, type="lead.routed"))[-1]
        assert isinstance(routed, LeadRouted)
        assert routed.data.decision.route.value == "nurture"
        assert "sales lost the deal" in routed.data.decision.reasons[0]
        view = await q.lead(lead_id)
        assert view["route"] == "nurture" and len(view["decisions"]) == 2
        assert view["stages"][-1]["note"] == "try again next year"

    async def test_sales_can_reject_with_a_reason(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        r = await post(q, lead_id, "feedback", {"decision": "rejected", "reason": "no budget"})
        assert r.json()["stage"] == "rejected"
        (event,) = await q.events(lead_id=lead_id, type="lead.feedback")
        assert event.data.decision == "rejected"  # type: ignore[union-attr]
        assert event.data.reason == "no budget"  # type: ignore[union-attr]
        assert (await q.lead(lead_id))["feedback"] == "rejected"


class TestImpossibleTransitions:
    async def test_the_pipeline_waits_for_acceptance(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        r = await post(q, lead_id, "stage", {"stage": "sql"})
        assert r.status_code == 409
        assert r.json()["detail"]["current_stage"] == "routed"
        assert "current stage: routed" in r.json()["detail"]["msg"]

    async def test_a_stage_cannot_be_skipped(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        await post(q, lead_id, "feedback", {"decision": "accepted"})
        r = await post(q, lead_id, "stage", {"stage": "proposal_sent"})
        assert r.status_code == 409
        assert r.json()["detail"]["current_stage"] == "accepted"
        assert "the next stage is sql" in r.json()["detail"]["msg"]

    async def test_refused_calls_write_nothing(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        before = await q.events(lead_id=lead_id)
        refused = [
            ("payments", {"amount": "10"}),  # not won
            ("brief", {"answers": {"budget": "1"}}),  # a sales lead, not in processing
            ("nurture", {}),  # not lost
            ("stage", {"stage": "won"}),
        ]
        for call, body in refused:
            r = await post(q, lead_id, call, body)
            assert r.status_code == 409, (call, r.text)
        assert await q.events(lead_id=lead_id) == before
        assert (await q.lead(lead_id))["stage"] == "routed"

    async def test_a_won_deal_cannot_be_lost(self, q: Harness) -> None:
        lead_id = await sold(q)
        r = await post(q, lead_id, "stage", {"stage": "lost", "reason": "changed our minds"})
        assert r.status_code == 409 and r.json()["detail"]["current_stage"] == "won"

    async def test_feedback_is_for_sales_leads(self, q: Harness) -> None:
        lead_id = await lead_in(q, budget=None)  # processing
        r = await post(q, lead_id, "feedback", {"decision": "accepted"})
        assert r.status_code == 409 and r.json()["detail"]["route"] == "processing"

    async def test_nobody_contacts_a_rejected_or_partner_lead(self, q: Harness) -> None:
        rejected = await lead_in(q, email="spy@competitor-one.example")
        partner = await lead_in(q, services=["smm"])
        for lead_id in (rejected, partner):
            assert (await post(q, lead_id, "contact")).status_code == 409

    async def test_an_unknown_lead_is_404(self, q: Harness) -> None:
        for call, body in [
            ("contact", {}),
            ("feedback", {"decision": "accepted"}),
            ("stage", {"stage": "sql"}),
            ("payments", {"amount": "1"}),
            ("brief", {"answers": {"budget": "1"}}),
            ("nurture", {}),
        ]:
            r = await post(q, "no-such-lead", call, body)
            assert r.status_code == 404, call
        assert (await q.http.get("/v1/leads/no-such-lead")).status_code == 404


class TestBusinessTime:
    async def test_at_in_the_future_is_refused_naming_at(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        r = await post(q, lead_id, "contact", {"at": future})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "at"]
        assert "future" in r.json()["detail"][0]["msg"]

    async def test_a_little_clock_skew_is_allowed(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        ahead = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
        assert (await post(q, lead_id, "contact", {"at": ahead})).status_code == 200

    async def test_at_before_the_lead_was_received_is_refused(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        r = await post(q, lead_id, "contact", {"at": at(-1)})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "at"]
        assert "before the lead was received" in r.json()["detail"][0]["msg"]

    async def test_at_needs_an_offset(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        r = await post(q, lead_id, "contact", {"at": "2026-10-16T10:00:00"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "at"]

    async def test_at_defaults_to_now_and_by_to_the_client(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        before = datetime.now(UTC)
        r = await q.http.post(f"/v1/leads/{lead_id}/contact", headers=CRM_AUTH)
        assert r.status_code == 200, r.text
        (event,) = await q.events(lead_id=lead_id, type="lead.contacted")
        assert event.data.by == "crm"  # type: ignore[union-attr]
        assert before <= event.time <= datetime.now(UTC)


class TestRetries:
    async def test_an_idempotency_key_replays_the_first_answer(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        key = {"Idempotency-Key": "contact-1"}
        first = await post(q, lead_id, "contact", {"at": at(1)}, headers=key)
        again = await post(q, lead_id, "contact", {"at": at(1)}, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(await q.events(lead_id=lead_id, type="lead.contacted")) == 1

    async def test_a_key_reused_with_another_body_is_refused(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        key = {"Idempotency-Key": "pay-1"}
        await sold_with(q, lead_id)
        assert (await post(q, lead_id, "payments", {"amount": "10"}, headers=key)).is_success
        r = await post(q, lead_id, "payments", {"amount": "11"}, headers=key)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
            "header",
            "Idempotency-Key",
        ]
        assert len(await q.events(lead_id=lead_id, type="lead.payment_received")) == 1

    async def test_a_retry_while_the_first_call_is_at_work_answers_409(self, q: Harness) -> None:
        # The key is claimed before the work (shared.idempotency): a retry meanwhile is
        # told to come back (Retry-After), then gets the first call's answer.
        lead_id = await lead_in(q)
        key = {"Idempotency-Key": "contact-busy"}
        async with q.runtime.engine.connect() as holder:
            # The first call claims its key, then waits for the lead this holds locked.
            await holder.execute(
                sa.select(leads.c.lead_id).where(leads.c.lead_id == lead_id).with_for_update()
            )
            first = asyncio.create_task(post(q, lead_id, "contact", {"at": at(1)}, headers=key))
            await claimed(q, "contact-busy")
            retry = await post(q, lead_id, "contact", {"at": at(1)}, headers=key)
            await holder.rollback()
        assert retry.status_code == 409, retry.text
        assert retry.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert int(retry.headers["Retry-After"]) >= 1
        answered = await asyncio.wait_for(first, 60)
        assert answered.status_code == 200, answered.text
        again = await post(q, lead_id, "contact", {"at": at(1)}, headers=key)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == answered.json()
        assert len(await q.events(lead_id=lead_id, type="lead.contacted")) == 1

    async def test_a_refused_call_leaves_its_key_free_for_the_retry(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        key = {"Idempotency-Key": "pay-early"}
        early = await post(q, lead_id, "payments", {"amount": "10"}, headers=key)
        assert early.status_code == 409  # not won yet: nothing recorded, the key released
        await sold_with(q, lead_id)
        paid = await post(q, lead_id, "payments", {"amount": "10"}, headers=key)
        assert paid.status_code == 201, paid.text
        assert "Idempotent-Replayed" not in paid.headers

    async def test_asking_for_the_current_stage_again_changes_nothing(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        for _ in range(2):
            r = await post(q, lead_id, "feedback", {"decision": "accepted"})
            assert r.status_code == 200
        assert r.json()["changed"] is False and r.json()["event_ids"] == []
        for _ in range(2):
            r = await post(q, lead_id, "stage", {"stage": "sql"})
        assert r.json()["changed"] is False
        assert len(await q.events(lead_id=lead_id, type="lead.feedback")) == 1
        assert len(await q.events(lead_id=lead_id, type="lead.stage_changed")) == 1

    async def test_a_payment_id_counts_once(self, q: Harness) -> None:
        lead_id = await sold(q)
        body = {"amount": "1500.00", "payment_id": "inv-7"}
        first = await post(q, lead_id, "payments", body)
        again = await post(q, lead_id, "payments", body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        conflict = await post(q, lead_id, "payments", {**body, "amount": "1600.00"})
        assert conflict.status_code == 409 and "inv-7" in conflict.json()["detail"]["msg"]
        assert len(await q.events(lead_id=lead_id, type="lead.payment_received")) == 1
        assert len(await q.rows(payments, payments.c.lead_id == lead_id)) == 1

    async def test_payments_without_an_id_are_separate_payments(self, q: Harness) -> None:
        lead_id = await sold(q)
        for _ in range(2):
            assert (await post(q, lead_id, "payments", {"amount": "100"})).status_code == 201
        assert len(await q.rows(payments, payments.c.lead_id == lead_id)) == 2


async def claimed(q: Harness, key: str) -> None:
    """Until a request holds `key` (its claim is committed)."""
    for _ in range(600):
        if await q.rows(idempotency_keys, idempotency_keys.c.key == key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing claimed {key!r}")


async def sold_with(q: Harness, lead_id: str) -> None:
    await post(q, lead_id, "feedback", {"decision": "accepted"})
    for stage in ("sql", "demo_held", "proposal_sent", "contract_sent", "won"):
        assert (await post(q, lead_id, "stage", {"stage": stage})).status_code == 200


class TestValidation:
    @pytest.mark.parametrize(
        ("call", "body", "loc"),
        [
            ("feedback", {"decision": "rejected"}, ["body", "reason"]),
            ("feedback", {"decision": "maybe"}, ["body", "decision"]),
            ("stage", {"stage": "lost"}, ["body", "reason"]),
            ("stage", {"stage": "closed"}, ["body", "stage"]),
            ("payments", {"amount": "-5"}, ["body", "amount"]),
            ("payments", {"amount": "1.001"}, ["body", "amount"]),
            ("payments", {"amount": "10", "currency": "USD"}, ["body", "currency"]),
            ("contact", {"colour": "red"}, ["body", "colour"]),
            ("brief", {"answers": {}}, ["body", "answers"]),
            ("brief", {"answers": {"budget": "lots"}}, ["body", "answers", "budget"]),
            ("brief", {"answers": {"email": "x@y.example"}}, ["body", "answers", "email"]),
        ],
    )
    async def test_bad_input_names_the_field(
        self, q: Harness, call: str, body: dict[str, Any], loc: list[str]
    ) -> None:
        lead_id = await lead_in(q)
        r = await post(q, lead_id, call, body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == loc


class TestBrief:
    async def test_a_brief_fills_the_gaps_and_the_lead_is_qualified_again(self, q: Harness) -> None:
        lead_id = await lead_in(q, budget=None, timeframe=None)
        assert (await q.lead(lead_id))["route"] == "processing"
        assert (await post(q, lead_id, "contact", {"at": at(1)})).status_code == 200
        answers = {
            "budget": "250 000",
            "timeframe": "1-3 months",
            "website": "acme.example",
            "fields": {"crm": "amoCRM"},
        }
        r = await post(q, lead_id, "brief", {"answers": answers, "at": at(2), "by": "olga"})
        assert r.status_code == 200, r.text
        result = r.json()
        assert (result["route"], result["stage"]) == ("sales", "routed")
        assert result["decision"]["route"] == "sales" and result["decision"]["score"] == 100

        filled, routed = (await q.events(lead_id=lead_id))[-2:]
        assert isinstance(filled, LeadBriefFilled) and isinstance(routed, LeadRouted)
        assert filled.data.answers == {
            "budget": "250000",
            "timeframe": "1-3 months",
            "fields": {"crm": "amoCRM", "website": "acme.example"},
        }
        assert filled.data.dimensions.route == "processing"
        assert routed.id == derived_event_id(filled.id, "routed") == result["event_ids"][1]
        assert routed.time == T0 + timedelta(hours=2)  # the brief's business time
        assert routed.data.budget == Decimal("250000")
        assert routed.data.decision.assignee == "vera"

        view = await q.lead(lead_id)
        assert view["lead"]["fields"] == {"crm": "amoCRM", "website": "acme.example"}
        assert [d["route"] for d in view["decisions"]] == ["processing", "sales"]
        assert view["first_contacted_at"] is not None

    async def test_a_brief_that_still_misses_something_keeps_the_lead_in_processing(
        self, q: Harness
    ) -> None:
        lead_id = await lead_in(q, budget=None, timeframe=None)
        await post(q, lead_id, "contact")
        r = await post(q, lead_id, "brief", {"answers": {"budget": "300000"}})
        assert (r.json()["route"], r.json()["stage"]) == ("processing", "contacted")
        assert r.json()["decision"]["missing"] == ["timeframe"]
        r = await post(q, lead_id, "brief", {"answers": {"timeframe": "now"}})
        assert r.json()["route"] == "sales"

    async def test_a_brief_comes_after_the_first_contact(self, q: Harness) -> None:
        lead_id = await lead_in(q, budget=None)
        r = await post(q, lead_id, "brief", {"answers": {"budget": "300000"}})
        assert r.status_code == 409 and "first contact" in r.json()["detail"]["msg"]


class TestAuth:
    async def test_lifecycle_calls_need_leads_write(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        url = f"/v1/leads/{lead_id}/contact"
        assert (await q.http.post(url, headers={"Authorization": ""})).status_code == 401
        assert (await q.http.post(url, headers=BI_AUTH)).status_code == 403
        assert (await q.http.post(url, headers=CRM_AUTH)).status_code == 200

    async def test_reading_a_lead_needs_leads_read(self, q: Harness) -> None:
        lead_id = await lead_in(q)
        r = await q.http.get(f"/v1/leads/{lead_id}", headers=BI_AUTH)
        assert r.status_code == 403
        assert (await q.http.get(f"/v1/leads/{lead_id}", headers=CRM_AUTH)).status_code == 200


async def test_stage_history_holds_each_step_once(q: Harness) -> None:
    lead_id = await sold(q)
    async with q.runtime.engine.connect() as conn:
        from services.qualifier.tables import stage_history

        ids = (
            (
                await conn.execute(
                    sa.select(stage_history.c.event_id).where(stage_history.c.lead_id == lead_id)
                )
            )
            .scalars()
            .all()
        )
    assert len(ids) == len(set(ids)) == 7
