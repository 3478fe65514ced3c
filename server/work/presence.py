"""Who is in a session's hall: arrivals and departures recorded once across all processes."""

from __future__ import annotations

import logging

from server.auth import Principal
from server.core import Hub
from server.domain.sessions import MACHINES
from server.work.record import generate_record_if_due_safe

log = logging.getLogger(__name__)


async def presence_changed(hub: Hub, session_id: str, p: Principal, joined: bool) -> None:
    """Hall presence of staff is recorded (rule 6 needs a supervisor signed in).

    Connections are counted over all processes (server.realtime.coord): the first one records
    the arrival, the last one to go the departure.
    """
    try:
        if joined:
            count = await hub.coord.joined(session_id, p.role, p.party_id)
        else:
            count = await hub.coord.left(session_id, p.role, p.party_id)
        if (joined and count == 1) or (not joined and count == 0):
            await _record_presence(hub, session_id, p.role, p.party_id, joined)
    except Exception:  # presence must never break a connection
        log.exception("presence update failed for %s", session_id)


async def _record_presence(hub: Hub, session_id: str, role: str, party: str, up: bool) -> None:
    row = await hub.store.load_session(session_id)
    if row is None:
        return
    machine = MACHINES[row.kind]
    if role == "room":  # a room device's link, where the kind has rooms
        command = machine.link(role, party, up)
        if command is not None:
            await hub.service.execute(session_id, command)
        return
    command = machine.join(role, party) if up else machine.leave(role, party)
    await hub.service.execute(session_id, command)


async def reap_presence(hub: Hub) -> None:
    """Record the departures a dead process left behind (several processes only)."""
    for session_id, role, party in await hub.coord.reap():
        try:
            await _record_presence(hub, session_id, role, party, False)
        except Exception:
            log.exception("could not record a departure on %s", session_id)


async def forget_presence(hub: Hub) -> None:
    """After a restart nobody is connected here: presence and room links recorded before are
    cleared, unless another live process still holds a connection of that party. Work a crash
    interrupted (the opening record between confirmation and signature) is picked up again."""
    for row in await hub.store.list_sessions():
        machine = MACHINES[row.kind]
        state = machine.state.model_validate(row.snapshot["state"])
        for role, party in machine.present(state):
            if await hub.coord.total(row.id, role, party) > 0:
                continue
            command = machine.link(role, party, False) if role == "room" else None
            try:
                await hub.service.execute(row.id, command or machine.leave(role, party))
            except Exception:
                log.exception("could not clear presence of %s:%s on %s", role, party, row.id)
        if machine.record_pending(state):
            await generate_record_if_due_safe(hub, row.id)
