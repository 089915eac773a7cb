"""Group commit: many requests' units of work share one transaction and one durable commit.

A unit is either a piece of work of its own, run in a SAVEPOINT so its failure (a
validation error, a conflict) rolls back only its own writes, or an item for a batch
handler: all items queued for one handler are written by one call of it (multi-row
statements instead of a few statements per item), inside one savepoint. The batch
commits once and every caller is answered after that commit, so an acknowledgement still
means "stored". Batches form naturally: whatever queued while the previous batch was
committing goes together, so a lone request waits for no timer.

Several writers may commit batches at once (`writers`), each on a
connection of its own kept across batches (`writer_connection`): with one, the
process sat idle while its batch was in the database (its statements and the commit's
WAL flush), as every request then waited for that batch. Concurrent batches are as safe
as batches of separate replicas: each group takes its locks in one sorted statement, and
a deadlock between a batch's groups and another batch's (two idempotent requests for the
same person, say) is detected by PostgreSQL and retries the batch. A connection a writer
finds closed retries the batch on a fresh one, while a failure once COMMIT was sent fails
the batch: its outcome is unknown, and every caller gets the error marked so
(`shared.commit_outcome.outcome_unknown`), never an answer that nothing was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.hot_path.writer_connection import StaleConnection, WriterConnection
from shared.db import is_unavailable
from shared.runtime import Runtime, WriteBatch

log = logging.getLogger(__name__)
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a batch
R = TypeVar("R")

BATCH_SIZE = Histogram(
    "leadflow_group_commit_batch_size",
    "Units of work committed together",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
_RETRY_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


def _retryable(exc: BaseException) -> bool:
    current: BaseException | None = exc
    while current is not None:
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code in _RETRY_SQLSTATES:
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


class _Unit:
    """One caller's share of a batch: its own work, or an item for a batch handler."""

    __slots__ = ("future", "handler", "item")

    def __init__(self, handler: WriteBatch[Any, Any] | None, item: Any) -> None:
        self.handler = handler
        self.item = item
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        service: str,
        max_batch: int = 200,
        on_commit: Callable[[], None] | None = None,
        writers: int = 1,
    ) -> None:
        if writers < 1:
            raise ValueError("a group committer needs at least one writer")
        self._conns = [WriterConnection(engine) for _ in range(writers)]
        self._tasks: list[asyncio.Task[None] | None] = [None] * writers
        self._busy = 0  # writers with a batch under way
        self._service = service
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: deque[_Unit] = deque()
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a shared transaction; return its result once that is committed."""
        result: T = await self._submit(_Unit(None, work))
        return result

    async def run_batched(self, handler: WriteBatch[I, R], item: I) -> R:
        """Have `handler` write `item` with the other items queued for it; return the
        item's result once the shared transaction is committed."""
        result: R = await self._submit(_Unit(handler, item))
        return result

    async def _submit(self, unit: _Unit) -> Any:
        for i, task in enumerate(self._tasks):
            if task is None or task.done():
                self._tasks[i] = asyncio.create_task(
                    self._writer(self._conns[i]), name=f"{self._service}-group-commit-{i}"
                )
        self._queue.append(unit)
        self._idle.clear()
        self._pending.set()
        return await unit.future

    async def close(self) -> None:
        """Commit what is queued, then stop; callers still waiting after that are failed."""
        running = [t for t in self._tasks if t is not None and not t.done()]
        if running:
            await self._idle.wait()
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            unit = self._queue.popleft()
            if not unit.future.done():
                unit.future.set_exception(RuntimeError("shutting down"))
        for conn in self._conns:
            await conn.close()

    async def _writer(self, conn: WriterConnection) -> None:
        while True:
            if not self._queue:
                # `_pending` is set while anything is queued; a writer woken after another
                # took everything just waits again.
                self._pending.clear()
                if not self._busy:
                    self._idle.set()
                await self._pending.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            # A caller that gave up (client disconnected) is not worth writing.
            batch = [u for u in batch if not u.future.done()]
            if not batch:
                continue
            self._busy += 1
            try:
                await self._commit(conn, batch)
            finally:
                self._busy -= 1

    async def _commit(self, conn: WriterConnection, batch: list[_Unit]) -> None:
        groups = _groups(batch)

        async def write(db: AsyncConnection) -> list[tuple[_Unit, Any, BaseException | None]]:
            outcomes: list[tuple[_Unit, Any, BaseException | None]] = []
            for group in groups:
                outcomes += await self._write_group(db, group, alone=len(groups) == 1)
            return outcomes

        attempt = 0
        while True:
            try:
                outcomes = await conn.transaction(write)
            except StaleConnection as exc:
                # Nothing was committed, and the next try checks a connection out (and
                # pings it), so this cannot repeat: not one of the deadlock retries.
                log.info("%s group commit: %s; retrying the batch", self._service, exc)
                continue
            except Exception as exc:
                if _retryable(exc) and attempt < 2:
                    attempt += 1
                    # No error text: it holds the statement's parameters (people's data).
                    log.info(
                        "%s group commit: %s (deadlock or serialization failure); retrying "
                        "the batch",
                        self._service,
                        type(exc).__name__,
                    )
                    continue
                for unit in batch:
                    if not unit.future.done():
                        unit.future.set_exception(exc)
                return
            BATCH_SIZE.labels(self._service).observe(len(batch))
            for unit, result, error in outcomes:
                if unit.future.done():
                    continue
                if error is not None:
                    unit.future.set_exception(error)
                else:
                    unit.future.set_result(result)
            if self._on_commit is not None:
                self._on_commit()
            return

    async def _write_group(
        self, conn: AsyncConnection, group: list[_Unit], *, alone: bool
    ) -> list[tuple[_Unit, Any, BaseException | None]]:
        handler = group[0].handler
        try:
            # Alone in the transaction, a group needs no savepoint: its failure is the batch's.
            async with contextlib.nullcontext() if alone else conn.begin_nested():
                if handler is None:
                    return [(group[0], await group[0].item(conn), None)]
                results = await handler(conn, [u.item for u in group])
        except Exception as exc:
            if is_unavailable(exc) or _retryable(exc):
                raise  # the transaction itself is gone: the batch fails
            if alone:
                raise
            return [(u, None, exc) for u in group]
        if len(results) != len(group):
            raise RuntimeError(f"batch handler answered {len(results)} of {len(group)} items")
        return [
            (u, None, r) if isinstance(r, Exception) else (u, r, None)
            for u, r in zip(group, results, strict=True)
        ]


def _groups(batch: list[_Unit]) -> list[list[_Unit]]:
    """Each own-work unit alone; the items of one handler together, where the first came."""
    groups: list[list[_Unit]] = []
    by_handler: dict[Any, list[_Unit]] = {}
    for unit in batch:
        if unit.handler is None:
            groups.append([unit])
        elif unit.handler in by_handler:
            by_handler[unit.handler].append(unit)
        else:
            by_handler[unit.handler] = [unit]
            groups.append(by_handler[unit.handler])
    return groups


def group_commit(writers: int) -> Callable[[Runtime], GroupCommitter]:
    """The runtime's write strategy (`Runtime(write_strategy=...)`): `writers` group
    committers on its engine, waking its relay after each commit."""

    def strategy(runtime: Runtime) -> GroupCommitter:
        return GroupCommitter(
            runtime.engine, service=runtime.name, on_commit=runtime.wake_relay, writers=writers
        )

    return strategy
