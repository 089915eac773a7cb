"""Intake's own relay reads keys straight from its store (no HTTP to itself)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.keys import ring
from services.intake.keys.repository import live_keys
from shared.crypto import LeadKey


class StoreKeySource:
    """`shared.keys.KeySource` over intake's database: nothing is cached, so a key
    destroyed by a committed erasure is never used again."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(
        self, lead_ids: Collection[str], *, within: AsyncConnection | None = None
    ) -> dict[str, LeadKey]:
        """`within`: the relay's connection to this database, read in its transaction (a
        connection of the pool's own costs its ping, BEGIN and ROLLBACK per batch)."""
        if within is not None:
            live, _ = await live_keys(within, ring.ring(), lead_ids)
            return live
        async with self._engine.connect() as conn:
            live, _ = await live_keys(conn, ring.ring(), lead_ids)
        return live

    def forget(self, lead_id: str) -> None:
        """Nothing is held here."""
