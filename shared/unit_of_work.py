"""The unit of work of an HTTP request: one transaction, committed before the answer is sent.

An endpoint takes `conn: UnitOfWork` and writes through it; it never begins or commits:

    @router.post("/v1/things")
    async def create(body: ThingIn, _: Writer, conn: UnitOfWork) -> ThingOut:
        return await service.create(conn, body)

The transaction commits once the endpoint returned and its answer is built, and before a
byte of that answer is sent: nothing acknowledged to a client is ever lost. A failed COMMIT
(or BEGIN) reaches `shared.web`'s handlers, which answer 503 saying whether anything may
have been stored, never the endpoint's 200. Anything the endpoint raises, an HTTPException
included, rolls the transaction back: an answer that must keep its writes is returned, not
raised. After the commit the runtime wakes the outbox relay (and its `wake_after_commit`
hooks), so the events written publish at once.

FastAPI resolves dependencies in parameter order: declare `UnitOfWork` after the ones that
authorize the caller, so a refused request never takes a pooled connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from shared.runtime import Runtime


async def unit_of_work(request: Request) -> AsyncIterator[AsyncConnection]:
    """The request's transaction on the service's engine; committed, then the relay woken."""
    runtime: Runtime = request.app.state.runtime
    async with runtime.engine.begin() as conn:
        yield conn
    runtime.committed()


# scope="function": FastAPI runs the exit (the COMMIT) before it sends the response; by
# default (FastAPI 0.118 on) a dependency with yield exits after the response was sent.
UnitOfWork = Annotated[AsyncConnection, Depends(unit_of_work, scope="function")]
