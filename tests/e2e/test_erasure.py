"""Erasure end to end: after DELETE /personal-data no service returns or stores the person.

Every table of every service's database is scanned for the name, e-mail and phone; the
KPI counts stay as they were.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH, lead_payload

pytestmark = pytest.mark.e2e


async def _rows_mentioning(dsn: str, needles: list[str]) -> list[tuple[str, str]]:
    found = []
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        for (table,) in tables:
            for row in await conn.fetch(f'SELECT * FROM "{table}"'):
                text = " ".join(
                    v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                    for v in row.values()
                )
                found += [(table, n) for n in needles if n in text]
    finally:
        await conn.close()
    return found


async def _summary(http: httpx.AsyncClient, stack: Stack) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
    r = await http.get(f"{stack.urls['kpi']}/v1/kpi/summary", params=params)
    r.raise_for_status()
    return {k: v["value"] for k, v in r.json()["metrics"].items()}


async def test_no_service_keeps_the_person_and_counts_stay(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    name, email, phone = f"Erasure Zyx{tag}", f"erase.{tag}@acme-corp.example", "+79161234567"
    needles = [name, email, phone, f"Zyx{tag}"]
    async with httpx.AsyncClient(headers=DEV_AUTH, timeout=10) as http:
        r = await http.post(
            f"{stack.urls['intake']}/v1/leads",
            json=lead_payload(name=name, email=email, phone=phone),
        )
        assert r.status_code == 202, r.text
        lead_id = r.json()["lead_id"]
        qualifier_lead = f"{stack.urls['qualifier']}/v1/leads/{lead_id}"
        for _ in range(150):
            if (await http.get(qualifier_lead)).status_code == 200:
                break
            await asyncio.sleep(0.2)
        contact = await http.post(f"{qualifier_lead}/contact", json={"by": "vera"})
        assert contact.status_code in (200, 201), contact.text
        # Sales writes free text that names the person: erasure must reach it too.
        reason = f"{name} ({phone}) wants only a one-off audit"
        feedback = await http.post(
            f"{qualifier_lead}/feedback", json={"decision": "rejected", "reason": reason}
        )
        assert feedback.status_code in (200, 201), feedback.text
        for _ in range(150):
            before = await _summary(http, stack)
            if before["leads_contacted"] == 1 and before["sales_rejected"] == 1:
                break
            await asyncio.sleep(0.2)
        assert before["leads_contacted"] == 1 and before["sales_rejected"] == 1

        # The scan below sees the person before erasure (so its silence after means something).
        assert await _rows_mentioning(stack.postgres.dsn("intake"), needles)
        erased = await http.delete(f"{stack.urls['intake']}/v1/leads/{lead_id}/personal-data")
        assert erased.status_code == 200, erased.text
        for _ in range(150):
            view = (await http.get(qualifier_lead)).json()
            if not any(n in str(view) for n in needles):
                break
            await asyncio.sleep(0.2)
        answers = [
            (await http.get(f"{stack.urls['intake']}/v1/leads/{lead_id}")).text,
            (await http.get(qualifier_lead)).text,
        ]
        for answer in answers:
            assert not [n for n in needles if n in answer], answer
        await asyncio.sleep(1.0)  # anything in flight lands before the counts are read
        after = await _summary(http, stack)
    assert after == before, "erasure changed the numbers"
    for service in ("intake", "qualifier", "kpi"):
        leftovers = await _rows_mentioning(stack.postgres.dsn(service), needles)
        assert not leftovers, f"{service} still stores {leftovers}"
