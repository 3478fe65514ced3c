"""Background tasks of the realtime services: one way to stop them."""

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
