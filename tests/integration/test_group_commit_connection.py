"""The group-commit writer's kept connection on PostgreSQL: one checkout for many batches,
a connection the server closed meanwhile replaced without failing anyone, and a failure
at COMMIT (outcome unknown) answered, never retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.hot_path.group_commit import GroupCommitter
from shared.commit_outcome import outcome_unknown
from shared.db import create_engine

metadata = sa.MetaData()
# No constraints: a batch written twice would show as two rows.
writes = sa.Table("writes", metadata, sa.Column("name", sa.String(50), nullable=False))

# Terminates its own backend while committing: a deferred trigger fires at COMMIT, so the
# client loses the connection after COMMIT was sent and cannot know the outcome.
_DIE_AT_COMMIT = [
    """CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NULL;
    END $$""",
    """CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON writes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.name = 'die at commit')
    EXECUTE FUNCTION die_at_commit()""",
]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for statement in _DIE_AT_COMMIT:
            await conn.exec_driver_sql(statement)
    yield engine
    await engine.dispose()


def checkouts_of(engine: AsyncEngine) -> list[Any]:
    seen: list[Any] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda dbapi, *_: seen.append(dbapi))
    return seen


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(sa.select(writes.c.name))).scalars())


async def terminate(engine: AsyncEngine, pid: int) -> None:
    """Close a backend server-side, as a restart or an idle timeout would, and wait till
    it is gone."""
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
        for _ in range(100):
            await conn.rollback()  # the activity view is read once per transaction
            alive = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            )
            if not alive:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"backend {pid} is still alive")


async def test_a_kept_connection_closed_by_the_server_is_replaced(engine: AsyncEngine) -> None:
    checkouts = checkouts_of(engine)
    committer = GroupCommitter(engine, service="test")
    attempts: list[str] = []

    def insert(name: str) -> Any:
        async def work(conn: AsyncConnection) -> int:
            attempts.append(name)
            await conn.execute(writes.insert().values(name=name))
            return int(await conn.scalar(sa.select(sa.func.pg_backend_pid())) or 0)

        return work

    pids = {await committer.run(insert(f"before {i}")) for i in range(5)}
    assert len(pids) == 1 and len(checkouts) == 1  # one connection, no ping per batch

    # A batch meeting the closed connection before COMMIT runs again on a fresh checkout.
    await terminate(engine, pids.pop())
    checkouts.clear()  # terminate's own
    pid = await committer.run(insert("alone"))
    assert attempts.count("alone") == 2 and len(checkouts) == 1

    # The same when its units write in savepoints (the first SAVEPOINT meets it).
    await terminate(engine, pid)
    checkouts.clear()
    after = [f"after {i}" for i in range(10)]
    await asyncio.gather(*(committer.run(insert(name)) for name in after))
    assert len(checkouts) == 1
    # Every caller was answered, and nothing is missing or written twice.
    assert await names(engine) == sorted([f"before {i}" for i in range(5)] + ["alone"] + after)
    await committer.close()
    assert cast(Any, engine.sync_engine.pool).checkedout() == 0


async def test_a_failure_at_commit_is_answered_not_retried(engine: AsyncEngine) -> None:
    committer = GroupCommitter(engine, service="test")
    attempts: list[str] = []
    gate = asyncio.Event()

    async def hold(conn: AsyncConnection) -> None:
        await gate.wait()  # the two below queue meanwhile, so they commit together

    def insert(name: str) -> Any:
        async def work(conn: AsyncConnection) -> str:
            attempts.append(name)
            await conn.execute(writes.insert().values(name=name))
            return name

        return work

    await committer.run(insert("first"))  # the connection is a kept one from here on
    first = asyncio.ensure_future(committer.run(hold))
    await asyncio.sleep(0.05)
    batch = asyncio.gather(
        committer.run(insert("die at commit")),
        committer.run(insert("neighbour")),
        return_exceptions=True,
    )
    await asyncio.sleep(0.05)
    gate.set()
    await first
    outcome = await batch
    # Both callers learn the database failed during the COMMIT (intake answers 503, the
    # outcome unknown), and the batch whose COMMIT was sent was not written again.
    assert all(isinstance(r, Exception) and outcome_unknown(r) for r in outcome), outcome
    assert attempts == ["first", "die at commit", "neighbour"]
    assert await names(engine) == ["first"]  # this server aborted it before committing

    # The next batch gets a fresh connection.
    assert await committer.run(insert("later")) == "later"
    assert await names(engine) == ["first", "later"]
    await committer.close()
