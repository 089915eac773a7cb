"""Group commit on a real database: shared commits, isolated failures, answers after commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.hot_path.group_commit import GroupCommitter
from shared.db import create_engine

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
)


class Refused(Exception):
    pass


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database holding the `items` table."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def stored_ids(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(items.c.id))).scalars())


async def test_units_share_commits_and_fail_alone(engine: AsyncEngine) -> None:
    commits = 0

    def on_commit() -> None:
        nonlocal commits
        commits += 1

    committer = GroupCommitter(engine, service="test", on_commit=on_commit)

    def insert(i: int) -> object:
        async def work(conn: AsyncConnection) -> int:
            await conn.execute(items.insert().values(id=i, name=f"n{i}"))
            if i % 10 == 0:
                raise Refused(f"unit {i} says no after writing")
            return i

        return work

    results = await asyncio.gather(
        *(committer.run(insert(i)) for i in range(1, 201)),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Refused)]
    assert len(refused) == 20
    assert sorted(r for r in results if isinstance(r, int)) == [i for i in range(1, 201) if i % 10]
    assert commits < 50, "units were not grouped"
    ids = await stored_ids(engine)
    # The refused units' own writes were rolled back; their neighbours' were kept.
    assert ids == {i for i in range(1, 201) if i % 10}

    # A unit that breaks a constraint fails alone too.
    async def duplicate(conn: AsyncConnection) -> None:
        await conn.execute(items.insert().values(id=999, name="n1"))

    async def fine(conn: AsyncConnection) -> str:
        await conn.execute(items.insert().values(id=1000, name="n1000"))
        return "ok"

    outcome = await asyncio.gather(
        committer.run(duplicate), committer.run(fine), return_exceptions=True
    )
    assert isinstance(outcome[0], sa.exc.IntegrityError) and outcome[1] == "ok"
    await committer.close()


async def test_a_database_outage_fails_every_waiting_unit() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    committer = GroupCommitter(engine, service="test")

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT 1"))

    results = await asyncio.gather(*(committer.run(work) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, OSError | sa.exc.SQLAlchemyError) for r in results), results
    await committer.close()
    await engine.dispose()


async def test_batch_handlers_write_many_callers_items_at_once(engine: AsyncEngine) -> None:
    committer = GroupCommitter(engine, service="test")
    calls: list[int] = []

    async def write(conn: AsyncConnection, batch: Sequence[int]) -> list[str | Exception]:
        calls.append(len(batch))
        keep = [i for i in batch if i % 7]
        await conn.execute(items.insert(), [{"id": i, "name": f"b{i}"} for i in keep])
        # An item may fail alone when it wrote nothing.
        return [f"stored {i}" if i % 7 else Refused(f"{i} refused") for i in batch]

    results = await asyncio.gather(
        *(committer.run_batched(write, i) for i in range(1, 301)), return_exceptions=True
    )
    assert [r for r in results if isinstance(r, str)] == [
        f"stored {i}" for i in range(1, 301) if i % 7
    ]
    assert [str(r) for r in results if isinstance(r, Refused)] == [
        f"{i} refused" for i in range(1, 301) if i % 7 == 0
    ]
    assert sum(calls) == 300 and len(calls) < 30, calls
    ids = await stored_ids(engine)
    assert ids == {i for i in range(1, 301) if i % 7}
    await committer.close()


async def test_a_failing_batch_handler_fails_only_its_own_items(engine: AsyncEngine) -> None:
    committer = GroupCommitter(engine, service="test")

    async def broken(conn: AsyncConnection, batch: Sequence[int]) -> list[int]:
        await conn.execute(items.insert(), [{"id": i, "name": f"x{i}"} for i in batch])
        raise Refused("the whole batch is refused after writing")

    async def fine(conn: AsyncConnection) -> str:
        await conn.execute(items.insert().values(id=1000, name="fine"))
        return "ok"

    gate = asyncio.Event()

    async def hold(conn: AsyncConnection) -> None:
        await gate.wait()  # queue the rest behind this batch, so they commit together

    first = asyncio.ensure_future(committer.run(hold))
    await asyncio.sleep(0.05)
    rest = asyncio.gather(
        committer.run_batched(broken, 1),
        committer.run(fine),
        committer.run_batched(broken, 2),
        return_exceptions=True,
    )
    await asyncio.sleep(0.05)
    gate.set()
    await first
    outcome = await rest
    assert isinstance(outcome[0], Refused) and isinstance(outcome[2], Refused)
    assert outcome[1] == "ok"
    ids = await stored_ids(engine)
    assert ids == {1000}, "the broken handler's writes were rolled back, the neighbour's kept"
    await committer.close()


def _unit(
    item_id: int,
    *,
    lock: int | None = None,
    locked: asyncio.Event | None = None,
    then: asyncio.Event | None = None,
    runs: list[int] | None = None,
) -> Callable[[AsyncConnection], Awaitable[int]]:
    """Work storing item `item_id`: first taking advisory lock `lock` (and saying so with
    `locked`), then waiting for `then`; each run noted in `runs`."""

    async def work(conn: AsyncConnection) -> int:
        if runs is not None:
            runs.append(item_id)
        if lock is not None:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
            if locked is not None:
                locked.set()
        if then is not None:
            await then.wait()
        await conn.execute(items.insert().values(id=item_id, name=f"i{item_id}"))
        return item_id

    return work


async def test_two_writers_commit_a_batch_while_another_is_in_the_database(
    engine: AsyncEngine,
) -> None:
    committer = GroupCommitter(engine, service="test", writers=2)
    started, release = asyncio.Event(), asyncio.Event()
    slow = asyncio.ensure_future(committer.run(_unit(1, lock=1, locked=started, then=release)))
    await asyncio.wait_for(started.wait(), 5)
    # The first batch is still in its transaction; the second writer commits this one.
    assert await asyncio.wait_for(committer.run(_unit(2)), 5) == 2
    assert await stored_ids(engine) == {2}
    assert not slow.done()
    closing = asyncio.ensure_future(committer.close())
    await asyncio.sleep(0.1)
    assert not closing.done(), "close waits for the batch still under way"
    release.set()
    assert await slow == 1
    await closing
    assert await stored_ids(engine) == {1, 2}


async def test_one_writer_commits_one_batch_at_a_time(engine: AsyncEngine) -> None:
    committer = GroupCommitter(engine, service="test", writers=1)
    release = asyncio.Event()
    slow = asyncio.ensure_future(committer.run(_unit(1, then=release)))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(committer.run(_unit(2)))
    await asyncio.sleep(0.2)
    assert not second.done(), "queued behind the batch under way"
    release.set()
    assert (await slow, await second) == (1, 2)
    await committer.close()


async def test_a_deadlock_between_two_writers_batches_is_retried(engine: AsyncEngine) -> None:
    """Batch A locks 1 then 2, batch B 2 then 1 (each group's locks are sorted, but a
    batch of several groups takes them group by group): PostgreSQL aborts one, which is
    run again once the other has committed. Every caller gets its answer."""
    committer = GroupCommitter(engine, service="test", writers=2)
    a_holds_1, b_holds_2 = asyncio.Event(), asyncio.Event()
    runs: list[int] = []
    batch_a = asyncio.gather(
        committer.run(_unit(11, lock=1, locked=a_holds_1, then=b_holds_2, runs=runs)),
        committer.run(_unit(12, lock=2, runs=runs)),
    )
    await asyncio.wait_for(a_holds_1.wait(), 5)
    batch_b = asyncio.gather(
        committer.run(_unit(21, lock=2, locked=b_holds_2, runs=runs)),
        committer.run(_unit(22, lock=1, runs=runs)),
    )
    results = await asyncio.wait_for(asyncio.gather(batch_a, batch_b), 30)
    assert results == [[11, 12], [21, 22]]
    # One batch was aborted by the deadlock and ran again: its units ran twice.
    assert sorted(runs) in ([11, 11, 12, 12, 21, 22], [11, 12, 21, 21, 22, 22]), runs
    assert await stored_ids(engine) == {11, 12, 21, 22}
    await committer.close()
