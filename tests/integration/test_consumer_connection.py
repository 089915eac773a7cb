"""The connection a consumer keeps for its batches: one checkout, replaced after a failure."""

from __future__ import annotations

from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from services.qualifier.tables import metadata, round_robin
from shared.db import create_engine
from shared.held_connection import HeldConnection


async def test_batches_share_one_connection_and_a_failure_replaces_it(database_url: str) -> None:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    checkouts: list[Any] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda dbapi, *_: checkouts.append(dbapi))
    held = HeldConnection(engine)

    for i in range(3):
        async with held.begin() as conn:
            await conn.execute(round_robin.insert().values(team=f"t{i}", next_index=i))
    assert len(checkouts) == 1  # no checkout (and no ping) per batch

    with pytest.raises(RuntimeError):
        async with held.begin() as conn:
            await conn.execute(round_robin.insert().values(team="rolled-back", next_index=0))
            raise RuntimeError("the handler failed")
    async with held.begin() as conn:
        teams = set((await conn.execute(sa.select(round_robin.c.team))).scalars())
    assert teams == {"t0", "t1", "t2"}  # the failed batch wrote nothing
    assert len(checkouts) == 2  # and its connection was not trusted again

    await held.close()
    assert cast(Any, engine.sync_engine.pool).checkedout() == 0
    await engine.dispose()
