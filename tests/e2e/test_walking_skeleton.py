"""One lead end to end: posted over HTTP, routed on the real topic, counted by the KPI service."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cli import postgres_server
from shared.events import TOPIC_ROUTED, LeadRouted
from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH, event_of, header, lead_payload, read_topic

pytestmark = pytest.mark.e2e


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_lead_is_routed_and_counted(stack: Stack) -> None:
    assert "the bearer token `dev` holds every scope" in "\n".join(stack.output)
    async with httpx.AsyncClient(headers=DEV_AUTH, timeout=10) as http:
        for name, url in stack.urls.items():
            assert (await http.get(f"{url}/readyz")).status_code == 200, name
        r = await http.post(f"{stack.urls['intake']}/v1/leads", json=lead_payload())
        assert r.status_code == 202, r.text
        lead_id = r.json()["lead_id"]

        records = await read_topic(
            stack.kafka, TOPIC_ROUTED, lambda rec: rec.key == lead_id.encode(), 1, wait_seconds=30
        )
        routed = event_of(records[0])
        assert isinstance(routed, LeadRouted)
        assert header(records[0], "ce_type") == "lead.routed"
        assert routed.source == "/qualifier" and routed.subject == lead_id
        assert routed.data.decision.route.value == "sales"
        assert routed.data.decision.assignee == "vera"
        assert routed.data.decision.definition_version == 1

        view = (await http.get(f"{stack.urls['qualifier']}/v1/leads/{lead_id}")).json()
        assert view["route"] == "sales" and view["stages"][0]["stage"] == "routed"

        today = datetime.now(UTC).date()
        params = {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()}
        metrics: dict[str, dict[str, object]] = {}
        for _ in range(100):
            summary = await http.get(f"{stack.urls['kpi']}/v1/kpi/summary", params=params)
            metrics = summary.json()["metrics"]
            if metrics["routed_sales"]["value"] == 1:
                break
            await asyncio.sleep(0.2)
        assert metrics["leads_received"]["value"] == 1
        assert metrics["routed_sales"]["value"] == 1
        assert metrics["rejected"]["value"] == 0


def test_ctrl_c_stops_everything_it_started(stack: Stack) -> None:
    assert postgres_server.status(stack.postgres).running  # `leadflow up` started it
    socket = stack.postgres.socket_dir / ".s.PGSQL.5432"
    assert socket.exists()
    assert stack.stop() == 0
    assert not postgres_server.status(stack.postgres).running
    assert not socket.exists()  # removed by a clean shutdown
    assert not _port_open(stack.kafka_port)
    for url in stack.urls.values():
        assert not _port_open(int(url.rsplit(":", 1)[1]))
    assert "stopped" in stack.output[-1]
