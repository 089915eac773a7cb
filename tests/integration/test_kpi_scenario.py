"""Must show: a year and a half of leads through real Kafka into the real KPI service, every
metric compared with an independent computation, and the same numbers after a rebuild.

The scenario (tests/fixtures/kpi/scenario.py) is published to a broker of the test's own in
three waves: most events in shuffled order across topics and partitions; then late events
for past periods, events published twice and a payment in another currency; then, while a
rebuild runs, fresh leads and late news for an old period. After each wave the KPI's
answers must equal the oracle's (tests/fixtures/kpi/oracle.py), which reads the same
events the plain way and shares no code with the service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from services.kpi.config import KpiSettings
from services.kpi.fold.apply import foldable
from services.kpi.main import create_app
from services.kpi.store.tables import aggregates, facts, fine_counts, generations, inbox, leads
from shared.events import _Envelope
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.fixtures.kpi import oracle as expected
from tests.fixtures.kpi.kafka import private_broker, publish
from tests.fixtures.kpi.scenario import Scenario, generate
from tests.support import serving

pytestmark = pytest.mark.kafka

SUMMARIES: list[tuple[str, str, str, dict[str, str]]] = [
    ("2026-10-01", "2026-11-01", "UTC", {}),
    ("2026-09-15", "2026-10-15", "Europe/Moscow", {}),  # cuts two months
    ("2026-01-01", "2026-04-01", "Asia/Kolkata", {}),  # a quarter in a +05:30 zone
    ("2025-12-29", "2026-01-05", "Asia/Kathmandu", {}),  # a week across New Year, +05:45
    ("2026-10-05T10:17:00Z", "2026-10-20T13:45:30+03:00", "UTC", {}),  # minutes at the edges
    ("2025-03-01", "2025-12-01", "Europe/Moscow", {"channel": "google"}),
    ("2025-01-01", "2026-01-01", "UTC", {"channel": "google", "campaign": "autumn"}),
    ("2026-06-10", "2026-08-20", "America/New_York", {"source": "web_form"}),
    ("2025-07-01", "2026-07-01", "UTC", {"campaign": "none"}),
    ("2025-01-01", "2026-11-01", "UTC", {"route": "sales"}),
    ("2025-06-01", "2026-06-01", "Europe/Berlin", {"definition_version": "2"}),
    ("2026-02-01", "2026-03-01", "UTC", {"route": "processing", "channel": "yandex"}),
]
SERIES: list[tuple[str, str, str, str, list[str], str | None, dict[str, str]]] = [
    ("2025-01-01", "2026-12-01", "Europe/Moscow", "month",
     ["leads_received", "revenue", "plan", "sal", "first_response_time", "win_rate"], None, {}),
    ("2026-08-31", "2026-11-02", "UTC", "week", ["leads_received", "spend"], "channel", {}),
    ("2026-10-01", "2026-11-01", "Asia/Kolkata", "day", ["leads_received", "routed_sales"],
     "route", {}),
    ("2025-01-01", "2026-11-01", "UTC", "month", ["sal", "deals_won"], "definition_version", {}),
    ("2025-09-01", "2026-03-01", "UTC", "month", ["leads_received", "lead_lifetime"], "source",
     {"channel": "google"}),
]  # fmt: skip
FUNNELS = [
    ("2026-10-01", "2026-11-01", "UTC", {}),
    ("2025-01-01", "2026-01-01", "UTC", {"source": "api"}),
]
# Untouched by the wave published during the rebuild: must stay byte for byte the same.
STABLE = ("2026-05-01", "2026-08-01", "UTC")


def _bound(text: str, tz: ZoneInfo) -> datetime:
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=tz)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _is_empty(value: Any) -> bool:
    return value in (0, 0.0, None) or (isinstance(value, dict) and value.get("count") == 0)


class Checker:
    def __init__(self, http: httpx.AsyncClient, oracle: expected.Oracle) -> None:
        self.http = http
        self.oracle = oracle
        self.compared = 0

    async def summaries(self) -> None:
        for start, end, tz, filters in SUMMARIES:
            zone = ZoneInfo(tz)
            r = await self.http.get(
                "/v1/kpi/summary", params={"from": start, "to": end, "tz": tz, **filters}
            )
            assert r.status_code == 200, r.text
            got = {
                m: {k: v for k, v in body.items() if k != "unit"}
                for m, body in r.json()["metrics"].items()
            }
            want = expected.summary(
                self.oracle, _bound(start, zone), _bound(end, zone), zone, filters
            )
            wrong = {m: (got[m], want[m]) for m in want if got[m] != want[m]}
            assert not wrong, f"summary {start}..{end} {tz} {filters}: {wrong}"
            self.compared += len(want)

    async def series(self) -> None:
        for start, end, tz, grain, metrics, group_by, filters in SERIES:
            zone = ZoneInfo(tz)
            params: dict[str, Any] = {
                "from": start,
                "to": end,
                "tz": tz,
                "grain": grain,
                "metric": ",".join(metrics),
                **filters,
            }
            if group_by:
                params["group_by"] = group_by
            r = await self.http.get("/v1/kpi/timeseries", params=params)
            assert r.status_code == 200, r.text
            got = {(p["metric"], p["label"], p["group"]): p["value"] for p in r.json()["points"]}
            want = {
                (m, label, group): value
                for m, label, group, value in expected.timeseries(
                    self.oracle,
                    _bound(start, zone),
                    _bound(end, zone),
                    zone,
                    grain,
                    metrics,
                    filters,
                    group_by,
                )
            }
            wrong = {}
            for key in got.keys() | want.keys():
                if key not in got and _is_empty(want[key]):
                    continue  # a group with nothing in the period is left out
                if got.get(key, "missing") != want.get(key, "missing"):
                    wrong[key] = (got.get(key, "missing"), want.get(key, "missing"))
            assert not wrong, f"timeseries {params}: {dict(list(wrong.items())[:8])}"
            assert any(not _is_empty(v) for v in got.values()), params  # the data is there
            self.compared += len(got)

    async def funnels(self) -> None:
        for start, end, tz, filters in FUNNELS:
            zone = ZoneInfo(tz)
            r = await self.http.get(
                "/v1/kpi/funnel", params={"from": start, "to": end, "tz": tz, **filters}
            )
            values = self.oracle.values(
                expected.Question(_bound(start, zone), _bound(end, zone), zone, filters)
            )
            assert [(s["stage"], s["count"]) for s in r.json()["stages"]] == [
                (stage, int(values[stage])) for stage in expected.FUNNEL
            ]
            self.compared += len(expected.FUNNEL)

    async def everything(self) -> None:
        await self.summaries()
        await self.series()
        await self.funnels()


async def _wait_for(condition: Any, what: str, seconds: float = 120.0, poll: float = 0.2) -> None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                if await condition():
                    return
                await asyncio.sleep(poll)
    except TimeoutError:
        pytest.fail(f"waited {seconds:.0f}s for {what}")


def _foldable_ids(events: list[_Envelope]) -> set[str]:
    return {e.id for e in events if foldable(e, "RUB")}  # type: ignore[arg-type]


async def _put_plans_and_spend(http: httpx.AsyncClient, s: Scenario) -> None:
    for month, revenue in s.plans.items():
        r = await http.put(f"/v1/plans/{month}", json={"revenue": str(revenue)})
        assert r.status_code == 200, r.text
    for month, channel, campaign, amount in s.spend:
        r = await http.put(
            f"/v1/spend/{month}",
            json={"channel": channel, "campaign": campaign, "amount": str(amount)},
        )
        assert r.status_code == 200, r.text


async def test_every_metric_matches_an_independent_computation_before_and_after_a_rebuild(
    database_url: str, tmp_path: Path
) -> None:
    s = generate()
    async with private_broker(tmp_path / "kafka") as bootstrap:
        await asyncio.to_thread(migrate, "kpi", database_url)
        settings = KpiSettings(
            database_url=database_url,
            consumer_group=f"kpi-scenario-{uuid.uuid4().hex[:8]}",
            consumer_max_records=500,
            rebuild_max_records=20,  # slow enough that the third wave lands mid-rebuild
            rebuild_window_events=40,
            rebuild_poll_seconds=0.2,
            retired_grace_seconds=0,
            common=CommonSettings(
                data_dir=tmp_path, kafka_bootstrap_servers=bootstrap, topic_partitions=3
            ),
        )
        app = create_app(settings)
        published: list[_Envelope] = []

        async with serving(app) as http:
            http.headers["Authorization"] = "Bearer dev"
            engine = app.state.runtime.engine

            async def folded() -> bool:
                async with engine.connect() as conn:
                    count = await conn.scalar(sa.select(sa.func.count()).select_from(inbox))
                return count == len(_foldable_ids(published))

            async def check() -> Checker:
                checker = Checker(http, expected.Oracle(published, s.plans, s.spend))
                await checker.everything()
                return checker

            await _put_plans_and_spend(http, s)
            # Wave 1: most of the history, shuffled across topics and partitions.
            await publish(bootstrap, s.waves[0])
            published += s.waves[0]
            await _wait_for(folded, "the first wave folded")
            await check()

            # Wave 2: late events for past periods, repeats, a payment in another currency.
            await publish(bootstrap, s.waves[1])
            published += s.waves[1]
            await _wait_for(folded, "the late wave folded")
            checker = await check()
            assert checker.compared > 1000  # values compared in one round
            stable = {"from": STABLE[0], "to": STABLE[1], "tz": STABLE[2]}
            before = await http.get("/v1/kpi/summary", params=stable)

            # Rebuild, with a third wave published while it runs.
            r = await http.post("/v1/admin/rebuild")
            assert r.status_code == 202, r.text
            status_url = r.headers["location"]

            async def targets_known() -> bool:
                body = (await http.get(status_url)).json()
                return body["targets"] is not None or body["status"] != "running"

            await _wait_for(targets_known, "the rebuild's targets", poll=0.05)
            # Published after the targets were observed: only the live consumer's writes to
            # the generation being built can bring these events into it.
            await publish(bootstrap, s.waves[2])
            published += s.waves[2]
            running = (await http.get(status_url)).json()

            async def rebuilt() -> bool:
                return (await http.get(status_url)).json()["status"] == "done"

            await _wait_for(rebuilt, "the rebuild done", seconds=300)
            await _wait_for(folded, "the third wave folded")
            done = (await http.get(status_url)).json()
            assert running["status"] == "running", "the third wave was meant to land mid-rebuild"
            assert done["caught_up"] and done["offsets_done"] == done["offsets_total"] > 0
            await check()

            after = await http.get("/v1/kpi/summary", params=stable)
            assert after.json() == before.json()
            assert after.headers["etag"] == before.headers["etag"]

            async def purged() -> bool:
                g = generations.c
                async with engine.connect() as conn:
                    rows = await conn.execute(sa.select(g.generation, g.status, g.purged_at))
                    state = {gen: (st, p is not None) for gen, st, p in rows}
                    left = [
                        await conn.scalar(
                            sa.select(sa.func.count()).select_from(t).where(t.c.generation == 1)
                        )
                        for t in (aggregates, fine_counts, facts, leads)
                    ]
                return state == {1: ("retired", True), 2: ("active", False)} and left == [0] * 4

            await _wait_for(purged, "generation 1 purged")


def test_the_scenario_has_what_the_issue_asks_for() -> None:
    """Seasonality, every route, full and partial lifecycles, repeat payments, plans, spend."""
    s = generate()
    oracle = expected.Oracle(s.events, s.plans, s.spend)
    utc = ZoneInfo("UTC")

    def month(y: int, m: int, **filters: str) -> Mapping[str, Any]:
        start = datetime(y, m, 1, tzinfo=utc)
        end = datetime(y + m // 12, m % 12 + 1, 1, tzinfo=utc)
        return oracle.values(expected.Question(start, end, utc, filters))

    assert month(2025, 10)["leads_received"] > 1.8 * month(2025, 7)["leads_received"]
    assert month(2026, 10)["leads_received"] > month(2025, 10)["leads_received"]
    year = oracle.values(
        expected.Question(
            datetime(2025, 1, 1, tzinfo=utc), datetime(2026, 11, 1, tzinfo=utc), utc, {}
        )
    )
    every_route = ("routed_sales", "routed_partner", "routed_nurture", "routed_processing")
    ends = ("rejected", "deals_won", "deals_lost", "briefs_filled", "sales_rejected")
    for metric in (*every_route, *ends):
        assert year[metric] > 0, metric
    paying = [lead for lead in oracle.leads.values() if len(lead.payments()) > 1]
    assert len(paying) > 5
    assert year["proposal_time"][2] > 0 and year["lead_lifetime"][2] > 0
    assert len(s.plans) == 22 and len(s.spend) == 88
