"""Group commit: many requests' units of work share one transaction and one durable commit.

Each unit runs in its own SAVEPOINT, so one unit's failure (a validation error, a
conflict) rolls back only its own writes; the batch commits once and every caller is
answered after that commit, so an acknowledgement still means "stored". Batches form
naturally: whatever queued while the previous batch was committing goes together, so a
lone request waits for no timer. One writer per process keeps intake's advisory locks
from deadlocking against each other; a deadlock against another replica retries the batch.
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

from shared.db import is_unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]

BATCH_SIZE = Histogram(
    "leadflow_group_commit_batch_size", "Units of work committed together", ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)  # fmt: skip
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


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        service: str,
        max_batch: int = 200,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._service = service
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a shared transaction; return its result once that is committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._writer(), name=f"{self._service}-group-commit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._idle.clear()
        self._pending.set()
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop; callers still waiting after that are failed."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(RuntimeError("shutting down"))

    async def _writer(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))
                ]
                # A caller that gave up (client disconnected) is not worth a savepoint.
                batch = [(w, f) for w, f in batch if not f.done()]
                if batch:
                    await self._commit(batch)
            self._idle.set()

    async def _commit(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        for attempt in range(3):
            outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                async with self._engine.begin() as conn:
                    for work, future in batch:
                        try:
                            async with conn.begin_nested():
                                outcomes.append((future, await work(conn), None))
                        except Exception as exc:
                            if is_unavailable(exc) or _retryable(exc):
                                raise  # the transaction itself is gone: the batch fails
                            outcomes.append((future, None, exc))
            except Exception as exc:
                if _retryable(exc) and attempt < 2:
                    log.info("%s group commit: %s; retrying the batch", self._service, exc)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            BATCH_SIZE.labels(self._service).observe(len(batch))
            for future, result, error in outcomes:
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            if self._on_commit is not None:
                self._on_commit()
            return
