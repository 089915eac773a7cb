"""The dashboard in headless Chromium against a running KPI service folding real topics.

The KPI service runs as a process (`leadflow serve kpi`) over a broker of the test's own
holding the seeded scenario; the page is loaded with `?token=`, and the test reads back
from Chart.js what each chart drew and checks it against the API and the independent
oracle, checks the canvases hold painted pixels, and that the browser logged no error
(a CSP violation would be one). `LEADFLOW_DASHBOARD_SCREENSHOT=docs/dashboard.png`
writes the screenshot kept in the docs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from cli.kafka.ports import free_port
from shared.migrations import migrate
from tests.conftest import fresh_database
from tests.fixtures.kpi import oracle as expected
from tests.fixtures.kpi.browser import chromium, chromium_path
from tests.fixtures.kpi.kafka import private_broker, publish
from tests.fixtures.kpi.scenario import Scenario, generate
from tests.support import DEV_AUTH

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        chromium_path() is None and not os.environ.get("CI"),
        reason="chromium is not installed (CI installs it: deploy/chromium/install.sh)",
    ),
]

PERIOD = {"from": "2026-10-01", "to": "2026-11-01", "tz": "UTC"}
READY = (
    "document.body && document.body.dataset.state === 'ready' && "
    "document.querySelectorAll('figure[data-chart][data-rendered=\"true\"]').length === 5"
)
DRAWN = """(() => {
  const out = {charts: {}};
  for (const fig of document.querySelectorAll('figure[data-chart]')) {
    const canvas = fig.querySelector('canvas');
    const chart = Chart.getChart(canvas);
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
    out.charts[fig.dataset.chart] = {
      labels: chart.data.labels,
      series: chart.data.datasets.map((d) => d.label),
      data: chart.data.datasets.map((d) => d.data),
      painted,
    };
  }
  out.tiles = Object.fromEntries([...document.querySelectorAll('.tile')]
    .map((t) => [t.dataset.metric, JSON.parse(t.dataset.value)]));
  out.rows = document.querySelectorAll('#metrics tbody tr').length;
  out.url = location.href;
  out.status = document.getElementById('status').textContent;
  return out;
})()"""


@pytest.fixture(scope="module")
async def kpi_service(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> AsyncIterator[tuple[str, Scenario]]:
    """A KPI process on a broker holding the scenario, with plans and spend entered."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    s = generate()
    async with (
        private_broker(tmp_path / "kafka") as bootstrap,
        fresh_database(postgres_admin_url) as database_url,
    ):
        await publish(bootstrap, s.waves[0] + s.waves[1])
        data_dir = tmp_path / "stack"
        port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LEADFLOW_DATA_DIR": str(data_dir),
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LEADFLOW_TOPIC_PARTITIONS": "3",
            "LEADFLOW_KPI_PORT": str(port),
            "LEADFLOW_LOG_LEVEL": "WARNING",
            "LEADFLOW_KPI_DATABASE_URL": database_url,
        }
        await asyncio.to_thread(migrate, "kpi", database_url)
        log = (tmp_path / "kpi.log").open("w")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "serve",
            "kpi",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, headers=DEV_AUTH, timeout=10) as http:
                async with asyncio.timeout(60):
                    while True:
                        assert process.returncode is None, (tmp_path / "kpi.log").read_text()[
                            -3000:
                        ]
                        try:
                            if (await http.get("/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.2)
                for month, revenue in s.plans.items():
                    await http.put(f"/v1/plans/{month}", json={"revenue": str(revenue)})
                for month, channel, campaign, amount in s.spend:
                    line = {"channel": channel, "campaign": campaign, "amount": str(amount)}
                    await http.put(f"/v1/spend/{month}", json=line)
                oracle = expected.Oracle(s.waves[0] + s.waves[1], s.plans, s.spend)
                all_time = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
                everything = oracle.values(expected.Question(*all_time, ZoneInfo("UTC"), {}))
                async with asyncio.timeout(120):
                    while True:
                        r = await http.get(
                            "/v1/kpi/summary", params={"from": "2025-01-01", "to": "2027-01-01"}
                        )
                        m = r.json()["metrics"]
                        folded = (m["leads_received"]["value"], m["payments_count"]["value"])
                        if folded == (everything["leads_received"], everything["payments_count"]):
                            break
                        await asyncio.sleep(0.3)
            yield url, s
        finally:
            process.send_signal(signal.SIGTERM)  # only the process this fixture started
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
            log.close()


def _values(points: list[dict[str, Any]], metric: str) -> list[Any]:
    return [p["value"] for p in points if p["metric"] == metric]


async def test_the_dashboard_draws_the_numbers_of_the_api(
    kpi_service: tuple[str, Scenario], tmp_path: Path
) -> None:
    url, s = kpi_service
    async with httpx.AsyncClient(base_url=url, headers=DEV_AUTH, timeout=10) as http:
        summary = (await http.get("/v1/kpi/summary", params=PERIOD)).json()
        funnel = (await http.get("/v1/kpi/funnel", params=PERIOD)).json()
        trend = {"grain": "month", "tz": "UTC"}
        months = {"from": "2025-11-01", "to": "2026-11-01"}
        months_ago = {"from": "2024-11-01", "to": "2025-11-01"}

        async def series(metric: str, bounds: dict[str, str]) -> Any:
            params = {**trend, **bounds, "metric": metric}
            return (await http.get("/v1/kpi/timeseries", params=params)).json()

        leads = await series("leads_received", months)
        leads_ago = await series("leads_received", months_ago)
        money = await series("revenue,plan", months)

    async with chromium() as page:
        query = "&".join(f"{k}={v}" for k, v in PERIOD.items())
        await page.send("Page.navigate", url=f"{url}/dashboard?token=dev&{query}")
        await page.wait_for(READY)
        drawn = await page.evaluate(DRAWN)
        png = await page.screenshot()

    charts = drawn["charts"]
    assert "token=" not in drawn["url"]  # taken into sessionStorage, off the address bar
    assert all(chart["painted"] > 2000 for chart in charts.values()), {
        k: c["painted"] for k, c in charts.items()
    }
    # Funnel: the API's counts, which are the oracle's.
    counts = [stage["count"] for stage in funnel["stages"]]
    assert charts["funnel"]["data"] == [counts]
    oracle = expected.Oracle(s.waves[0] + s.waves[1], s.plans, s.spend)
    october_bounds = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    october = oracle.values(expected.Question(*october_bounds, ZoneInfo("UTC"), {}))
    assert counts == [int(october[stage]) for stage in expected.FUNNEL] and counts[0] > 20
    # Leads by month with last year's line.
    by_month = charts["leads-by-month"]
    assert by_month["labels"] == [p["label"] for p in leads["points"]]
    assert by_month["labels"][0] == "2025-11" and by_month["labels"][-1] == "2026-10"
    assert by_month["data"] == [
        _values(leads["points"], "leads_received"),
        _values(leads_ago["points"], "leads_received"),
    ]
    assert sum(by_month["data"][0]) > sum(by_month["data"][1]) > 0
    # Conversion rates: this period, the one before, a year ago.
    rates = ("brief_rate", "lead_quality_rate", "win_rate")
    assert charts["conversion"]["data"] == [
        [summary["metrics"][r][k] for r in rates] for k in ("value", "previous", "year_ago")
    ]
    # Speeds: medians and p90 in hours.
    speeds = ("first_response_time", "proposal_time", "contract_time", "lead_lifetime")

    def hours(v: dict[str, Any], part: str) -> float | None:
        return None if v[part] is None else round(v[part] / 3600 * 100) / 100

    m = summary["metrics"]
    assert charts["speed"]["data"] == [
        [hours(m[x]["value"], "median") for x in speeds],
        [hours(m[x]["value"], "p90") for x in speeds],
        [hours(m[x]["previous"], "median") for x in speeds],
    ]
    assert charts["speed"]["data"][0][0] > 0
    # Revenue against plan by month.
    assert charts["revenue-plan"]["series"] == ["revenue", "plan"]
    assert charts["revenue-plan"]["data"] == [
        _values(money["points"], "revenue"),
        _values(money["points"], "plan"),
    ]
    assert all(v > 0 for v in charts["revenue-plan"]["data"][1])
    # The key figures and the full table.
    for name, value in drawn["tiles"].items():
        assert value == m[name]["value"], name
    assert drawn["rows"] == 33
    errors = [
        line for line in page.console() if "error" in line.lower() or "violat" in line.lower()
    ]
    assert not errors, errors
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("LEADFLOW_DASHBOARD_SCREENSHOT")
    (Path(target) if target else tmp_path / "dashboard.png").write_bytes(png)


async def test_without_a_token_the_page_asks_for_one(kpi_service: tuple[str, Scenario]) -> None:
    url, _ = kpi_service
    async with chromium() as page:
        await page.send(
            "Page.navigate", url=f"{url}/dashboard?token=wrong&from=2026-10-01&to=2026-11-01"
        )
        await page.wait_for("document.body && document.body.dataset.state === 'needs-token'")
        shown = await page.evaluate("!document.getElementById('auth').hidden")
        message = await page.evaluate("document.getElementById('auth-message').textContent")
    assert shown and "refused" in message
