"""The review of a definition version over HTTP, on PostgreSQL: leads decided by the real
consumer handler, outcomes reported through the real lifecycle API."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.qualifier.review import service as review_service
from services.qualifier.review.stats import wilson
from tests.fixtures.qualifier.harness import (
    BI_AUTH,
    CRM_AUTH,
    Harness,
    definition_text,
    publish,
    qualifier_app,
)
from tests.fixtures.qualifier.review_scenario import play
from tests.support import received

RANGE = {"from": "2026-10-01", "to": "2026-11-01"}
COLD = {"role_in_purchase": "user", "company_size": "11-20", "budget": "1000", "timeframe": "later"}


async def _post(q: Harness, lead_id: str, what: str, **body: Any) -> None:
    r = await q.http.post(f"/v1/leads/{lead_id}/{what}", json=body)
    assert r.status_code in (200, 201), r.text


async def _rejected(q: Harness, lead_id: str, reason: str) -> None:
    await _post(q, lead_id, "contact")
    await _post(q, lead_id, "feedback", decision="rejected", reason=reason)


async def _accepted(q: Harness, lead_id: str, *stages: str) -> None:
    await _post(q, lead_id, "contact")
    await _post(q, lead_id, "feedback", decision="accepted")
    for stage in stages:
        await _post(q, lead_id, "stage", stage=stage, reason="price" if stage == "lost" else None)


@pytest.fixture
async def seeded(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Harness, dict[str, str]]]:
    """Nine leads of version 1 in October with known fates, one before, one of version 2."""
    async with qualifier_app(database_url, tmp_path) as q:
        leads = {
            "won": received(),
            "no_budget_1": received(),
            "no_budget_2": received(industry="retail"),  # 90 points, not 100
            "no_budget_3": received(),
            "named": received(),
            "briefed": received(budget=None),
            "cold": received(**COLD),
            "spam": received(honeypot_filled=True),
            "enterprise": received(company_size="1000+"),
            "september": received(
                occurred_at="2026-09-10T10:00:00Z", received_at="2026-09-10T10:00:00Z"
            ),
        }
        await q.receive(*leads.values())
        ids = {name: event.subject for name, event in leads.items()}
        await _accepted(q, ids["won"], "sql", "demo_held", "proposal_sent", "contract_sent", "won")
        await _post(q, ids["won"], "payments", amount="300000", payment_id="p-1")
        await _post(q, ids["won"], "payments", amount="50000.50", payment_id="p-2")
        await _rejected(q, ids["no_budget_1"], "no budget")
        await _rejected(q, ids["no_budget_2"], "No budget ")
        await _rejected(q, ids["no_budget_3"], "no  budget")
        await _rejected(q, ids["named"], "Ivan Petrov said no, ivan@corp.example")
        await _post(q, ids["briefed"], "contact")
        await _post(q, ids["briefed"], "brief", answers={"budget": "200000"})
        await _accepted(q, ids["briefed"])
        await _accepted(q, ids["enterprise"], "sql", "lost")
        await _accepted(q, ids["september"])
        stricter = definition_text(("sales_min_score: 60  ", "sales_min_score: 80  "))
        assert await publish(q.http, stricter) == 2
        later = received(company_size="21-50", industry="retail")
        await q.receive(later)
        ids["version_2"] = later.subject
        yield q, ids


def _rate(body: dict[str, Any], k: int, n: int) -> None:
    low, high = wilson(k, n) or (0.0, 0.0)
    assert (body["numerator"], body["denominator"]) == (k, n)
    assert body["value"] == round(k / n, 4)
    assert (body["low"], body["high"]) == (round(low, 4), round(high, 4))


class TestReview:
    async def test_counts_outcomes_rates_and_intervals_of_the_version(
        self, seeded: tuple[Harness, dict[str, str]]
    ) -> None:
        q, _ = seeded
        r = await q.http.get("/v1/definitions/1/review", params=RANGE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["version"], body["leads"], body["currency"]) == (1, 9, "RUB")
        assert body["from"] == "2026-10-01T00:00:00Z" and body["to"] == "2026-11-01T00:00:00Z"
        every = body["all"]
        assert (every["touched"], every["sent_to_sales"], every["sal"]) == (9, 7, 3)
        assert (every["rejected_by_sales"], every["sql"], every["won"], every["lost"]) == (
            4,
            2,
            1,
            1,
        )
        assert every["revenue"] == "350000.50"
        assert every["rejection_reasons"] == {"no budget": 3, "(other reasons)": 1}
        _rate(every["lead_quality_rate"], 3, 7)
        _rate(every["conversion_rate"], 3, 9)
        _rate(every["win_rate"], 1, 2)
        by_key = {c["key"]: c for c in body["criteria"]}
        assert list(by_key)[:5] == [
            "reject[0]",
            "reject[1]",
            "reject[2]",
            "required.company",
            "required.services",
        ]
        assert by_key["reject[0]"]["outcomes"]["touched"] == 1
        decision_maker = by_key["score[0]"]
        assert decision_maker["label"] == "role in purchase is decision maker"
        assert decision_maker["points"] == 30 and decision_maker["outcomes"]["touched"] == 7
        industry = by_key["score[6]"]["outcomes"]  # all scored leads but the retail one
        assert (industry["touched"], industry["sal"], industry["rejected_by_sales"]) == (7, 3, 3)
        _rate(industry["lead_quality_rate"], 3, 6)
        assert industry["lead_quality_rate"]["lift"] == round((3 / 6) / (3 / 7), 3)
        budget = by_key["required.budget"]["outcomes"]
        assert (budget["touched"], budget["sal"], budget["briefed"]) == (1, 1, 1)
        assert budget["conversion_rate"]["lift"] == 3.0
        assert by_key["routes.sales_min_score"]["outcomes"]["touched"] == 7
        assert by_key["routes.nurture_below_score"]["outcomes"]["touched"] == 1
        enterprise = by_key["team.enterprise"]["outcomes"]
        assert (enterprise["touched"], enterprise["sal"], enterprise["lost"]) == (1, 1, 1)
        assert by_key["team.smb"]["outcomes"]["touched"] == 6

    async def test_the_two_lists_and_the_ratios_of_every_version(
        self, seeded: tuple[Harness, dict[str, str]]
    ) -> None:
        q, ids = seeded
        body = (await q.http.get("/v1/definitions/1/review", params=RANGE)).json()
        rejected = body["rejected_by_sales"]
        assert body["rejected_by_sales_total"] == 4
        assert {e["lead_id"] for e in rejected} == {
            ids[k] for k in ("no_budget_1", "no_budget_2", "no_budget_3", "named")
        }
        assert [e["score"] for e in rejected] == [100, 100, 100, 90]
        named = next(e for e in rejected if e["lead_id"] == ids["named"])
        assert named["reasons"] == ["(other reasons)"] and named["team"] == "smb"
        assert "+30 role in purchase is decision maker" in named["criteria"]
        assert [e["lead_id"] for e in body["came_back"]] == [ids["briefed"]]
        assert body["came_back"][0] | {"lead_id": None} == {
            "lead_id": None,
            "kept_as": "processing",
            "kept_because": "missing budget",
            "later_version": 1,
            "outcome": "accepted",
            "revenue": "0.00",
        }
        assert [v["version"] for v in body["versions"]] == [1, 2]
        v1, v2 = body["versions"]
        assert v1["leads"] == 9 and v2["leads"] == 1
        _rate(v1["brief_rate"], 1, 7)
        assert v1["lead_quality_rate"] == body["all"]["lead_quality_rate"]
        assert v1["win_rate"] == body["all"]["win_rate"]
        # Nothing a person typed beyond the reasons that many gave: no name, no e-mail.
        assert "ivan" not in str(body).lower() and "@" not in str(body)

    async def test_the_csv_has_a_row_per_criterion_and_measure(
        self, seeded: tuple[Harness, dict[str, str]]
    ) -> None:
        q, _ = seeded
        r = await q.http.get("/v1/definitions/1/review.csv", params=RANGE)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].endswith('"review-v1-20261001-20261101.csv"')
        rows = list(csv.DictReader(io.StringIO(r.text)))
        body = (await q.http.get("/v1/definitions/1/review", params=RANGE)).json()
        criteria = 1 + len(body["criteria"])
        reasons = sum(len(c["outcomes"]["rejection_reasons"]) for c in body["criteria"]) + 2
        assert len(rows) == criteria * 13 + reasons
        quality = next(
            row for row in rows if row["key"] == "all" and row["measure"] == "lead_quality_rate"
        )
        low, high = wilson(3, 7) or (0, 0)
        assert (quality["numerator"], quality["denominator"]) == ("3", "7")
        assert (quality["low_95"], quality["high_95"]) == (str(round(low, 4)), str(round(high, 4)))
        reason = next(row for row in rows if row["measure"] == "rejected_for: no budget")
        assert (reason["key"], reason["value"]) == ("all", "3")
        assert "ivan" not in r.text.lower()
        same = await q.http.get("/v1/definitions/1/review", params={**RANGE, "format": "csv"})
        assert same.text == r.text

    async def test_reading_needs_leads_read_and_a_known_version(
        self, seeded: tuple[Harness, dict[str, str]]
    ) -> None:
        q, _ = seeded
        assert (await q.http.get("/v1/definitions/1/review", headers=CRM_AUTH)).status_code == 200
        assert (await q.http.get("/v1/definitions/1/review", headers=BI_AUTH)).status_code == 403
        assert (await q.http.get("/v1/definitions/9/review.csv")).status_code == 404
        paths = (await q.http.get("/openapi.json")).json()["paths"]
        assert "/v1/definitions/{version}/review" in paths
        assert "/v1/definitions/{version}/review.csv" in paths


class TestBounds:
    async def test_a_range_past_the_days_or_backwards_is_refused(
        self, seeded: tuple[Harness, dict[str, str]]
    ) -> None:
        q, _ = seeded
        r = await q.http.get(
            "/v1/definitions/1/review", params={"from": "2025-01-01", "to": "2026-11-01"}
        )
        assert r.status_code == 422 and "at most 366 days" in r.text
        r = await q.http.get(
            "/v1/definitions/1/review.csv", params={"from": "2026-11-01", "to": "2026-10-01"}
        )
        assert r.status_code == 422 and "before" in r.text

    async def test_too_many_leads_or_no_time_left_is_refused_naming_the_bound(
        self, database_url: str, tmp_path: Path
    ) -> None:
        async with qualifier_app(database_url, tmp_path, backtest_max_leads=5) as q:
            await q.receive(*(received() for _ in range(6)))
            r = await q.http.get("/v1/definitions/1/review", params=RANGE)
            assert r.status_code == 422, r.text
            [detail] = r.json()["detail"]
            assert detail["type"] == "too_many_leads" and "more than 5" in detail["msg"]
        async with qualifier_app(database_url, tmp_path, backtest_budget_seconds=1e-6) as q:
            r = await q.http.get("/v1/definitions/1/review.csv", params=RANGE)
            assert r.status_code == 422, r.text
            [detail] = r.json()["detail"]
            assert detail["type"] == "over_budget" and "time budget" in detail["msg"]


async def test_a_generated_quarter_reviews_to_what_was_played(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many leads over several pages: the review's totals are what the scenario did."""
    monkeypatch.setattr(review_service, "PAGE", 64)
    async with qualifier_app(database_url, tmp_path) as q:
        played = await play(q, 300, seed=7)
        r = await q.http.get(
            "/v1/definitions/1/review", params={"from": "2026-08-17", "to": "2026-11-16"}
        )
        every = r.json()["all"]
    assert (every["touched"], every["sent_to_sales"]) == (played.leads, played.sent)
    assert (every["sal"], every["rejected_by_sales"]) == (played.accepted, played.rejected)
    assert (every["won"], every["lost"]) == (played.won, played.lost)
    assert every["revenue"] == f"{played.revenue}.00"
