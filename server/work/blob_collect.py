"""Uploads that were never settled: a staged bid placed when the log names it, removed when not.

An upload is staged until its event commits (``server.store.blobs``). A process that stops in
between (killed, or its database answer lost) leaves the file staged. At start and then every
``COLLECT_SECONDS`` each process settles ``tmp``: the log decides, never the file's age alone,
so a recorded bid is never removed.
"""

from __future__ import annotations

import asyncio
import logging

from server.core import Hub
from server.store import StoreError

log = logging.getLogger(__name__)

COLLECT_SECONDS = 3600.0
"""Real seconds between two collections."""


async def collect_blobs(hub: Hub) -> dict[str, int]:
    """One collection; what it did, by kind (placed, removed, partial)."""
    done = await hub.blobs.collect(hub.store.names_blob)
    if any(done.values()):
        log.warning("blob collection: %s", done)
    return done


async def blob_collector(hub: Hub) -> None:
    """Collect at start and then every ``COLLECT_SECONDS``; a failed round waits for the next."""
    while True:
        try:
            await collect_blobs(hub)
        except (StoreError, OSError):
            log.exception("blob collection failed; retried in %s s", COLLECT_SECONDS)
        await asyncio.sleep(COLLECT_SECONDS)
