"""One database connection kept for a consumer's transactions (see `HeldConnection`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnection:
    """One database connection kept for a consumer's transactions, one batch at a time.

    A pool checkout pings the connection first (on asyncpg three round trips: BEGIN, a
    query, ROLLBACK); batches apply one after another, so their handler keeps one
    connection instead. A transaction that fails drops it, so a connection the database
    closed is replaced when the batch is retried.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the kept connection: committed on exit, rolled back on error."""
        async with self._lock:
            if self._conn is None:
                self._conn = await self._engine.connect()
            conn = self._conn
            try:
                async with conn.begin():
                    yield conn
            except BaseException:
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close()
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()
