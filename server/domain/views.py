"""What each party may see of an opening session (rule 4), as plain data for the API and pages."""

from __future__ import annotations

from typing import Any

from server.domain import scoring as SC
from server.domain.evaluation_model import BidEntry, EvaluationState
from server.domain.opening_model import BEFORE_DEADLINE, STAFF_ROLES, OpeningState


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


def evaluation_view(state: EvaluationState, role: str, party_id: str) -> dict[str, Any]:
    """The evaluation as ``role``/``party_id`` may see it.

    两随机四不知: which experts and which rooms were drawn stays with the supervisor until each
    member signs in; the host sees counts. Score sheets are served by their own route (an
    expert sees the others' only after submitting).
    """
    signed_in = [m for m in state.committee() if m.status == "signed_in"]
    view: dict[str, Any] = {
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "opening_session_id": state.opening_session_id,
        "title": state.title,
        "status": state.status,
        "suspended_from": state.suspended_from,
        "suspended_at": _iso(state.suspended_at),
        "void_reason": state.void_reason,
        "timetable": state.timetable.model_dump(mode="json"),
        "method": state.config.method.method,
        "stage": state.stage,
        "stages": state.stages(),
        "scored_stages": sorted(SC.method_stages(state.config.method).scored),
        "chair": state.chair,
        "committee_size": len(state.committee()),
        "signed_in": [
            {"id": m.id, "name": m.name, "kind": m.kind, "room_id": m.room_id, "late": m.late}
            for m in sorted(signed_in, key=lambda m: m.id)
        ],
        "draw": None
        if state.draw is None
        else {
            "commitment": state.draw.commitment,
            "entropy": sorted(state.draw.entropy),
            "seed": state.draw.seed,
            "pool_sha256": state.draw.pool_sha256,
        },
        "submitted": {
            stage: sorted(k for k in sheets if k not in state.reopened.get(stage, []))
            for stage, sheets in state.sheets.items()
        },
        "outcomes": state.outcomes,
        "rescores": state.rescores,
        "ranking": state.ranking,
        "report_sha256": state.report_sha256,
        "report_signed": sorted(state.report_signatures),
        "warnings": state.warnings,
        "supervisors_present": state.supervisors_present,
        "rooms_drawn": len(state.rooms),
        "rooms_up": sum(1 for r in state.rooms.values() if r.get("up")),
        "segments": state.segments,
    }
    if role in ("expert", "supervisor", "host", "centre"):
        view["bids"] = [b.model_dump(mode="json") for b in sorted(state.bids.values(), key=_bidder)]
    if role == "supervisor":
        view["members"] = [m.model_dump(mode="json") for m in state.members.values()]
        view["rooms"] = state.rooms
        view["draw_result"] = state.draw.result if state.draw else None
    if role == "room":
        view["room"] = state.rooms.get(party_id)
    return view


def _bidder(b: BidEntry) -> str:
    return b.bidder
