"""Downtime fairness (rule 8): when the platform was down, the windows it ate are given back.

Every server process writes a heartbeat to the store (``BEAT_SECONDS`` apart) and a clean stop
when it stops. At start, before the scheduler may fire anything, a process looks at them:

- with no other process serving, the platform was down from the last sign of life of any
  process (its last heartbeat, or its clean stop) until now: an outage;
- with Redis (several processes behind one address), another process whose heartbeat is recent
  (within ``LIVE_SECONDS``) was serving all along: no outage. A process that died less than
  ``LIVE_SECONDS`` before this one started still looks alive, so in such a deployment an outage
  of the whole platform shorter than that is not counted.

An outage is told to every session (``Machine.outage``); the machine decides what it means (the
opening extends an open decryption or confirmation window by it and records a platform
incident, so a missed decryption is withdrawn, never revoked). Heartbeats are in clock time, so
the demo's fast clock measures the outage on its own time line.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from server.core import Hub
from server.domain.errors import Refusal
from server.domain.sessions import MACHINES

log = logging.getLogger(__name__)

BEAT_SECONDS = 2.0
"""Real seconds between two heartbeats of a process."""
LIVE_SECONDS = 6.0
"""Real seconds after its last heartbeat that another process still counts as serving."""


async def find_outage(hub: Hub) -> tuple[datetime, datetime] | None:
    """The platform's outage that ended with this start, as (down_from, down_until), or None."""
    now = hub.clock.now()
    rows = await hub.store.heartbeats()
    if not rows:
        return None  # a new installation: nothing was running before
    if hub.settings.redis_url:
        live = timedelta(seconds=LIVE_SECONDS * hub.clock.rate)
        for instance, beat_at, stopped_at in rows:
            if instance != hub.settings.instance and stopped_at is None and now - beat_at <= live:
                return None  # another process was serving
    last_seen = max(stopped_at or beat_at for _, beat_at, stopped_at in rows)
    return (last_seen, now) if last_seen < now else None


async def recover_from_outage(hub: Hub) -> None:
    """At start: tell every session about the outage that just ended (if any), then beat."""
    found = await find_outage(hub)
    if found is not None:
        down_from, down_until = found
        log.warning("platform outage from %s until %s", down_from, down_until)
        for row in await hub.store.list_sessions():
            command = MACHINES[row.kind].outage(down_from, down_until)
            if command is None:
                continue
            try:
                await hub.service.execute(row.id, command)
            except Refusal:
                continue  # no window open in this session: nothing to give back
            except Exception:
                log.exception("could not record the outage on %s", row.id)
    # Processes not seen for a day are gone for good; their rows have said what they knew.
    await hub.store.forget_heartbeats(hub.clock.now() - timedelta(days=1))
    await hub.store.beat(hub.settings.instance, hub.clock.now())


async def heartbeat(hub: Hub) -> None:
    """Beat every ``BEAT_SECONDS`` real seconds until cancelled; a store error skips a beat."""
    while True:
        await asyncio.sleep(BEAT_SECONDS)
        try:
            await hub.store.beat(hub.settings.instance, hub.clock.now())
        except Exception:
            log.warning("heartbeat not written", exc_info=True)


async def stopped_cleanly(hub: Hub) -> None:
    """The clean stop: the next start counts the outage from now."""
    try:
        await hub.store.stopped(hub.settings.instance, hub.clock.now())
    except Exception:
        log.warning("clean stop not written", exc_info=True)
