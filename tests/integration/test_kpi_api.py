"""The KPI API: answers, validation, CSV, ETag, plans, spend, auth."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.kpi.fold.apply import UnfoldableEvent
from services.kpi.store.tables import metadata
from shared.events import Route, Stage
from tests.fixtures.kpi import events as ev
from tests.fixtures.kpi.harness import (
    ADMIN_AUTH,
    BI_AUTH,
    CRM_AUTH,
    FINANCE_AUTH,
    Harness,
    kpi_app,
)

T = datetime(2026, 10, 15, 10, 0, tzinfo=UTC)
SUMMARY, SERIES, FUNNEL = "/v1/kpi/summary", "/v1/kpi/timeseries", "/v1/kpi/funnel"
OCT = {"from": "2026-10-01", "to": "2026-11-01"}
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


async def _sales_lead(kpi: Harness, at: datetime, *, channel: str | None = "google", **kw: object):  # type: ignore[no-untyped-def]
    lead = ev.snapshot(at=at, channel=channel, **kw)  # type: ignore[arg-type]
    d = ev.dims(lead, Route.sales, 1)
    await kpi.receive(ev.received(lead), ev.routed(lead, Route.sales))
    return lead, d


class TestAnswers:
    async def test_counts_by_business_time_with_exact_edges(self, kpi: Harness) -> None:
        for minutes in (5, 20, 50, 70):
            await _sales_lead(kpi, T + minutes * M)
        values = await kpi.values("2026-10-15T10:17:00Z", "2026-10-15T10:51:00Z")
        assert values["leads_received"] == 2  # 10:20 and 10:50, not 10:05 nor 11:10
        assert values["routed_sales"] == 2
        # A :45 zone: 16:00 in Kathmandu is 10:15 UTC.
        values = await kpi.values("2026-10-15", "2026-10-16", tz="Asia/Kathmandu")
        assert values["leads_received"] == 4
        values = await kpi.values("2026-10-15T16:00:00+05:45", "2026-10-15T17:00:00+05:45")
        assert values["leads_received"] == 3  # 10:20, 10:50, 11:10

    async def test_every_metric_is_answered_with_its_comparisons(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T)
        await kpi.receive(
            ev.contacted(lead, d, at=T + 2 * H),
            ev.feedback(lead, d, at=T + 3 * H, accepted=True),
            ev.payment(lead, d, at=T + D, amount="1500.10"),
        )
        body = await kpi.summary("2026-10-01", "2026-11-01", tz="Europe/Moscow")
        assert body["tz"] == "Europe/Moscow" and body["currency"] == "RUB"
        assert body["periods"]["previous"] == {
            "from": "2026-09-01T00:00:00+03:00",
            "to": "2026-10-01T00:00:00+03:00",
        }
        assert body["periods"]["year_ago"]["from"] == "2025-10-01T00:00:00+03:00"
        m = body["metrics"]
        assert len(m) == 33
        assert m["leads_received"] == {
            "unit": "count",
            "value": 1,
            "previous": 0,
            "year_ago": 0,
            "delta_previous": 1,
            "delta_previous_pct": None,
            "delta_year_ago": 1,
            "delta_year_ago_pct": None,
        }
        assert m["revenue"]["value"] == 1500.1 and m["revenue"]["unit"] == "money"
        assert m["first_response_time"]["value"] == {"median": 7200.0, "p90": 7200.0, "count": 1}
        assert m["first_response_time"]["previous"] == {"median": None, "p90": None, "count": 0}
        assert m["lead_quality_rate"]["value"] == 1.0
        assert m["win_rate"]["value"] is None  # no deal closed: a zero denominator
        assert m["ltv"]["value"] == 1500.1

    async def test_late_events_change_the_periods_they_belong_to(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T)
        assert (await kpi.values("2026-10-01", "2026-11-01"))["deals_won"] == 0
        await kpi.receive(ev.stage(lead, d, Stage.won, at=T - 30 * D))  # September, said late
        assert (await kpi.values("2026-09-01", "2026-10-01"))["deals_won"] == 1

    async def test_a_lifecycle_event_before_its_lead_counts_under_the_lead(
        self, kpi: Harness
    ) -> None:
        lead = ev.snapshot(at=T, channel="yandex", campaign="spring")
        d = ev.dims(lead, Route.sales, 3)
        await kpi.receive(ev.contacted(lead, d, at=T + H))
        before = await kpi.values("2026-10-01", "2026-11-01", channel="yandex")
        assert before["leads_contacted"] == 1 and before["leads_received"] == 0
        await kpi.receive(ev.received(lead), ev.routed(lead, Route.sales, version=3))
        after = await kpi.values("2026-10-01", "2026-11-01", channel="yandex", route="sales")
        assert after["leads_contacted"] == after["leads_received"] == after["routed_sales"] == 1
        assert after["first_response_time"]["count"] == 1

    async def test_redelivered_and_erased_leads_keep_every_count(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T)
        batch = [ev.contacted(lead, d, at=T + H), ev.payment(lead, d, at=T + D, amount="10")]
        await kpi.receive(*batch)
        before = await kpi.values("2026-10-01", "2026-11-01")
        await kpi.receive(*batch)  # at-least-once: delivered again
        await kpi.receive(ev.erased(lead, at=T + 40 * D))
        assert await kpi.values("2026-10-01", "2026-11-01") == before
        # The KPI holds no personal data, erased or not.
        async with kpi.runtime.engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in (await conn.execute(sa.select(table))).all():
                    text = repr(tuple(row))
                    for personal in (lead.email, lead.name, lead.phone, "Acme"):
                        assert personal and personal not in text, (table.name, personal)

    async def test_a_payment_in_another_currency_is_refused_for_parking(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T)
        with pytest.raises(UnfoldableEvent, match="USD"):
            await kpi.receive(ev.payment(lead, d, at=T, amount="10", currency="USD"))
        assert (await kpi.values("2026-10-01", "2026-11-01"))["payments_count"] == 0

    async def test_timeseries_by_bucket_and_group(self, kpi: Harness) -> None:
        await _sales_lead(kpi, T, channel="google")
        await _sales_lead(kpi, T + D, channel="yandex")
        await _sales_lead(kpi, T + 20 * D, channel="google")
        body = await kpi.get(
            "/v1/kpi/timeseries",
            metric="leads_received",
            grain="week",
            group_by="channel",
            **{"from": "2026-10-12", "to": "2026-11-09"},
        )
        got = {(p["group"], p["label"]): p["value"] for p in body["points"]}
        assert got == {
            ("google", "2026-W42"): 1,
            ("google", "2026-W43"): 0,
            ("google", "2026-W44"): 0,
            ("google", "2026-W45"): 1,
            ("yandex", "2026-W42"): 1,
            ("yandex", "2026-W43"): 0,
            ("yandex", "2026-W44"): 0,
            ("yandex", "2026-W45"): 0,
        }
        body = await kpi.get(
            "/v1/kpi/timeseries",
            metric="leads_received,revenue",
            grain="month",
            **{"from": "2026-09-15", "to": "2026-11-01"},
        )
        assert [(p["metric"], p["label"], p["start"][:10], p["value"]) for p in body["points"]] == [
            ("leads_received", "2026-09", "2026-09-15", 0),
            ("leads_received", "2026-10", "2026-10-01", 2),
            ("revenue", "2026-09", "2026-09-15", 0.0),
            ("revenue", "2026-10", "2026-10-01", 0.0),
        ]

    async def test_the_funnel_in_order_with_step_conversion(self, kpi: Harness) -> None:
        for i in range(4):
            lead, d = await _sales_lead(kpi, T + i * M)
            if i < 2:
                await kpi.receive(ev.contacted(lead, d, at=T + H))
            if i < 1:
                await kpi.receive(ev.feedback(lead, d, at=T + 2 * H, accepted=True))
        body = await kpi.get("/v1/kpi/funnel", **{"from": "2026-10-01", "to": "2026-11-01"})
        stages = [(s["stage"], s["count"], s["step_conversion"]) for s in body["stages"]]
        assert stages == [
            ("leads_received", 4, None),
            ("leads_contacted", 2, 0.5),
            ("sal", 1, 0.5),
            ("sql", 0, 0.0),
            ("demos_held", 0, None),
            ("proposals_sent", 0, None),
            ("contracts_sent", 0, None),
            ("deals_won", 0, None),
        ]


class TestPlansAndSpend:
    async def test_put_is_idempotent_and_spreads_over_days(self, kpi: Harness) -> None:
        kpi.http.headers.update(FINANCE_AUTH)
        r = await kpi.http.put("/v1/plans/2026-10", json={"revenue": "3100000.00"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["month"] == "2026-10" and first["revenue"] == 3100000.0
        assert first["updated_by"] == "finance"
        again = await kpi.http.put("/v1/plans/2026-10", json={"revenue": "3100000.00"})
        assert again.json() == first
        await kpi.http.put("/v1/plans/2026-11", json={"revenue": 3_000_000})
        for channel, campaign, amount in (("google", "autumn", "310"), ("yandex", "none", "62")):
            r = await kpi.http.put(
                "/v1/spend/2026-10",
                json={"channel": channel, "campaign": campaign, "amount": amount},
            )
            assert r.status_code == 200, r.text
        await kpi.http.put("/v1/spend/2026-10", json={"channel": "yandex", "amount": "31"})
        await _sales_lead(kpi, T, channel="google", campaign="autumn")

        # 25 October to 5 November: 7/31 of October and 4/30 of November.
        values = await kpi.values("2026-10-25", "2026-11-05", tz="Europe/Moscow")
        assert values["plan"] == 700000.0 + 400000.0
        assert values["spend"] == 70.0 + 7.0
        assert values["cost_per_lead"] is None  # the lead came on the 15th
        october = await kpi.values("2026-10-01", "2026-11-01")
        assert october["spend"] == 341.0 and october["cost_per_lead"] == 341.0
        assert october["plan_fulfilment"] == 0.0
        google = await kpi.values("2026-10-01", "2026-11-01", channel="google")
        assert google["spend"] == 310.0 and google["plan"] is None
        assert google["plan_fulfilment"] is None
        by_source = await kpi.values("2026-10-01", "2026-11-01", source="web_form")
        assert by_source["spend"] is None and by_source["roi"] is None

        listed = await kpi.get("/v1/spend", **{"from": "2026-10", "to": "2026-11"})
        assert [(s["channel"], s["campaign"], s["amount"]) for s in listed] == [
            ("google", "autumn", 310.0),
            ("yandex", "none", 31.0),
        ]
        assert [p["month"] for p in await kpi.get("/v1/plans")] == ["2026-10", "2026-11"]
        body = await kpi.get(
            "/v1/kpi/timeseries",
            metric="spend",
            group_by="channel",
            grain="month",
            **{"from": "2026-10-01", "to": "2026-11-01"},
        )
        assert {p["group"]: p["value"] for p in body["points"]} == {"google": 310.0, "yandex": 31.0}

    async def test_bad_bodies_and_months_are_refused(self, kpi: Harness) -> None:
        kpi.http.headers.update(FINANCE_AUTH)
        cases = [
            ("/v1/plans/2026-13", {"revenue": "1"}, ["path", "month"]),
            ("/v1/plans/2026-10", {"revenue": "-1"}, ["body", "revenue"]),
            ("/v1/plans/2026-10", {"revenue": "1.001"}, ["body", "revenue"]),
            ("/v1/plans/2026-10", {"revenue": "1", "extra": 1}, ["body", "extra"]),
            ("/v1/spend/2026-10", {"amount": "1"}, ["body", "channel"]),
        ]
        for path, body, loc in cases:
            r = await kpi.http.put(path, json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert loc in [d["loc"] for d in r.json()["detail"]], r.text


class TestValidation:
    @pytest.mark.parametrize(
        ("path", "params", "loc", "named"),
        [
            (SUMMARY, {"from": "2026-11-01", "to": "2026-10-01"}, "to", "after"),
            (SUMMARY, {"from": "2026-10-01", "to": "2026-10-01"}, "to", "after"),
            (SUMMARY, {"to": "2026-10-01"}, "from", ""),
            (SUMMARY, {"from": "yesterday", "to": "2026-10-01"}, "from", "yesterday"),
            (SUMMARY, {"from": "2026-10-01T10:00:00", "to": "2026-10-02"}, "from", "offset"),
            (SUMMARY, {"from": "2020-01-01", "to": "2026-10-01"}, "to", "1098 days"),
            (SUMMARY, {**OCT, "tz": "Mars/Base"}, "tz", "Mars/Base"),
            (SUMMARY, {**OCT, "chanel": "x"}, "chanel", "chanel"),
            (SUMMARY, {**OCT, "source": "fax"}, "source", "fax"),
            (SUMMARY, {**OCT, "route": "x"}, "route", "'x'"),
            (SUMMARY, {**OCT, "definition_version": "v2"}, "definition_version", "number"),
            (SUMMARY, {**OCT, "format": "xml"}, "format", "xml"),
            (SERIES, {**OCT, "metric": "leads"}, "metric", "leads"),
            (SERIES, {**OCT, "metric": "sal,revenu"}, "metric", "revenu"),
            (SERIES, OCT, "metric", ""),
            (SERIES, {**OCT, "metric": "sal", "grain": "year"}, "grain", "year"),
            (SERIES, {**OCT, "metric": "sal", "group_by": "country"}, "group_by", "country"),
            (FUNNEL, {**OCT, "metric": "sal"}, "metric", "metric"),
        ],
    )
    async def test_bad_parameters_answer_422_naming_them(
        self, kpi: Harness, path: str, params: dict[str, str], loc: str, named: str
    ) -> None:
        r = await kpi.http.get(path, params=params)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert ["query", loc] in [d["loc"] for d in detail], detail
        assert named in str(detail)

    async def test_scopes(self, kpi: Harness) -> None:
        params = {"from": "2026-10-01", "to": "2026-11-01"}
        url = "/v1/kpi/summary"
        assert (
            await kpi.http.get(url, params=params, headers={"Authorization": ""})
        ).status_code == 401
        assert (await kpi.http.get(url, params=params, headers=CRM_AUTH)).status_code == 403
        assert (await kpi.http.get(url, params=params, headers=BI_AUTH)).status_code == 200
        plan = {"revenue": "1"}
        assert (
            await kpi.http.put("/v1/plans/2026-10", json=plan, headers=BI_AUTH)
        ).status_code == 403
        assert (await kpi.http.post("/v1/admin/rebuild", headers=BI_AUTH)).status_code == 403
        assert (await kpi.http.post("/v1/admin/rebuild", headers=FINANCE_AUTH)).status_code == 403


class TestRepresentations:
    async def test_csv_by_accept_or_format(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T, channel="=cmd|' /C calc'!A0")
        await kpi.receive(ev.contacted(lead, d, at=T + H))
        params = {"from": "2026-10-01", "to": "2026-11-01"}
        by_accept = await kpi.http.get(
            "/v1/kpi/summary", params=params, headers={"Accept": "text/csv"}
        )
        by_format = await kpi.http.get("/v1/kpi/summary", params={**params, "format": "csv"})
        assert by_accept.status_code == by_format.status_code == 200
        assert by_accept.text == by_format.text
        assert by_accept.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(by_accept.text)))
        assert rows[0][:3] == ["metric", "unit", "value"]
        by_metric = {r[0]: r for r in rows[1:]}
        assert by_metric["leads_received"][2] == "1"
        assert by_metric["first_response_time.median"][2] == "3600.0"
        assert by_metric["first_response_time.count"][2] == "1"
        assert by_metric["win_rate"][2] == ""  # null
        series = await kpi.http.get(
            "/v1/kpi/timeseries",
            params={**params, "metric": "leads_received", "group_by": "channel", "format": "csv"},
        )
        cells = list(csv.reader(io.StringIO(series.text)))
        assert cells[0] == ["metric", "start", "end", "label", "group", "value"]
        assert cells[1][4].startswith("'=cmd")  # a spreadsheet will not run it
        funnel = await kpi.http.get("/v1/kpi/funnel", params={**params, "format": "csv"})
        assert funnel.text.splitlines()[0] == "stage,count,step_conversion,conversion_from_first"

    async def test_etag_answers_304_until_the_numbers_change(self, kpi: Harness) -> None:
        lead, d = await _sales_lead(kpi, T)
        params = {"from": "2026-10-01", "to": "2026-11-01"}
        first = await kpi.http.get("/v1/kpi/summary", params=params)
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, no-cache"
        assert "Authorization" in first.headers["vary"]
        same = await kpi.http.get("/v1/kpi/summary", params=params, headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b""
        assert same.headers["etag"] == etag
        weak = await kpi.http.get(
            "/v1/kpi/summary", params=params, headers={"If-None-Match": f'"x", W/{etag}'}
        )
        assert weak.status_code == 304
        as_csv = await kpi.http.get("/v1/kpi/summary", params={**params, "format": "csv"})
        assert as_csv.headers["etag"] != etag
        await kpi.receive(ev.contacted(lead, d, at=T + H))
        changed = await kpi.http.get(
            "/v1/kpi/summary", params=params, headers={"If-None-Match": etag}
        )
        assert changed.status_code == 200 and changed.headers["etag"] != etag


class TestDashboard:
    async def test_the_page_and_its_assets_carry_security_headers(self, kpi: Harness) -> None:
        page = await kpi.http.get("/dashboard", headers={"Authorization": ""})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert 'data-dev-mode="true"' in page.text  # dev mode: the token field says `dev`
        assert "Bearer" not in page.text
        for name in ("dashboard.js", "dashboard.css", "chart.umd.min.js"):
            asset = await kpi.http.get(f"/dashboard/assets/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["x-content-type-options"] == "nosniff"
            again = await kpi.http.get(
                f"/dashboard/assets/{name}", headers={"If-None-Match": asset.headers["etag"]}
            )
            assert again.status_code == 304
        for bad in ("../main.py", "..%2Fmain.py", "dashboard.html", "vendor/chart.umd.min.js"):
            assert (await kpi.http.get(f"/dashboard/assets/{bad}")).status_code == 404, bad

    async def test_production_mode_prefills_no_token(
        self, database_url: str, tmp_path: Path
    ) -> None:
        from shared.settings import CommonSettings, Mode
        from tests.fixtures.kpi.harness import ADMIN, BI

        common = CommonSettings(
            data_dir=tmp_path,
            kafka_bootstrap_servers="127.0.0.1:1",
            mode=Mode.production,
            auth_tokens=[BI, ADMIN],
        )
        async with kpi_app(database_url, tmp_path, common=common) as prod:
            page = await prod.http.get("/dashboard")
            assert 'data-dev-mode="false"' in page.text


class TestRebuildRequests:
    async def test_start_status_conflict_and_cancel(self, kpi: Harness) -> None:
        kpi.http.headers.update(ADMIN_AUTH)
        r = await kpi.http.post("/v1/admin/rebuild")
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["status"] == "running" and started["rebuild_id"] == 2
        assert r.headers["location"] == "/v1/admin/rebuilds/2" == started["status_url"]
        again = await kpi.http.post("/v1/admin/rebuild")
        assert again.status_code == 409 and again.json()["detail"]["rebuild_id"] == 2
        listed = (await kpi.http.get("/v1/admin/rebuilds")).json()
        assert [(g["generation"], g["generation_status"]) for g in listed] == [
            (2, "building"),
            (1, "active"),
        ]
        cancelled = await kpi.http.delete("/v1/admin/rebuilds/2")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await kpi.http.delete("/v1/admin/rebuilds/2")).status_code == 409
        assert (await kpi.http.get("/v1/admin/rebuilds/9")).status_code == 404
        # Past PostgreSQL's integers: no rebuild, and a 422 naming it (the database would
        # refuse the parameter with a 500).
        for method in ("GET", "DELETE"):
            r = await kpi.http.request(method, "/v1/admin/rebuilds/300564941373")
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "rebuild_id"
        assert (await kpi.http.post("/v1/admin/rebuild")).json()["rebuild_id"] == 3
