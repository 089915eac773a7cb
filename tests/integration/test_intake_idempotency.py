"""Idempotency-Key on a real database: replay, mismatch, in flight, lapsed claims, expiry,
and N concurrent identical requests making exactly one lead and one event."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import sqlalchemy as sa

from services.intake.leads.schemas import LeadIn
from services.intake.tables import idempotency_keys, leads
from shared.db import create_engine, utcnow
from shared.idempotency import fingerprint, purge_expired
from tests.integration.test_intake_support import count, published
from tests.support import DEV_AUTH, lead_payload


async def _claim(database_url: str, key: str, body: dict[str, object], locked_for: float) -> None:
    """What a first request holds while it works (or held when it crashed)."""
    now = utcnow()
    request_hash = fingerprint(
        "POST", "/v1/leads", LeadIn.model_validate(body).model_dump(mode="json")
    )
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                idempotency_keys.insert().values(
                    principal="dev",
                    key=key,
                    request_hash=request_hash,
                    claim_id="first",
                    created_at=now,
                    locked_until=now + timedelta(seconds=locked_for),
                )
            )
    finally:
        await engine.dispose()


class TestIdempotencyKey:
    async def test_a_retry_while_the_first_is_in_flight_is_409(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        body = lead_payload()
        await _claim(database_url, "in-flight", body, locked_for=60)
        r = await intake.post(
            "/v1/leads", json=body, headers={**DEV_AUTH, "Idempotency-Key": "in-flight"}
        )
        assert r.status_code == 409
        assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Another body with the same key is still a mismatch, in flight or not.
        other = await intake.post(
            "/v1/leads", json=lead_payload(), headers={**DEV_AUTH, "Idempotency-Key": "in-flight"}
        )
        assert other.status_code == 422
        assert await count(database_url) == 0

    async def test_a_crashed_request_s_key_is_free_once_its_claim_lapses(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        body = lead_payload()
        await _claim(database_url, "crashed", body, locked_for=-1)
        headers = {**DEV_AUTH, "Idempotency-Key": "crashed"}
        first = await intake.post("/v1/leads", json=body, headers=headers)
        assert first.status_code == 202 and first.json()["status"] == "accepted"
        again = await intake.post("/v1/leads", json=body, headers=headers)
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        assert await count(database_url) == 1

    async def test_a_refused_request_frees_its_key(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        headers = {**DEV_AUTH, "Idempotency-Key": "fix-and-retry"}
        bad = lead_payload(company_size="a lot")  # refused inside the claimed work
        assert (await intake.post("/v1/leads", json=bad, headers=headers)).status_code == 422
        good = lead_payload()
        r = await intake.post("/v1/leads", json=good, headers=headers)
        assert r.status_code == 202, r.text
        assert await count(database_url, idempotency_keys) == 1

    async def test_keys_are_scoped_to_the_client(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        await intake.post(
            "/v1/leads", json=lead_payload(), headers={**DEV_AUTH, "Idempotency-Key": "k1"}
        )
        r = await intake.post(
            "/v1/leads",
            json=lead_payload(),
            headers={"Authorization": "Bearer writer-token", "Idempotency-Key": "k1"},
        )
        assert r.status_code == 202 and await count(database_url) == 2

    async def test_batches_replay_too(self, intake: httpx.AsyncClient, database_url: str) -> None:
        body = {"leads": [lead_payload(), lead_payload(email="bad")]}
        headers = {**DEV_AUTH, "Idempotency-Key": "batch-1"}
        first = await intake.post("/v1/leads:batch", json=body, headers=headers)
        again = await intake.post("/v1/leads:batch", json=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() and await count(database_url) == 1

    async def test_n_concurrent_retries_make_one_lead_and_one_event(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        body = lead_payload()
        headers = {**DEV_AUTH, "Idempotency-Key": "burst"}
        answers = await asyncio.gather(
            *(intake.post("/v1/leads", json=body, headers=headers) for _ in range(12))
        )
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {202, 409} and 202 in codes, codes
        assert len({a.json()["lead_id"] for a in answers if a.status_code == 202}) == 1
        assert await count(database_url) == 1
        (lead_id,) = [r.lead_id for r in await _lead_ids(database_url)]
        events = await published(database_url, kafka_bootstrap, {lead_id})
        assert len(events) == 1

    async def test_expired_keys_are_purged_and_fresh_ones_kept(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        for key in ("old", "new"):
            await intake.post(
                "/v1/leads", json=lead_payload(), headers={**DEV_AUTH, "Idempotency-Key": key}
            )
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    idempotency_keys.update()
                    .where(idempotency_keys.c.key == "old")
                    .values(created_at=utcnow() - timedelta(hours=49))
                )
            purged = await purge_expired(
                engine, idempotency_keys, now=utcnow(), ttl=timedelta(hours=48)
            )
            async with engine.connect() as conn:
                kept = (await conn.execute(sa.select(idempotency_keys.c.key))).scalars().all()
        finally:
            await engine.dispose()
        assert purged == 1 and kept == ["new"]


async def _lead_ids(database_url: str) -> list[sa.Row[tuple[str]]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.select(leads.c.lead_id))).all())
    finally:
        await engine.dispose()
