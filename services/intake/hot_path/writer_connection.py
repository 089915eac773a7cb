"""The group-commit writer's connection: one connection kept across batches.

A pool checkout pings the connection first (with asyncpg three round trips: BEGIN, a
query, ROLLBACK) before the batch's own BEGIN, statements and COMMIT; batches commit one
after another, so the writer keeps one connection instead (as consumers do, see
`shared.held_connection.HeldConnection`). What the ping used to hide is handled here: a kept
connection the server has closed meanwhile (a restart, an idle timeout) fails before its
COMMIT is sent, nothing was committed, and `StaleConnection` tells the writer to run the
batch again on a fresh checkout. A failure once COMMIT was sent is raised marked as a
COMMIT's (`shared.commit_outcome`): the outcome is unknown, so the batch must not be
retried blindly, and its callers are not told that nothing was stored. Any failure drops
the connection; the next transaction checks one out of the pool (and pings it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.commit_outcome import mark_failed_at_commit
from shared.db import is_unavailable

T = TypeVar("T")


class StaleConnection(Exception):
    """The kept connection was unusable and nothing was committed: retry on a fresh one."""


class WriterConnection:
    """Runs one transaction at a time (the caller serializes them), keeping its connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a transaction and commit it; return its result once committed.

        Raises `StaleConnection` (from the driver's error) when a connection kept from an
        earlier transaction turned out to be unusable before COMMIT was sent.
        """
        kept = self._conn is not None
        if self._conn is None:
            self._conn = await self._engine.connect()
        conn = self._conn
        committing = False
        try:
            transaction = await conn.begin()
            result = await work(conn)
            committing = True
            await transaction.commit()
        except BaseException as exc:
            if committing:
                mark_failed_at_commit(exc)
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()  # rolls back; a broken connection is invalidated
            if kept and not committing and isinstance(exc, Exception) and is_unavailable(exc):
                # Named by type only: a driver error's text holds the statement's parameters.
                raise StaleConnection(f"kept connection unusable ({type(exc).__name__})") from exc
            raise
        return result

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
