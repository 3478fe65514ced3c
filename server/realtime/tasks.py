"""Background tasks (the realtime services', the scheduler's, the trust reloader's): how to stop them."""

from __future__ import annotations

import asyncio
import contextlib


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks``, wait for each to end (whatever it raised), and forget them."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (None: nothing runs) and wait for it to end; an error other than its
    cancellation propagates."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
