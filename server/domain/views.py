"""What each party may see of an opening session (rule 4), as plain data for the API and pages."""

from __future__ import annotations

from typing import Any

from server.domain.opening import BEFORE_DEADLINE, STAFF_ROLES, OpeningState


def view_for(state: OpeningState, role: str, party_id: str) -> dict[str, Any]:
    """The session as ``role``/``party_id`` may see it.

    Before the deadline nobody, host and supervisor included, learns whether anyone bid; before
    the table is published a bidder learns nothing about another bidder.
    """
    before_deadline = state.status in BEFORE_DEADLINE or (
        state.status == "suspended" and state.suspended_from in BEFORE_DEADLINE
    )
    view: dict[str, Any] = {
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "title": state.title,
        "status": state.status,
        "suspended_from": state.suspended_from,
        "timetable": state.timetable.model_dump(
            mode="json",
            include={
                "sign_in_opens",
                "deadline",
                "decrypt_minutes",
                "confirm_minutes",
                "min_bids",
                "table_fields",
            },
        ),
        "decrypt_closes_at": _iso(state.decrypt_closes_at),
        "confirm_closes_at": _iso(state.confirm_closes_at),
        "table": state.table,
        "table_sha256": state.table_sha256,
        "record_sha256": state.record_sha256,
        "record_signatures": sorted(state.record_signatures),
        "backup_configured": state.timetable.backup is not None,
    }
    if role == "bidder":
        bid = state.bids.get(party_id)
        view["own_bid"] = bid.model_dump(mode="json") if bid else None
        view["signed_in"] = party_id in state.signed_in
        view["objections"] = [
            o.model_dump() for o in state.objections if o.public or o.bidder == party_id
        ]
    elif role in STAFF_ROLES:
        view["supervisors_present"] = state.supervisors_present
        view["present"] = dict(state.present)
        view["objections"] = [o.model_dump() for o in state.objections]
        view["incidents"] = [i.model_dump() for i in state.incidents]
        if not before_deadline:
            view["bids"] = [
                {
                    "bidder": b.bidder,
                    "bidder_name": b.bidder_name,
                    "status": b.status,
                    "attempts": len(b.attempts),
                    "security": b.security.model_dump() if b.security else None,
                    "confirmation": b.confirmation,
                }
                for b in sorted(state.live_bids(), key=lambda b: b.received_at)
            ]
            view["signed_in_count"] = len(state.signed_in)
            view["backup_requests"] = [r.model_dump() for r in state.backup_requests.values()]
    return view


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
