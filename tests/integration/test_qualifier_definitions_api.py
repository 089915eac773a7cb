"""Lead definitions over HTTP: drafts, validation by line, publishing, diffs, back-tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from services.qualifier.tables import definitions
from shared.auth import Scope
from shared.db import utcnow
from shared.events import LeadErased, LeadErasedData
from shared.settings import CommonSettings, Mode
from tests.fixtures.qualifier.harness import (
    CRM_AUTH,
    Harness,
    definition_text,
    publish,
    qualifier_app,
    token,
)
from tests.support import received

YAML = {"Content-Type": "application/yaml"}
STRICTER = (
    ("sales_min_score: 60  ", "sales_min_score: 80  "),
    ("nurture_below_score: 60", "nurture_below_score: 80"),
)


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


async def draft(q: Harness, text: str) -> int:
    r = await q.http.post("/v1/definitions", content=text, headers=YAML)
    assert r.status_code == 201, r.text
    version: int = r.json()["version"]
    return version


class TestDrafts:
    async def test_a_draft_is_stored_but_not_active(self, q: Harness) -> None:
        text = definition_text(*STRICTER)
        r = await q.http.post("/v1/definitions", content=text, headers=YAML)
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["version"], body["status"], body["created_by"]) == (2, "draft", "dev")
        assert body["source_text"] == text  # kept exactly as written, comments and all
        assert body["document"]["routes"] == {"sales_min_score": 80, "nurture_below_score": 80}
        listed = (await q.http.get("/v1/definitions")).json()
        assert [(d["version"], d["status"]) for d in listed] == [(1, "active"), (2, "draft")]
        lead = received()
        await q.receive(lead)
        assert (await q.lead(lead.subject))["decision"]["definition_version"] == 1

    async def test_json_is_accepted_too(self, q: Harness) -> None:
        document = yaml.safe_load(definition_text())
        r = await q.http.post(
            "/v1/definitions",
            content=json.dumps(document, indent="\t"),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["document"]["sales_teams"][1]["members"] == ["vera", "grigory", "dmitry"]

    async def test_definitions_need_the_admin_scope(self, q: Harness) -> None:
        r = await q.http.post("/v1/definitions", content=definition_text(), headers=CRM_AUTH)
        assert r.status_code == 403
        assert (await q.http.get("/v1/definitions", headers=CRM_AUTH)).status_code == 200


class TestValidation:
    async def test_a_broken_definition_names_line_and_field_and_is_not_stored(
        self, q: Harness
    ) -> None:
        text = definition_text(
            (
                "when: {budget_at_least: 150000}",
                "when: {any: [{budget_at_least: 1}, {shoe_size_in: [42]}]}",
            ),
            ("    sla_hours: 8", "    sla_hours: 8\n    colour: red"),
            ("sales_min_score: 60  ", "sales_min_score: high"),
        )
        r = await q.http.post("/v1/definitions", content=text, headers=YAML)
        assert r.status_code == 422
        problems = {tuple(d["loc"]): d for d in r.json()["detail"]}
        lines = text.splitlines()
        condition = problems[("body", "score", 4, "when", "any", 1, "shoe_size_in")]
        assert "shoe_size_in" in lines[condition["line"] - 1]
        assert condition["msg"].startswith(f"line {condition['line']}: score[4].when.any[1]")
        unknown = problems[("body", "sales_teams", 1, "colour")]
        assert lines[unknown["line"] - 1].strip() == "colour: red"
        threshold = problems[("body", "routes", "sales_min_score")]
        assert "sales_min_score: high" in lines[threshold["line"] - 1]
        assert len((await q.http.get("/v1/definitions")).json()) == 1

    @pytest.mark.parametrize(
        ("text", "loc", "line"),
        [
            ("name: x\n  bad indent: [\n", ["body"], 2),
            ("name: a\nname: b\n", ["body", "name"], 2),
            ("- just\n- a list\n", ["body"], 1),
        ],
    )
    async def test_unreadable_text_names_the_line(
        self, q: Harness, text: str, loc: list[str], line: int
    ) -> None:
        r = await q.http.post("/v1/definitions", content=text, headers=YAML)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == loc and r.json()["detail"][0]["line"] == line

    async def test_an_empty_body_is_refused(self, q: Harness) -> None:
        r = await q.http.post("/v1/definitions", content=b"", headers=YAML)
        assert r.status_code == 422


class TestPublishing:
    async def test_publish_makes_a_version_active_and_retires_the_last(self, q: Harness) -> None:
        version = await draft(q, definition_text(*STRICTER))
        r = await q.http.post(f"/v1/definitions/{version}/publish")
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert r.json()["published_by"] == "dev" and r.json()["published_at"] is not None
        listed = (await q.http.get("/v1/definitions")).json()
        assert [(d["version"], d["status"]) for d in listed] == [(1, "retired"), (2, "active")]
        lead = received(company_size="21-50", industry="retail")  # 75: sales by v1, not by v2
        await q.receive(lead)
        decision = (await q.lead(lead.subject))["decision"]
        assert (decision["definition_version"], decision["route"]) == (2, "nurture")

    async def test_an_older_version_can_be_published_again(self, q: Harness) -> None:
        await publish(q.http, definition_text(*STRICTER))
        r = await q.http.post("/v1/definitions/1/publish")
        assert r.status_code == 200
        listed = (await q.http.get("/v1/definitions")).json()
        assert [(d["version"], d["status"]) for d in listed] == [(1, "active"), (2, "retired")]

    async def test_publishing_the_active_version_again_changes_nothing(self, q: Harness) -> None:
        first = (await q.http.get("/v1/definitions/1")).json()
        r = await q.http.post("/v1/definitions/1/publish")
        assert r.status_code == 200 and r.json()["published_at"] == first["published_at"]

    async def test_an_unknown_version_is_404(self, q: Harness) -> None:
        assert (await q.http.post("/v1/definitions/99/publish")).status_code == 404
        assert (await q.http.get("/v1/definitions/99")).status_code == 404
        assert (await q.http.post("/v1/definitions/99/backtest", json={})).status_code == 404

    async def test_a_version_past_postgresql_integers_is_422_not_500(self, q: Harness) -> None:
        huge = 2**31
        calls = [
            q.http.get(f"/v1/definitions/{huge}"),
            q.http.get(f"/v1/definitions/1/diff?against={huge}"),
            q.http.post(f"/v1/definitions/{huge}/publish"),
            q.http.post(f"/v1/definitions/{huge}/backtest", json={}),
        ]
        for answer in await asyncio.gather(*calls):
            assert answer.status_code == 422, answer.text

    async def test_concurrent_publishes_leave_exactly_one_active(self, q: Harness) -> None:
        versions = [await draft(q, definition_text(*STRICTER)) for _ in range(4)]
        answers = await asyncio.gather(
            *(q.http.post(f"/v1/definitions/{v}/publish") for v in versions)
        )
        assert all(a.status_code == 200 for a in answers)
        statuses = [d["status"] for d in (await q.http.get("/v1/definitions")).json()]
        assert statuses.count("active") == 1

    async def test_the_database_refuses_a_second_active_version(self, q: Harness) -> None:
        with pytest.raises(sa.exc.IntegrityError):
            async with q.runtime.engine.begin() as conn:
                await conn.execute(
                    definitions.insert().values(
                        version=9,
                        name="rogue",
                        status="active",
                        document={},
                        source_text="",
                        created_at=utcnow(),
                    )
                )


class TestDiff:
    async def test_a_diff_against_the_active_version(self, q: Harness) -> None:
        text = definition_text(
            *STRICTER,
            ("    regions: [RU, KZ, BY]", "    regions: [RU, KZ]"),
            ("members: [anna, boris]", "members: [anna, boris, yuri]"),
        )
        version = await draft(q, text)
        r = await q.http.get(f"/v1/definitions/{version}/diff")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["old_version"], body["new_version"]) == (1, 2)
        changes = {c["path"]: (c["kind"], c["old"], c["new"]) for c in body["changes"]}
        assert changes == {
            "partners[webstudio].regions": ("changed", ["RU", "KZ", "BY"], ["RU", "KZ"]),
            "routes.sales_min_score": ("changed", 60, 80),
            "routes.nurture_below_score": ("changed", 60, 80),
            "sales_teams[enterprise].members": (
                "changed",
                ["anna", "boris"],
                ["anna", "boris", "yuri"],
            ),
        }
        assert "-  sales_min_score: 60" in body["text"] and "+  sales_min_score: 80" in body["text"]

    async def test_a_diff_between_any_two_versions(self, q: Harness) -> None:
        v2 = await draft(q, definition_text(*STRICTER))
        v3 = await draft(q, definition_text(*STRICTER, ("name: agency-default", "name: v3")))
        r = await q.http.get(f"/v1/definitions/{v3}/diff", params={"against": v2})
        assert [c["path"] for c in r.json()["changes"]] == ["name"]
        assert (await q.http.get(f"/v1/definitions/{v3}/diff?against=42")).status_code == 404


class TestBacktest:
    async def test_moving_a_threshold_shows_the_leads_whose_route_changes(self, q: Harness) -> None:
        good = received()  # 100: sales either way
        middling = received(company_size="21-50", industry="retail")  # 75
        weak = received(role_in_purchase="user", timeframe="later")  # 55: nurture either way
        missing = received(budget=None)  # processing either way
        partner = received(services=["smm"])
        old = received(received_at=datetime(2026, 1, 5, tzinfo=UTC))  # outside 90 days
        gone = received(company_size="21-50", industry="retail")  # would change, but erased
        await q.receive(good, middling, weak, missing, partner, old, gone)
        now = datetime.now(UTC)
        await q.receive(
            LeadErased(
                source="/intake",
                time=now,
                subject=gone.subject,
                data=LeadErasedData(lead_id=gone.subject, at=now),
            )
        )
        for lead, verdict in ((good, "accepted"), (middling, "rejected")):
            r = await q.http.post(
                f"/v1/leads/{lead.subject}/feedback",
                json={"decision": verdict, "reason": "not a fit"},
            )
            assert r.status_code == 200
        version = await draft(q, definition_text(*STRICTER))

        r = await q.http.post(f"/v1/definitions/{version}/backtest", json={})
        assert r.status_code == 200, r.text
        result = r.json()
        assert (result["version"], result["active_version"]) == (2, 1)
        assert (result["leads"], result["skipped_erased"], result["changed"]) == (5, 1, 1)
        assert result["routes"] == {
            "sales": 1,
            "partner": 1,
            "nurture": 2,
            "processing": 1,
            "rejected": 0,
        }
        assert result["active_routes"] == {
            "sales": 2,
            "partner": 1,
            "nurture": 1,
            "processing": 1,
            "rejected": 0,
        }
        assert result["transitions"] == {"sales -> nurture": 1}
        (change,) = result["changes"]
        assert (change["lead_id"], change["from_route"], change["to_route"]) == (
            middling.subject,
            "sales",
            "nurture",
        )
        assert (change["to_score"], change["sales_feedback"]) == (75, "rejected")
        assert "below 80" in change["reasons"][0]
        # Sales accepted `good` and rejected `middling`: the stricter version agrees with both.
        assert result["feedback_leads"] == 2
        assert result["feedback"]["agreement_rate"] == 1.0
        assert result["feedback"]["rejected_routes"]["nurture"] == 1
        assert result["active_feedback"]["agreement_rate"] == 0.5
        assert result["active_feedback"]["rejected_routed_to_sales"] == 1

    async def test_the_range_and_the_list_are_bounded_by_the_request(self, q: Harness) -> None:
        old = received(
            company_size="21-50", industry="retail", received_at=datetime(2026, 1, 5, tzinfo=UTC)
        )
        await q.receive(old)
        version = await draft(q, definition_text(*STRICTER))
        body = {"from": "2026-01-01", "to": "2026-02-01", "limit": 0}
        result = (await q.http.post(f"/v1/definitions/{version}/backtest", json=body)).json()
        assert (result["leads"], result["changed"], result["changes"]) == (1, 1, [])
        assert result["from"].startswith("2026-01-01T00:00:00")
        bad = await q.http.post(
            f"/v1/definitions/{version}/backtest", json={"from": "2026-02-01", "to": "2026-01-01"}
        )
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "from"]

    async def test_a_backtest_changes_nothing(self, q: Harness) -> None:
        lead = received()
        await q.receive(lead)
        before = (await q.lead(lead.subject), await q.events())
        version = await draft(q, definition_text(*STRICTER))
        await q.http.post(f"/v1/definitions/{version}/backtest", json={})
        assert (await q.lead(lead.subject), await q.events()) == before


class TestProductionSecrets:
    async def test_publishing_a_partner_webhook_without_a_secret_is_refused(
        self, database_url: str, tmp_path: Path
    ) -> None:
        admin, admin_auth = token("admin", Scope.definitions_admin, Scope.leads_read)
        common = CommonSettings(
            mode=Mode.production,
            data_dir=tmp_path,
            kafka_bootstrap_servers="127.0.0.1:1",
            auth_tokens=[admin],
        )
        hooked = definition_text(
            (
                "    regions: [RU, KZ, BY]",
                "    regions: [RU, KZ, BY]\n    webhook_url: https://partner.example/leads",
            )
        )
        async with qualifier_app(database_url, tmp_path, common=common) as q:
            r = await q.http.post("/v1/definitions", content=hooked, headers={**YAML, **admin_auth})
            assert r.status_code == 201  # a draft is harmless
            r = await q.http.post("/v1/definitions/2/publish", headers=admin_auth)
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["definition", "partners", 0, "webhook_url"]
            listed = (await q.http.get("/v1/definitions", headers=admin_auth)).json()
            assert [d["status"] for d in listed] == ["active", "draft"]
