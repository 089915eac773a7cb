"""Suggested edits over HTTP on PostgreSQL, from synthetic leads whose truth is known.

Leads are decided by the real path (the qualifier's Kafka handler) under a version that
sends every lead to sales, as in a history where sales saw them all; what sales said is
written into the same columns the lifecycle calls write (feedback, stage, payments),
directly, since thousands of calls would only slow the test. Then the example definition
is published, and a suggestion is asked of it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from services.qualifier.tables import definitions, leads, payments
from shared.events import LeadReceived
from tests.fixtures.qualifier.harness import (
    CRM_AUTH,
    Harness,
    definition_text,
    publish,
    qualifier_app,
)
from tests.synthetic.leads import NOISE_FIELDS, SyntheticLead, generate

RANGE = {"from": "2026-02-01T00:00:00Z", "to": "2026-09-01T00:00:00Z"}
EVERYONE_TO_SALES = (
    ("sales_min_score: 60  ", "sales_min_score: -1000  "),
    ("nurture_below_score: 60", "nurture_below_score: -1000"),
)


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


async def seed(q: Harness, history: list[SyntheticLead]) -> int:
    """Decide the leads, record sales' answers, publish the example definition: its version."""
    await publish(q.http, definition_text(*EVERYONE_TO_SALES))
    for i in range(0, len(history), 250):
        await q.receive(
            *(
                LeadReceived(
                    source="/intake", time=x.snapshot.received_at, subject=x.snapshot.lead_id,
                    data=x.snapshot,
                )
                for x in history[i : i + 250]
            )
        )  # fmt: skip
    async with q.runtime.engine.begin() as conn:
        for x in history:
            if x.feedback is None:
                continue
            at = x.snapshot.received_at
            stage = "won" if x.won else x.feedback
            await conn.execute(
                leads.update()
                .where(leads.c.lead_id == x.snapshot.lead_id)
                .values(stage=stage, feedback=x.feedback, feedback_at=at, updated_at=at)
            )
            if x.won:
                await conn.execute(
                    payments.insert().values(
                        payment_id=str(uuid.uuid4()), lead_id=x.snapshot.lead_id,
                        amount=x.revenue, currency="RUB", at=at, by="crm",
                        event_id=str(uuid.uuid4()), created_at=at,
                    )
                )  # fmt: skip
    return await publish(q.http, definition_text())


async def suggest(q: Harness, version: int, **body: Any) -> Any:
    r = await q.http.post(f"/v1/definitions/{version}/suggest", json={**RANGE, **body})
    assert r.status_code == 200, r.text
    return r.json()


class TestSuggestion:
    async def test_it_learns_what_sales_accepts_and_proves_it_on_newer_leads(
        self, q: Harness
    ) -> None:
        history = list(generate(4_000, seed=11))
        active = await seed(q, history)
        body = await suggest(q, active)

        assert body["enough_evidence"] and body["message"] is None
        draft = body["draft_version"]
        assert draft == active + 1
        stored = (await q.http.get(f"/v1/definitions/{draft}")).json()
        assert stored["status"] == "draft" and stored["source_text"] == body["draft_text"]
        # The criteria that matter are recovered, the noise and the wrong points dropped.
        conditions = " ".join(str(r["when"]) for r in stored["document"]["score"])
        assert "webinar_attended" in conditions and "crm_in_use" in conditions
        assert "300000" in conditions
        for noise in [*NOISE_FIELDS, "email_free_provider"]:
            assert noise not in conditions
        kinds = {(c["kind"], c["criterion"]) for c in body["changes"]}
        assert ("added", "attended the webinar") in kinds
        assert ("removed", "e-mail at a free provider") in kinds
        assert all("% of " in c["sentence"] for c in body["changes"])
        # The differences as GET /diff shows them.
        shown = (await q.http.get(f"/v1/definitions/{draft}/diff?against={active}")).json()
        assert body["diff"] == shown and body["diff"]["changes"]

        # Time split: fitted on the older outcomes, judged on the newer leads, never both.
        split = body["split"]
        held_out_from = datetime.fromisoformat(split["held_out_from"])
        newer = [x for x in history if x.snapshot.received_at >= held_out_from]
        assert body["backtest"]["held_out_leads"] == len(newer)
        assert split["training_outcomes"] == sum(
            x.feedback is not None and x.snapshot.received_at < held_out_from for x in history
        )
        ours, theirs = body["backtest"]["suggested"], body["backtest"]["active"]
        answered = [x for x in newer if x.feedback is not None and x.p_accept >= 0.5]
        truth = sum(x.feedback == "accepted" for x in answered) / len(answered)
        assert ours["acceptance_rate"] >= theirs["acceptance_rate"]
        assert ours["acceptance_rate"] >= truth - 0.05
        to_sales = [x for x in newer if x.feedback is not None]
        assert ours["accepted"] + ours["rejected"] + ours["kept_from_sales_accepted"] >= sum(
            x.feedback == "accepted" for x in to_sales
        )
        assert ours["won"] > 0 and float(ours["revenue"]) > 0
        # The active version stays active until someone publishes the draft.
        listed = {d["version"]: d["status"] for d in (await q.http.get("/v1/definitions")).json()}
        assert listed[active] == "active" and listed[draft] == "draft"

    async def test_too_few_outcomes_suggest_nothing(self, q: Harness) -> None:
        active = await seed(q, list(generate(300, seed=12)))
        body = await suggest(q, active)
        assert not body["enough_evidence"] and body["draft_version"] is None
        assert body["changes"] == [] and body["backtest"] is None
        assert body["message"].startswith("not enough evidence yet")
        assert "at least 300" in body["message"]
        assert len(await q.rows(definitions)) == active  # no draft stored


class TestBounds:
    async def test_a_range_past_the_lead_bound_is_refused_naming_it(
        self, database_url: str, tmp_path: Path
    ) -> None:
        async with qualifier_app(database_url, tmp_path, backtest_max_leads=100) as q:
            active = await seed(q, list(generate(150, seed=13)))
            r = await q.http.post(f"/v1/definitions/{active}/suggest", json=RANGE)
        assert r.status_code == 422
        (detail,) = r.json()["detail"]
        assert detail["type"] == "too_many_leads" and "100 leads" in detail["msg"]

    async def test_a_range_past_the_days_bound_is_refused(self, q: Harness) -> None:
        r = await q.http.post(
            "/v1/definitions/1/suggest", json={"from": "2024-01-01", "to": "2026-01-01"}
        )
        assert r.status_code == 422 and "366 days" in r.text

    async def test_it_needs_the_admin_scope_and_a_known_version(self, q: Harness) -> None:
        r = await q.http.post("/v1/definitions/1/suggest", json=RANGE, headers=CRM_AUTH)
        assert r.status_code == 403
        assert (await q.http.post("/v1/definitions/99/suggest", json=RANGE)).status_code == 404

    async def test_it_is_in_openapi_with_its_response_model(self, q: Harness) -> None:
        spec = (await q.http.get("/openapi.json")).json()
        post = spec["paths"]["/v1/definitions/{version}/suggest"]["post"]
        schema = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/SuggestionView")
        assert "backtest" in spec["components"]["schemas"]["SuggestionView"]["properties"]
