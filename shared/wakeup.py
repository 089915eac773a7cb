"""Background jobs' naps: until woken, shut down, or the time is up, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib


async def nap(wakeup: asyncio.Event, stopping: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(wakeup.wait()), asyncio.create_task(stopping.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
