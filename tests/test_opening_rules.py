"""The 13 opening rules of DESIGN.md section 5 as specifications of ``server.domain.opening``.

Pure: no server, no database, no clock. A :class:`Hall` holds one session's state and drives it
with ``decide`` + ``evolve`` at instants the test chooses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.canonical import canonical_json
from schemas.events import NewEvent
from schemas.time import iso
from server.domain import errors as E
from server.domain.errors import Refusal
from server.domain.opening import (
    COMMANDS,
    FAILURE_CAUSE,
    MACHINE,
    MAX_VERSIONS,
    SERVER,
    Actor,
    ApproveBackup,
    BackupConfig,
    Command,
    Confirm,
    DecryptionResult,
    Extend,
    GenerateRecord,
    Join,
    Leave,
    Object,
    OpenConfirmation,
    OpenDecryption,
    OpeningState,
    Origin,
    PlatformOutage,
    Publish,
    RaiseSignals,
    RecordIncident,
    Rehearse,
    Reply,
    RequestBackup,
    Resume,
    Retract,
    Security,
    SetSecurity,
    SignIn,
    SignRecord,
    Start,
    SubmitKey,
    Suspend,
    Tick,
    Timetable,
    Upload,
    bidder_tag,
    build_record,
    build_table,
    check_recipient,
    decide,
    deposit_security,
    evolve,
    failure_cause,
    may_upload,
    new_session,
    next_due,
    record_due,
    record_text,
    sha256_json,
    viewer_tags,
)
from server.domain.sessions import MACHINES
from tests.support.rules import as_record, types

T0 = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)  # 09:00 Asia/Shanghai
SIGN_IN = T0 + timedelta(minutes=10)
UPLOAD = T0 + timedelta(minutes=20)
DEADLINE = T0 + timedelta(hours=1)
START = DEADLINE + timedelta(minutes=1)
DEC_OPEN = DEADLINE + timedelta(minutes=2)
DEC_CLOSE = DEC_OPEN + timedelta(minutes=30)
CONF_OPEN = DEC_CLOSE + timedelta(minutes=1)
CONF_CLOSE = CONF_OPEN + timedelta(minutes=30)
US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)

A = "91350100MA31AAAAXA"
B = "91320000MA02BBBBXB"
C = "91440300MA03CCCCXC"
D = "91110000MA04DDDDXD"
F = "91330000MA05FFFFXF"
CODES = (A, B, C, D, F)
NAMES = {
    A: "闽甲建设有限公司",
    B: "苏乙工程有限公司",
    C: "粤丙集团有限公司",
    D: "京丁公司",
    F: "浙戊公司",
}

HOST = Actor(role="host", id="host-1")
SUP = Actor(role="supervisor", id="sup-1")
CENTRE = Actor(role="centre", id="centre-1")
STAFF_ACTORS = (HOST, SUP, CENTRE)


def bidder(code: str) -> Actor:
    return Actor(role="bidder", id=code)


def timetable(**changes: Any) -> Timetable:
    fields: dict[str, Any] = {"sign_in_opens": SIGN_IN, "deadline": DEADLINE}
    fields.update(changes)
    return Timetable(**fields)


def envelope_hash(code: str, version: int = 1) -> str:
    return hashlib.sha256(f"{code}/{version}".encode()).hexdigest()


def upload(code: str, at: datetime, version: int = 1) -> Upload:
    sha = envelope_hash(code, version)
    receipt = {
        "envelope_sha256": sha,
        "size": 1000 + version,
        "lot_id": "P-2026-001/L1",
        "bidder": code,
        "bidder_name": NAMES.get(code, code),  # the server writes the registered name here
        "received_at": iso(at),
        "receipt_id": f"R-{code}-{version}",
    }
    return Upload(
        actor=bidder(code),
        envelope_sha256=sha,
        size=1000 + version,
        receipt=receipt,
        receipt_signature=f"sig-{code}-{version}",
    )


def summary(code: str, price_fen: int = 123_456_78) -> dict[str, Any]:
    return {
        "bidder_name": NAMES[code],
        "price_fen": price_fen,
        "duration_days": 180,
        "quality": "合格",
        "project_manager": "张工",
        "extra_fields": {"safety_licence": f"(闽)JZ安许证字[2026]{code[-2:]}", "ignored": 1},
    }


def decrypted(code: str, at: datetime) -> DecryptionResult:
    return DecryptionResult(
        actor=SERVER,
        bidder=code,
        submitted_at=at,
        ok=True,
        summary=summary(code),
        cek_sha256="0" * 64,
    )


def failed(
    code: str, at: datetime, cause: Literal["bidder", "platform"] = "bidder"
) -> DecryptionResult:
    return DecryptionResult(
        actor=SERVER,
        bidder=code,
        submitted_at=at,
        ok=False,
        code="KEY_UNWRAP_FAILED",
        cause=cause,
        message="wrong key",
    )


def names_a_bidder(event: NewEvent, codes: Iterable[str] = CODES) -> set[str]:
    text = canonical_json({"actor": event.actor, "payload": event.payload}).decode()
    return {code for code in codes if code in text}


class Hall:
    """One opening session driven through ``decide`` and ``evolve``; keeps the event log."""

    def __init__(self, tt: Timetable | None = None) -> None:
        self.state = new_session("s-1", "P-2026-001/L1", tt or timetable(), title="某某道路工程")
        self.log: list[tuple[NewEvent, datetime]] = []

    def run(self, cmd: Command, at: datetime) -> list[NewEvent]:
        events = decide(self.state, cmd, at)
        for event in events:
            self.state = evolve(self.state, event, at)
            self.log.append((event, at))
        return events

    def refused(self, cmd: Command, at: datetime, refusal: type[Refusal]) -> Refusal:
        """Assert ``cmd`` is refused with exactly ``refusal`` and leaves the state as it was."""
        before = self.state.model_copy(deep=True)
        dump = self.state.model_dump()
        with pytest.raises(Refusal) as info:
            decide(self.state, cmd, at)
        assert type(info.value) is refusal, info.value
        assert self.state == before
        assert self.state.model_dump() == dump
        return info.value

    @property
    def status(self) -> str:
        return self.state.status

    def seen_by(self, actor: Actor) -> list[NewEvent]:
        tags = viewer_tags(actor.role, actor.id)
        return [
            e for seq, (e, at) in enumerate(self.log, 1) if as_record(e, seq, at).visible_to(tags)
        ]

    # --- getting to a phase ---

    def to_sign_in(self) -> Hall:
        self.run(Publish(actor=HOST), T0)
        self.run(Tick(actor=SERVER), SIGN_IN)
        assert self.status == "sign_in"
        return self

    def to_sealed(self, codes: Iterable[str] = (A, B, C)) -> Hall:
        self.to_sign_in()
        for i, code in enumerate(codes):
            self.run(upload(code, UPLOAD + i * SECOND), UPLOAD + i * SECOND)
        self.run(Tick(actor=SERVER), DEADLINE)
        assert self.status == "sealed"
        return self

    def to_opening(self, codes: Iterable[str] = (A, B, C)) -> Hall:
        self.to_sealed(codes)
        self.run(Join(actor=SUP), START)
        self.run(Start(actor=HOST), START)
        assert self.status == "opening"
        return self

    def to_decrypting(self, codes: Iterable[str] = (A, B, C)) -> Hall:
        self.to_opening(codes)
        self.run(OpenDecryption(actor=HOST), DEC_OPEN)
        assert self.state.decrypt_closes_at == DEC_CLOSE
        return self

    def to_announcing(self, codes: Iterable[str] = (A, B, C)) -> Hall:
        codes = tuple(codes)
        self.to_decrypting(codes)
        for code in codes:
            self.run(decrypted(code, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
        self.run(Tick(actor=SERVER), DEC_CLOSE)
        assert self.status == "announcing"
        return self

    def to_confirming(self, codes: Iterable[str] = (A, B, C)) -> Hall:
        self.to_announcing(codes)
        self.run(OpenConfirmation(actor=HOST), CONF_OPEN)
        assert self.status == "confirming"
        return self


# --- rule 1 ---------------------------------------------------------------------------------------


def test_rule_01_upload_replace_withdraw_until_deadline() -> None:
    hall = Hall().to_sign_in()

    [first] = hall.run(upload(A, UPLOAD), UPLOAD)
    assert first.type == "bid_uploaded"
    assert first.payload["replaces"] is None
    assert hall.state.bids[A].envelope_sha256 == envelope_hash(A, 1)

    [second] = hall.run(upload(A, UPLOAD + SECOND, 2), UPLOAD + SECOND)
    assert second.payload["replaces"] == envelope_hash(A, 1)
    assert hall.state.bids[A].envelope_sha256 == envelope_hash(A, 2)
    assert hall.state.bids[A].status == "uploaded"

    [retracted] = hall.run(Retract(actor=bidder(A)), DEADLINE - US)
    assert retracted.type == "bid_retracted"
    assert retracted.payload == {"bidder": A, "envelope_sha256": envelope_hash(A, 2)}
    assert hall.state.bids[A].status == "retracted"
    assert hall.state.live_bids() == []
    hall.refused(Retract(actor=bidder(A)), DEADLINE - US, E.NoBid)

    [again] = hall.run(upload(A, DEADLINE - US, 3), DEADLINE - US)
    assert again.payload["replaces"] is None  # a retracted bid is not replaced, it is gone
    assert [b.envelope_sha256 for b in hall.state.live_bids()] == [envelope_hash(A, 3)]

    hall.refused(Retract(actor=bidder(A)), DEADLINE, E.DeadlinePassed)
    hall.refused(Retract(actor=HOST), UPLOAD, E.NotPermitted)
    hall.refused(upload(A, UPLOAD).model_copy(update={"actor": SUP}), UPLOAD, E.NotPermitted)


def test_rule_01_a_bidder_uploads_at_most_max_versions_of_its_bid() -> None:
    """Every version is kept for the archive: replacing without end would fill the disk."""
    hall = Hall().to_sign_in()
    for version in range(1, MAX_VERSIONS + 1):
        at = UPLOAD + version * US
        hall.run(upload(A, at, version), at)
    assert hall.state.bids[A].uploads == MAX_VERSIONS
    at = UPLOAD + SECOND
    hall.refused(upload(A, at, MAX_VERSIONS + 1), at, E.TooManyVersions)
    with pytest.raises(E.TooManyVersions):
        may_upload(hall.state, bidder(A), at)
    hall.run(Retract(actor=bidder(A)), at)  # withdrawing does not give versions back
    hall.refused(upload(A, at, MAX_VERSIONS + 1), at, E.TooManyVersions)
    hall.run(upload(B, at), at)  # the others are not held up
    assert hall.state.bids[A].envelope_sha256 == envelope_hash(A, MAX_VERSIONS)


def test_rule_01_upload_at_or_after_deadline_is_refused() -> None:
    hall = Hall()
    hall.refused(upload(A, T0), T0, E.NotAllowedInState)  # not published yet
    hall.to_sign_in()

    assert types(hall.run(upload(A, DEADLINE - US), DEADLINE - US)) == ["bid_uploaded"]
    # Server time decides, even if the scheduler has not sealed the lot yet.
    assert hall.status == "sign_in"
    hall.refused(upload(B, DEADLINE), DEADLINE, E.DeadlinePassed)
    hall.refused(upload(B, DEADLINE + SECOND), DEADLINE + SECOND, E.DeadlinePassed)
    hall.refused(upload(A, DEADLINE, 2), DEADLINE, E.DeadlinePassed)  # nor a replacement

    hall.run(Tick(actor=SERVER), DEADLINE)
    hall.refused(upload(B, DEADLINE + SECOND), DEADLINE + SECOND, E.DeadlinePassed)
    assert set(hall.state.bids) == {A}


# --- rules 2 and 3 --------------------------------------------------------------------------------


def test_rule_02_receipt_is_recorded_for_the_bidder_alone() -> None:
    hall = Hall().to_sign_in()
    cmd = upload(A, UPLOAD)
    [event] = hall.run(cmd, UPLOAD)

    assert event.type == "bid_uploaded"
    assert event.audience == [bidder_tag(A)]
    assert event.actor == f"bidder:{A}"
    assert event.payload == {
        "bidder": A,
        "receipt": cmd.receipt,
        "receipt_signature": cmd.receipt_signature,
        "replaces": None,
    }
    bid = hall.state.bids[A]
    assert (bid.receipt_id, bid.received_at, bid.size) == (f"R-{A}-1", iso(UPLOAD), 1001)
    for staff in STAFF_ACTORS:
        assert event not in hall.seen_by(staff)
    assert event not in hall.seen_by(bidder(B))
    assert event in hall.seen_by(bidder(A))


def test_rule_03_upload_event_carries_the_receipts_envelope_hash() -> None:
    """The envelope checks themselves (valid envelope, own certificate) run in the API layer
    before the domain is asked; tests/test_hall_api.py covers that refusal."""
    hall = Hall().to_sign_in()
    cmd = upload(A, UPLOAD)
    [event] = hall.run(cmd, UPLOAD)
    assert event.payload["receipt"]["envelope_sha256"] == cmd.envelope_sha256
    assert hall.state.bids[A].envelope_sha256 == cmd.envelope_sha256 == envelope_hash(A)


# --- rule 4 ---------------------------------------------------------------------------------------


def test_rule_04_nobody_learns_bids_before_deadline() -> None:
    hall = Hall(
        timetable(backup=BackupConfig(k=2, custodians=[HOST.id, SUP.id], bundle_sha256="e" * 64))
    )
    for staff in STAFF_ACTORS:
        hall.run(Join(actor=staff), T0)
    hall.run(Publish(actor=HOST), T0)
    hall.run(Tick(actor=SERVER), SIGN_IN)
    hall.run(SignIn(actor=bidder(A)), UPLOAD)
    hall.run(SignIn(actor=bidder(B)), UPLOAD)
    hall.run(upload(A, UPLOAD), UPLOAD)
    hall.run(upload(B, UPLOAD), UPLOAD)
    hall.run(upload(B, UPLOAD + SECOND, 2), UPLOAD + SECOND)
    hall.run(upload(C, UPLOAD), UPLOAD)
    hall.run(upload(D, UPLOAD), UPLOAD)
    hall.run(Retract(actor=bidder(D)), UPLOAD + SECOND)
    hall.run(Rehearse(actor=bidder(A), passed=True), UPLOAD + SECOND)
    guarantee = Security(kind="guarantee", status="valid", amount_fen=80_000_00)
    hall.run(SetSecurity(actor=SERVER, bidder=C, security=guarantee), UPLOAD + SECOND)
    hall.run(Extend(actor=HOST, minutes=5, reason="网络拥堵"), UPLOAD + SECOND)
    hall.run(Leave(actor=CENTRE), UPLOAD + SECOND)

    # Nothing can be decrypted, extracted or opened before the deadline.
    now = DEADLINE - US
    hall.refused(SubmitKey(actor=bidder(A)), now, E.BeforeDeadline)
    hall.refused(decrypted(A, now), now, E.BeforeDeadline)
    hall.refused(decrypted(A, now).model_copy(update={"via": "backup"}), now, E.BeforeDeadline)
    hall.refused(
        RequestBackup(actor=HOST, request_id="r", bidders=[A], reason="x"), now, E.BeforeDeadline
    )
    hall.refused(Start(actor=HOST), now, E.BeforeDeadline)

    # No refusal tells staff who has bid: a bidder with a bid and one without get the same answer.
    deposit = Security(kind="deposit", status="valid", amount_fen=80_000_00)
    with_bid = hall.refused(
        SetSecurity(actor=CENTRE, bidder=A, security=deposit), now, E.BeforeDeadline
    )
    no_bid = hall.refused(
        SetSecurity(actor=CENTRE, bidder=F, security=deposit), now, E.BeforeDeadline
    )
    assert with_bid.line() == no_bid.line()

    before = [e for e, _ in hall.log]
    for event in before:
        named = names_a_bidder(event)
        if named:
            # An event about a bid goes to that bidder alone: never "all", never "staff".
            assert len(named) == 1, event
            assert event.audience == [bidder_tag(named.pop())], event
        else:
            assert "bids" not in event.payload and "signed_in" not in event.payload, event
    for staff in STAFF_ACTORS:
        assert all(not names_a_bidder(e) for e in hall.seen_by(staff))
    for code in (A, B, C):
        seen = hall.seen_by(bidder(code))
        assert all(names_a_bidder(e) <= {code} for e in seen)
        assert any(e.type == "bid_uploaded" for e in seen)

    # At the (extended) deadline the count reaches staff, and only staff, in one event.
    sealing = hall.run(Tick(actor=SERVER), DEADLINE + timedelta(minutes=5))
    assert [(e.type, e.audience, e.payload) for e in sealing] == [
        ("session_sealed", ["all"], {}),
        ("bids_counted", ["staff"], {"bids": 3, "signed_in": 2}),
    ]


def test_rule_04_a_bidder_never_sees_another_bidders_events_before_the_table() -> None:
    hall = Hall(timetable(backup=BackupConfig(k=1, custodians=[HOST.id], bundle_sha256="e" * 64)))
    hall.to_opening((A, B, C, D))
    for code in (A, B, C, D):
        hall.run(SignIn(actor=bidder(code)), START)
    hall.run(
        SetSecurity(
            actor=CENTRE, bidder=B, security=Security(kind="deposit", status="valid", amount_fen=1)
        ),
        START,
    )
    hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    hall.run(Object(actor=bidder(B), text="解密客户端报错"), DEC_OPEN)
    hall.run(Reply(actor=HOST, objection_id=1, text="请重试"), DEC_OPEN)
    hall.run(failed(B, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    hall.run(failed(C, DEC_OPEN + SECOND, cause="platform"), DEC_OPEN + SECOND)
    hall.run(RecordIncident(actor=HOST, reason="解密服务中断", bidders=[C, D]), DEC_OPEN + SECOND)
    hall.run(
        RequestBackup(actor=HOST, request_id="r1", bidders=[D], reason="平台故障"),
        DEC_OPEN + SECOND,
    )
    hall.run(ApproveBackup(actor=HOST, request_id="r1"), DEC_OPEN + SECOND)
    hall.run(
        decrypted(D, DEC_OPEN + SECOND).model_copy(update={"via": "backup"}), DEC_OPEN + SECOND
    )
    hall.run(decrypted(A, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    hall.run(Tick(actor=SERVER), DEC_CLOSE)
    assert hall.state.table is not None

    log = [e for e, _ in hall.log]
    table_at = types(log).index("table_published")
    for code in (A, B, C, D):
        tags = viewer_tags("bidder", code)
        seen = [
            e
            for seq, e in enumerate(log[:table_at], 1)
            if as_record(e, seq, DEC_OPEN).visible_to(tags)
        ]
        assert seen, code
        for event in seen:
            assert names_a_bidder(event) <= {code}, (code, event)


# --- rule 5 ---------------------------------------------------------------------------------------


def test_rule_05_fewer_than_min_bids_fails() -> None:
    hall = Hall().to_sign_in()
    assert hall.state.timetable.min_bids == 3
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    hall.run(Retract(actor=bidder(C)), UPLOAD)  # a retracted bid does not count

    events = hall.run(Tick(actor=SERVER), DEADLINE)
    assert [(e.type, e.audience, e.payload) for e in events] == [
        ("session_failed", ["all"], {"reason": "too_few_bids", "min_bids": 3}),
        ("bids_counted", ["staff"], {"bids": 2, "signed_in": 0}),
    ]
    assert hall.status == "failed"
    assert next_due(hall.state) is None
    hall.run(Join(actor=SUP), START)
    hall.refused(Start(actor=HOST), START, E.NotAllowedInState)  # 流标: it may not be opened


def test_rule_05_exactly_min_bids_seals() -> None:
    hall = Hall(timetable(min_bids=2)).to_sign_in()
    for code in (A, B):
        hall.run(upload(code, UPLOAD), UPLOAD)
    events = hall.run(Tick(actor=SERVER), DEADLINE)
    assert types(events) == ["session_sealed", "bids_counted"]
    assert events[1].payload == {"bids": 2, "signed_in": 0}
    assert hall.status == "sealed"


# --- rule 6 ---------------------------------------------------------------------------------------


def test_rule_06_start_needs_deadline_passed_and_supervisor_present() -> None:
    hall = Hall().to_sign_in()
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    hall.run(Join(actor=SUP), UPLOAD)
    hall.refused(Start(actor=HOST), DEADLINE - US, E.BeforeDeadline)
    hall.run(Tick(actor=SERVER), DEADLINE)

    for other in (SUP, CENTRE, bidder(A), SERVER):
        hall.refused(Start(actor=other), START, E.NotPermitted)
    [left] = hall.run(Leave(actor=SUP), START)
    assert (left.type, left.audience) == ("party_left", ["staff"])
    hall.refused(Start(actor=HOST), START, E.SupervisorAbsent)
    hall.run(Join(actor=CENTRE), START)  # the centre is not a supervisor
    hall.refused(Start(actor=HOST), START, E.SupervisorAbsent)
    hall.refused(Join(actor=bidder(A)), START, E.NotPermitted)

    [joined] = hall.run(Join(actor=SUP), START)
    assert (joined.type, joined.payload) == (
        "party_joined",
        {"role": "supervisor", "account": SUP.id},
    )
    [started] = hall.run(Start(actor=HOST), START)
    assert (started.type, started.audience, started.payload) == (
        "opening_started",
        ["all"],
        {"bids": 3},
    )
    assert hall.status == "opening"
    hall.refused(Start(actor=HOST), START, E.NotAllowedInState)


def test_rule_06_only_a_supervisor_of_the_projects_remit_lets_the_opening_start() -> None:
    hall = Hall().to_sign_in()
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    hall.run(Tick(actor=SERVER), DEADLINE)
    hall.run(Join(actor=SUP), START)  # a supervisor, but of another remit
    other_remit = Start(actor=HOST, supervisors_in_remit=["sup-of-the-project"])
    refused = hall.refused(other_remit, START, E.SupervisorAbsent)
    assert "remit" in str(refused.detail) and "监管主体" in str(refused.detail)
    hall.refused(Start(actor=HOST, supervisors_in_remit=[]), START, E.SupervisorAbsent)
    [started] = hall.run(Start(actor=HOST, supervisors_in_remit=[SUP.id]), START)
    assert started.type == "opening_started" and hall.status == "opening"


# --- rule 7 ---------------------------------------------------------------------------------------


def test_rule_07_decryption_only_in_window_for_own_bid() -> None:
    hall = Hall().to_opening()
    hall.refused(SubmitKey(actor=bidder(A)), START, E.WindowClosed)  # window not open yet
    hall.refused(OpenDecryption(actor=SUP), DEC_OPEN, E.NotPermitted)
    [opened] = hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    assert (opened.type, opened.audience, opened.payload) == (
        "decryption_opened",
        ["all"],
        {"closes_at": iso(DEC_OPEN + timedelta(minutes=30))},
    )
    assert next_due(hall.state) == DEC_CLOSE

    at = DEC_OPEN + SECOND
    assert hall.run(SubmitKey(actor=bidder(A)), at) == []
    hall.refused(SubmitKey(actor=bidder(D)), at, E.NoBid)
    hall.refused(SubmitKey(actor=HOST), at, E.NotPermitted)
    hall.refused(decrypted(A, at).model_copy(update={"actor": bidder(A)}), at, E.NotPermitted)

    [fail] = hall.run(failed(A, at), at)
    assert (fail.type, fail.audience) == ("decryption_failed", [bidder_tag(A), "staff"])
    assert fail.payload == {
        "bidder": A,
        "attempt": {
            "at": iso(at),
            "ok": False,
            "code": "KEY_UNWRAP_FAILED",
            "cause": "bidder",
            "message": "wrong key",
        },
    }
    assert hall.state.bids[A].status == "failed"

    assert hall.run(SubmitKey(actor=bidder(A)), at + SECOND) == []  # a retry is allowed
    [ok] = hall.run(decrypted(A, at + SECOND), at + SECOND)
    assert (ok.type, ok.audience) == ("bid_decrypted", [bidder_tag(A), "staff"])
    assert ok.payload == {
        "bidder": A,
        "envelope_sha256": envelope_hash(A),
        "cek_sha256": "0" * 64,
        "summary": summary(A),
        "via": "bidder",
    }
    bid = hall.state.bids[A]
    assert (bid.status, bid.via, [a.ok for a in bid.attempts]) == (
        "decrypted",
        "bidder",
        [False, True],
    )
    hall.refused(SubmitKey(actor=bidder(A)), at + 2 * SECOND, E.AlreadyDone)
    hall.refused(decrypted(A, at + 2 * SECOND), at + 2 * SECOND, E.AlreadyDone)

    # The window closes at closes_at, by server time, before the scheduler fires.
    hall.refused(SubmitKey(actor=bidder(B)), DEC_CLOSE, E.WindowClosed)
    hall.refused(decrypted(B, DEC_CLOSE), DEC_CLOSE, E.WindowClosed)
    # A key submitted before the close is decrypted even if the result lands after it.
    [late] = hall.run(decrypted(B, DEC_CLOSE - US), DEC_CLOSE + 5 * SECOND)
    assert late.type == "bid_decrypted"
    hall.run(Tick(actor=SERVER), DEC_CLOSE + 5 * SECOND)
    hall.refused(decrypted(C, DEC_CLOSE - US), DEC_CLOSE + 6 * SECOND, E.WindowClosed)


# --- rule 8 ---------------------------------------------------------------------------------------


def test_rule_08_undecrypted_bids_are_revoked_or_withdrawn_with_evidence() -> None:
    hall = Hall().to_decrypting((A, B, C, D, F))
    at = DEC_OPEN + SECOND
    hall.run(decrypted(A, at), at)
    hall.run(failed(B, at), at)  # bidder's fault: wrong key
    # C sends nothing.
    hall.run(failed(D, at, cause="platform"), at)  # platform-caused attempt
    hall.refused(RecordIncident(actor=HOST, reason=" ", bidders=[F]), at, E.ReasonRequired)
    hall.refused(RecordIncident(actor=bidder(A), reason="x", bidders=[F]), at, E.NotPermitted)
    [incident] = hall.run(RecordIncident(actor=HOST, reason="解密服务器宕机", bidders=[F]), at)
    assert (incident.type, incident.audience, incident.payload) == (
        "incident_recorded",
        [bidder_tag(F), "staff"],
        {"reason": "解密服务器宕机", "bidders": [F]},
    )

    events = hall.run(Tick(actor=SERVER), DEC_CLOSE)
    assert types(events) == [
        "decryption_closed",
        "bid_revoked",
        "bid_revoked",
        "bid_withdrawn",
        "bid_withdrawn",
        "table_published",
    ]
    by_bidder = {e.payload["bidder"]: e for e in events[1:5]}
    b_attempt = {
        "at": iso(at),
        "ok": False,
        "code": "KEY_UNWRAP_FAILED",
        "cause": "bidder",
        "message": "wrong key",
    }
    d_attempt = {**b_attempt, "cause": "platform"}
    assert by_bidder[B].type == "bid_revoked"
    assert by_bidder[B].audience == [bidder_tag(B), "staff"]
    assert by_bidder[B].payload["evidence"] == {
        "attempts": [b_attempt],
        "finding": "bidder_key_failed",
    }
    assert by_bidder[C].type == "bid_revoked"
    assert by_bidder[C].payload["evidence"] == {"attempts": [], "finding": "no_key_sent"}
    assert by_bidder[D].type == "bid_withdrawn"
    assert by_bidder[D].payload["evidence"] == {
        "incidents": [],
        "attempts": [d_attempt],
        "finding": "platform_fault",
    }
    assert by_bidder[F].type == "bid_withdrawn"
    assert by_bidder[F].payload["evidence"] == {
        "incidents": [
            {"at": iso(at), "by": "host:host-1", "reason": "解密服务器宕机", "bidders": [F]}
        ],
        "attempts": [],
        "finding": "platform_fault",
    }

    # The rest of the opening goes on.
    statuses = {code: bid.status for code, bid in hall.state.bids.items()}
    assert statuses == {A: "decrypted", B: "revoked", C: "revoked", D: "withdrawn", F: "withdrawn"}
    assert hall.status == "announcing"
    table = events[-1].payload["table"]
    assert [(r["bidder"], r["status"], r["price_fen"]) for r in table["rows"]] == [
        (A, "decrypted", summary(A)["price_fen"]),
        (B, "revoked", None),
        (C, "revoked", None),
        (D, "withdrawn", None),
        (F, "withdrawn", None),
    ]
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    assert hall.run(Tick(actor=SERVER), CONF_CLOSE)[0].payload == {"deemed": [A]}


# --- rule 9 ---------------------------------------------------------------------------------------


def test_rule_09_backup_decryption_only_after_deadline_for_named_bids_with_k_approvals() -> None:
    plain = Hall().to_opening()
    request = RequestBackup(actor=HOST, request_id="r1", bidders=[B], reason="投标人CA锁损坏")
    plain.refused(request, START, E.BackupUnavailable)  # not configured for this project

    backup = BackupConfig(k=2, custodians=[HOST.id, SUP.id, CENTRE.id], bundle_sha256="e" * 64)
    hall = Hall(timetable(backup=backup)).to_sign_in()
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    hall.refused(request, DEADLINE - US, E.BeforeDeadline)
    hall.refused(ApproveBackup(actor=HOST, request_id="r1"), DEADLINE - US, E.NotAllowedInState)
    via_backup = decrypted(B, DEADLINE - US).model_copy(update={"via": "backup"})
    hall.refused(via_backup, DEADLINE - US, E.BeforeDeadline)
    hall.run(Tick(actor=SERVER), DEADLINE)
    hall.run(Join(actor=SUP), START)
    hall.run(Start(actor=HOST), START)

    hall.refused(request.model_copy(update={"actor": SUP}), START, E.NotPermitted)
    hall.refused(request.model_copy(update={"bidders": []}), START, E.BackupUnavailable)
    hall.refused(request.model_copy(update={"reason": "  "}), START, E.ReasonRequired)
    hall.refused(request.model_copy(update={"bidders": [D]}), START, E.NoBid)
    [requested] = hall.run(request, START)
    assert (requested.type, requested.audience, requested.payload) == (
        "backup_requested",
        ["staff"],
        {"request_id": "r1", "bidders": [B], "reason": "投标人CA锁损坏", "k": 2},
    )
    hall.refused(request, START, E.AlreadyDone)  # request id in use

    hall.refused(via_backup, START, E.BackupUnavailable)  # no quorum yet
    hall.refused(
        ApproveBackup(actor=Actor(role="centre", id="centre-2"), request_id="r1"),
        START,
        E.NotACustodian,
    )
    hall.refused(ApproveBackup(actor=HOST, request_id="r9"), START, E.BackupUnavailable)
    [approved] = hall.run(ApproveBackup(actor=HOST, request_id="r1"), START)
    assert (approved.type, approved.payload) == (
        "backup_approved",
        {"request_id": "r1", "custodian": HOST.id},
    )
    hall.refused(ApproveBackup(actor=HOST, request_id="r1"), START, E.AlreadyDone)
    hall.refused(via_backup, START, E.BackupUnavailable)  # one of two is not enough

    events = hall.run(ApproveBackup(actor=SUP, request_id="r1"), START)
    assert [(e.type, e.audience, e.payload) for e in events] == [
        ("backup_approved", ["staff"], {"request_id": "r1", "custodian": SUP.id}),
        ("backup_quorum_reached", ["staff"], {"request_id": "r1"}),
    ]
    assert hall.state.backup_requests["r1"].done
    hall.refused(ApproveBackup(actor=CENTRE, request_id="r1"), START, E.AlreadyDone)

    not_named = decrypted(C, START).model_copy(update={"via": "backup"})
    hall.refused(not_named, START, E.BackupUnavailable)
    [event] = hall.run(via_backup.model_copy(update={"submitted_at": START}), START)
    assert (event.type, event.payload["bidder"], event.payload["via"]) == (
        "bid_decrypted",
        B,
        "backup",
    )
    assert (hall.state.bids[B].status, hall.state.bids[B].via) == ("decrypted", "backup")


# --- rule 10 --------------------------------------------------------------------------------------


def test_rule_10_table_published_to_all_after_decryption() -> None:
    hall = Hall(timetable(table_fields=["safety_licence", "not_declared_by_bid"])).to_sign_in()
    for i, code in enumerate((B, A)):
        hall.run(upload(code, UPLOAD + i * SECOND), UPLOAD + i * SECOND)
    hall.run(upload(C, UPLOAD + 2 * SECOND), UPLOAD + 2 * SECOND)
    guarantee = Security(
        kind="guarantee", status="valid", amount_fen=50_000_00, detail="保函号 G-1"
    )
    hall.run(SetSecurity(actor=SERVER, bidder=A, security=guarantee), UPLOAD + 3 * SECOND)
    hall.run(Tick(actor=SERVER), DEADLINE)
    deposit = Security(kind="deposit", status="invalid", amount_fen=0, detail="未到账")
    hall.refused(SetSecurity(actor=SERVER, bidder=B, security=deposit), DEADLINE, E.NotPermitted)
    [recorded] = hall.run(SetSecurity(actor=CENTRE, bidder=B, security=deposit), DEADLINE)
    assert (recorded.type, recorded.payload["security"]) == (
        "security_recorded",
        deposit.model_dump(),
    )
    hall.run(Join(actor=SUP), START)
    hall.run(Start(actor=HOST), START)
    hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    for code in (A, B, C):
        hall.run(decrypted(code, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    assert hall.state.table is None

    events = hall.run(Tick(actor=SERVER), DEC_CLOSE)
    assert types(events) == ["decryption_closed", "table_published"]
    published = events[-1]
    assert published.audience == ["all"]
    table = published.payload["table"]
    assert published.payload["table_sha256"] == sha256_json(table) == hall.state.table_sha256
    assert table == build_table(hall.state) == hall.state.table
    assert (table["session_id"], table["lot_id"]) == ("s-1", "P-2026-001/L1")
    assert [r["bidder"] for r in table["rows"]] == [B, A, C]  # in order of receipt
    assert table["rows"][1] == {
        "bidder": A,
        "bidder_name": NAMES[A],
        "status": "decrypted",
        "price_fen": 123_456_78,
        "duration_days": 180,
        "quality": "合格",
        "project_manager": "张工",
        "fields": {"safety_licence": "(闽)JZ安许证字[2026]XA", "not_declared_by_bid": None},
        "security": guarantee.model_dump(),
        "envelope_sha256": envelope_hash(A),
    }
    assert table["rows"][0]["security"] == deposit.model_dump()
    assert table["rows"][2]["security"] is None


def test_rule_10_the_table_names_each_bidder_as_registered_not_as_its_summary_claims() -> None:
    hall = Hall(timetable(min_bids=2)).to_sign_in()
    for i, code in enumerate((A, B)):
        hall.run(upload(code, UPLOAD + i * SECOND), UPLOAD + i * SECOND)
    hall.run(Tick(actor=SERVER), DEADLINE)
    hall.run(Join(actor=SUP), START)
    hall.run(Start(actor=HOST), START)
    hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    impostor = decrypted(B, DEC_OPEN + SECOND)
    claimed = {**impostor.summary, "bidder_name": NAMES[A]}  # B's summary claims A's name
    hall.run(impostor.model_copy(update={"summary": claimed}), DEC_OPEN + SECOND)
    hall.run(decrypted(A, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    [_, published] = hall.run(Tick(actor=SERVER), DEC_CLOSE)
    names = {r["bidder"]: r["bidder_name"] for r in published.payload["table"]["rows"]}
    assert names == {A: NAMES[A], B: NAMES[B]}
    for code in (A, B, C):
        assert published in hall.seen_by(bidder(code))


# --- rule 11 --------------------------------------------------------------------------------------


def test_rule_11_objections_answered_and_silence_confirms() -> None:
    hall = Hall().to_decrypting()
    at = DEC_OPEN + SECOND
    [private] = hall.run(Object(actor=bidder(B), text="  我方解密超时  "), at)
    assert (private.type, private.audience, private.payload) == (
        "objection_raised",
        [bidder_tag(B), "staff"],
        {"id": 1, "bidder": B, "text": "我方解密超时", "public": False},
    )
    assert private not in hall.seen_by(bidder(A))
    assert private in hall.seen_by(SUP)
    hall.refused(Object(actor=bidder(D), text="x"), at, E.NoBid)
    hall.refused(Reply(actor=SUP, objection_id=1, text="x"), at, E.NotPermitted)
    hall.refused(Reply(actor=HOST, objection_id=2, text="x"), at, E.UnknownObjection)
    [answer] = hall.run(Reply(actor=HOST, objection_id=1, text="已延长解密时间"), at)
    assert (answer.type, answer.audience, answer.payload) == (
        "objection_answered",
        [bidder_tag(B), "staff"],
        {"id": 1, "bidder": B, "text": "已延长解密时间"},
    )
    hall.refused(Reply(actor=HOST, objection_id=1, text="again"), at, E.AlreadyDone)
    for code in (A, B, C):
        hall.run(decrypted(code, at), at)
    hall.run(Tick(actor=SERVER), DEC_CLOSE)

    [public] = hall.run(Object(actor=bidder(C), text="A的报价有误"), DEC_CLOSE)
    assert (public.audience, public.payload["id"], public.payload["public"]) == (["all"], 2, True)
    assert public in hall.seen_by(bidder(A))
    hall.refused(OpenConfirmation(actor=HOST), DEC_CLOSE, E.ObjectionsPending)
    [answer] = hall.run(Reply(actor=HOST, objection_id=2, text="以唱标为准"), DEC_CLOSE)
    assert answer.audience == ["all"]
    hall.refused(
        Confirm(actor=bidder(A), table_sha256=hall.state.table_sha256 or "", signature="s"),
        DEC_CLOSE,
        E.NotAllowedInState,
    )

    [opened] = hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    assert (opened.type, opened.payload) == ("confirmation_opened", {"closes_at": iso(CONF_CLOSE)})
    assert hall.status == "confirming"
    table_hash = hall.state.table_sha256
    assert table_hash is not None
    hall.refused(
        Confirm(actor=bidder(A), table_sha256="f" * 64, signature="s"), CONF_OPEN, E.TableMismatch
    )
    [confirmed] = hall.run(
        Confirm(actor=bidder(A), table_sha256=table_hash, signature="cms"), CONF_OPEN
    )
    assert (confirmed.type, confirmed.audience, confirmed.payload) == (
        "table_confirmed",
        ["all"],
        {"bidder": A, "table_sha256": table_hash, "signature": "cms"},
    )
    hall.refused(
        Confirm(actor=bidder(A), table_sha256=table_hash, signature="cms"), CONF_OPEN, E.AlreadyDone
    )
    hall.refused(
        Confirm(actor=bidder(B), table_sha256=table_hash, signature="s"), CONF_CLOSE, E.WindowClosed
    )

    [closed] = hall.run(Tick(actor=SERVER), CONF_CLOSE)
    assert (closed.type, closed.audience, closed.payload) == (
        "confirmation_closed",
        ["all"],
        {"deemed": [B, C]},
    )
    confirmations = {code: bid.confirmation for code, bid in hall.state.bids.items()}
    assert confirmations == {A: "signed", B: "deemed", C: "deemed"}
    assert hall.state.record_pending
    # Once the record is being made, a new objection would be left out of it.
    hall.refused(Object(actor=bidder(B), text="too late"), CONF_CLOSE, E.WindowClosed)


def test_rule_11_a_bidder_may_have_at_most_three_unanswered_objections() -> None:
    hall = Hall().to_decrypting()
    at = DEC_OPEN + SECOND
    for i in range(3):
        hall.run(Object(actor=bidder(B), text=f"异议 {i + 1}"), at)
    hall.refused(Object(actor=bidder(B), text="第四条"), at, E.TooManyObjections)
    hall.run(Object(actor=bidder(A), text="另一投标人的异议"), at)  # others are not held up
    hall.run(Reply(actor=HOST, objection_id=2, text="已答复"), at)
    [fourth] = hall.run(Object(actor=bidder(B), text="第四条"), at)
    assert fourth.payload["id"] == 5
    hall.refused(Object(actor=bidder(B), text="第五条"), at, E.TooManyObjections)


def test_rule_11_a_bidder_may_raise_at_most_five_objections_in_ten_minutes() -> None:
    hall = Hall().to_decrypting()
    at = DEC_OPEN + SECOND
    for i in range(5):
        [raised] = hall.run(Object(actor=bidder(B), text=f"异议 {i + 1}"), at + i * MINUTE)
        if i % 2 == 0:  # answered, so the open limit (three) is not what stops B
            hall.run(Reply(actor=HOST, objection_id=raised.payload["id"], text="已答复"), at)
    now = at + 5 * MINUTE
    refusal = hall.refused(Object(actor=bidder(B), text="第六条"), now, E.ObjectionsTooFrequent)
    assert iso(at + 10 * MINUTE) in str(refusal.detail)  # when the first one leaves the window
    hall.run(Object(actor=bidder(A), text="另一投标人的异议"), now)  # others are not held up
    hall.refused(
        Object(actor=bidder(B), text="第六条"), at + 10 * MINUTE - US, E.ObjectionsTooFrequent
    )
    hall.run(Reply(actor=HOST, objection_id=2, text="已答复"), now)
    [sixth] = hall.run(Object(actor=bidder(B), text="第六条"), at + 10 * MINUTE)
    assert sixth.payload["bidder"] == B


def test_rule_11_the_host_answers_duplicate_objections_together() -> None:
    hall = Hall().to_decrypting()
    at = DEC_OPEN + SECOND
    for code in (A, B, C):
        hall.run(Object(actor=bidder(code), text="解密系统响应缓慢"), at)
    answered = hall.run(Reply(actor=HOST, objection_id=1, also=[3, 2, 3], text="系统正常"), at)
    assert [(e.payload["id"], e.payload["bidder"]) for e in answered] == [(1, A), (3, C), (2, B)]
    # Before the table each answer goes to its own bidder only (rule 4: nobody learns who bid).
    assert [e.audience for e in answered] == [
        [bidder_tag(A), "staff"],
        [bidder_tag(C), "staff"],
        [bidder_tag(B), "staff"],
    ]
    assert all(o.reply == "系统正常" for o in hall.state.objections)
    # All or nothing: one already answered or unknown objection refuses the whole answer.
    hall.run(Object(actor=bidder(A), text="又一条"), at)
    hall.refused(Reply(actor=HOST, objection_id=4, also=[1], text="x"), at, E.AlreadyDone)
    hall.refused(Reply(actor=HOST, objection_id=4, also=[9], text="x"), at, E.UnknownObjection)
    assert hall.state.objections[3].reply is None


def test_rule_11_silence_does_not_confirm_for_a_bid_that_was_not_decrypted() -> None:
    hall = Hall().to_decrypting()
    hall.run(decrypted(A, DEC_OPEN), DEC_OPEN)
    hall.run(decrypted(B, DEC_OPEN), DEC_OPEN)
    hall.run(Tick(actor=SERVER), DEC_CLOSE)
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    [closed] = hall.run(Tick(actor=SERVER), CONF_CLOSE)
    assert closed.payload == {"deemed": sorted([A, B])}
    assert hall.state.bids[C].confirmation is None


# --- rule 12 --------------------------------------------------------------------------------------


def test_rule_12_record_signed_by_server_host_and_supervisor() -> None:
    hall = Hall().to_confirming()
    generate = GenerateRecord(actor=SERVER, record_sha256="r" * 64, signature="server-sig")
    hall.refused(generate, CONF_OPEN, E.NotAllowedInState)  # confirmations still open
    hall.refused(
        SignRecord(actor=HOST, record_sha256="r" * 64, signature="h"),
        CONF_OPEN,
        E.NotAllowedInState,
    )
    hall.run(Object(actor=bidder(B), text="我有异议"), CONF_OPEN)
    hall.run(Reply(actor=HOST, objection_id=1, text="已记录"), CONF_OPEN)
    hall.run(Object(actor=bidder(C), text="最后一刻的异议"), CONF_CLOSE - US)
    hall.run(Tick(actor=SERVER), CONF_CLOSE)

    hall.refused(generate.model_copy(update={"actor": HOST}), CONF_CLOSE, E.NotPermitted)
    # Rule 11: the record waits for the answer to the last-minute objection.
    hall.refused(generate, CONF_CLOSE, E.ObjectionsPending)
    hall.run(Reply(actor=HOST, objection_id=2, text="已记录，答复如下"), CONF_CLOSE)
    [generated] = hall.run(generate, CONF_CLOSE)
    assert (generated.type, generated.audience, generated.payload) == (
        "record_generated",
        ["all"],
        {"record_sha256": "r" * 64, "signature": "server-sig"},
    )
    assert (hall.state.record_pending, hall.state.record_sha256) == (False, "r" * 64)
    hall.refused(generate, CONF_CLOSE, E.NotAllowedInState)
    hall.refused(Reply(actor=HOST, objection_id=1, text="x"), CONF_CLOSE, E.AlreadyDone)
    hall.refused(Reply(actor=HOST, objection_id=2, text="x"), CONF_CLOSE, E.AlreadyDone)

    sign = SignRecord(actor=HOST, record_sha256="r" * 64, signature="host-sig")
    hall.refused(sign.model_copy(update={"record_sha256": "x" * 64}), CONF_CLOSE, E.TableMismatch)
    hall.refused(sign.model_copy(update={"actor": CENTRE}), CONF_CLOSE, E.NotPermitted)
    hall.refused(sign.model_copy(update={"actor": bidder(A)}), CONF_CLOSE, E.NotPermitted)
    [host_signed] = hall.run(sign, CONF_CLOSE)
    assert (host_signed.type, host_signed.payload) == (
        "record_signed",
        {"role": "host", "account": HOST.id, "signature": "host-sig"},
    )
    assert hall.status == "confirming"  # not published on one staff signature
    hall.refused(sign, CONF_CLOSE, E.AlreadyDone)

    events = hall.run(
        SignRecord(actor=SUP, record_sha256="r" * 64, signature="sup-sig"), CONF_CLOSE
    )
    assert [(e.type, e.audience, e.payload) for e in events] == [
        (
            "record_signed",
            ["all"],
            {"role": "supervisor", "account": SUP.id, "signature": "sup-sig"},
        ),
        ("record_published", ["all"], {"record_sha256": "r" * 64}),
    ]
    assert hall.status == "closed"
    assert hall.state.record_signatures == {"host": HOST.id, "supervisor": SUP.id}
    assert next_due(hall.state) is None

    record = build_record(hall.state, len(hall.log), "h" * 64)
    assert record["table_sha256"] == hall.state.table_sha256
    assert record["log_head"] == {"seq": len(hall.log), "hash": "h" * 64}
    assert [(o["bidder"], o["reply"]) for o in record["objections"]] == [
        (B, "已记录"),
        (C, "已记录，答复如下"),
    ]
    confirmations = [(b["bidder"], b["confirmation"]) for b in record["bids"]]
    assert confirmations == [(code, "deemed") for code in sorted((A, B, C))]
    text = record_text(record)
    assert "开标记录 / Opening record" in text
    assert f"{NAMES[A]} ({A})" in text and "123456.78 元" in text
    assert "#1 " + B + ": 我有异议" in text and "答复 / reply: 已记录" in text


# --- rule 13 --------------------------------------------------------------------------------------


def test_rule_13_extend_and_suspend_need_a_reason_and_are_events() -> None:
    hall = Hall().to_sign_in()
    now = UPLOAD
    for blank in ("", "   "):
        hall.refused(Suspend(actor=HOST, reason=blank), now, E.ReasonRequired)
        hall.refused(Extend(actor=HOST, minutes=10, reason=blank), now, E.ReasonRequired)
    hall.refused(Suspend(actor=bidder(A), reason="x"), now, E.NotPermitted)
    hall.refused(Extend(actor=SUP, minutes=10, reason="x"), now, E.NotPermitted)

    [extended] = hall.run(Extend(actor=HOST, minutes=10, reason=" 系统升级 "), now)
    assert (extended.type, extended.audience, extended.payload) == (
        "window_extended",
        ["all"],
        {"window": "deadline", "minutes": 10, "reason": "系统升级"},
    )
    assert extended in hall.seen_by(SUP)  # the supervisor is notified
    assert hall.state.timetable.deadline == next_due(hall.state) == DEADLINE + timedelta(minutes=10)
    assert hall.run(Tick(actor=SERVER), DEADLINE) == []
    assert types(hall.run(upload(A, DEADLINE), DEADLINE)) == ["bid_uploaded"]

    [suspended] = hall.run(Suspend(actor=SUP, reason="机房断电"), DEADLINE)
    assert (suspended.type, suspended.audience, suspended.payload) == (
        "session_suspended",
        ["all"],
        {"reason": "机房断电", "previous": "sign_in"},
    )
    assert hall.status == "suspended"
    hall.refused(Resume(actor=HOST, reason=""), DEADLINE, E.ReasonRequired)
    hall.refused(Resume(actor=bidder(A), reason="x"), DEADLINE, E.NotPermitted)
    hall.refused(Extend(actor=HOST, minutes=10, reason="x"), DEADLINE, E.NotAllowedInState)
    hall.refused(upload(B, DEADLINE), DEADLINE, E.NotAllowedInState)
    hall.refused(Suspend(actor=HOST, reason="x"), DEADLINE, E.NotAllowedInState)
    assert next_due(hall.state) is None
    assert hall.run(Tick(actor=SERVER), DEADLINE + timedelta(hours=2)) == []

    pause = timedelta(minutes=25, microseconds=7)
    [resumed] = hall.run(Resume(actor=HOST, reason="恢复供电"), DEADLINE + pause)
    assert (resumed.type, resumed.audience, resumed.payload) == (
        "session_resumed",
        ["all"],
        {"reason": "恢复供电", "paused_microseconds": 25 * 60 * 1_000_000 + 7, "status": "sign_in"},
    )
    assert hall.status == "sign_in"
    assert hall.state.timetable.deadline == DEADLINE + timedelta(minutes=10) + pause
    assert next_due(hall.state) == hall.state.timetable.deadline


def test_rule_13_suspend_shifts_the_decryption_and_confirmation_windows_by_the_pause() -> None:
    hall = Hall().to_decrypting()
    pause = timedelta(minutes=7)
    hall.run(Suspend(actor=HOST, reason="解密服务重启"), DEC_OPEN + SECOND)
    hall.refused(SubmitKey(actor=bidder(A)), DEC_OPEN + SECOND, E.NotAllowedInState)
    assert hall.run(Tick(actor=SERVER), DEC_CLOSE) == []
    hall.run(Resume(actor=HOST, reason="已恢复"), DEC_OPEN + SECOND + pause)
    assert hall.status == "decrypting"
    assert hall.state.decrypt_closes_at == next_due(hall.state) == DEC_CLOSE + pause
    assert hall.run(SubmitKey(actor=bidder(A)), DEC_CLOSE) == []
    [extended] = hall.run(Extend(actor=HOST, minutes=5, reason="投标人请求"), DEC_CLOSE)
    assert extended.payload["window"] == "decryption"
    assert next_due(hall.state) == DEC_CLOSE + pause + timedelta(minutes=5)

    hall.run(Tick(actor=SERVER), DEC_CLOSE + pause + timedelta(minutes=5))
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN + timedelta(hours=1))
    closes = CONF_CLOSE + timedelta(hours=1)
    assert next_due(hall.state) == closes
    hall.run(Suspend(actor=HOST, reason="x"), closes - timedelta(minutes=1))
    hall.run(Resume(actor=HOST, reason="y"), closes + timedelta(minutes=2))
    assert next_due(hall.state) == closes + timedelta(minutes=3)
    [extended] = hall.run(Extend(actor=HOST, minutes=5, reason="z"), closes + timedelta(minutes=2))
    assert extended.payload["window"] == "confirmation"
    assert next_due(hall.state) == closes + timedelta(minutes=8)


def test_rule_13_a_deadline_that_has_passed_is_not_reopened() -> None:
    """Extending or pausing after server time passed the deadline, but before the scheduler
    fired, must not let late uploads in (rule 1) or reopen a window (rules 7 and 11)."""
    hall = Hall().to_sign_in()
    hall.refused(Extend(actor=HOST, minutes=30, reason="x"), DEADLINE, E.DeadlinePassed)
    hall.run(Suspend(actor=HOST, reason="x"), DEADLINE + SECOND)
    hall.run(Resume(actor=HOST, reason="y"), DEADLINE + timedelta(minutes=30))
    assert hall.state.timetable.deadline == DEADLINE
    hall.refused(
        upload(A, DEADLINE + timedelta(minutes=30)),
        DEADLINE + timedelta(minutes=30),
        E.DeadlinePassed,
    )

    hall = Hall().to_decrypting()
    hall.refused(Extend(actor=HOST, minutes=30, reason="x"), DEC_CLOSE, E.WindowClosed)
    hall.run(Suspend(actor=HOST, reason="x"), DEC_CLOSE)
    hall.run(Resume(actor=HOST, reason="y"), DEC_CLOSE + timedelta(minutes=30))
    assert hall.state.decrypt_closes_at == DEC_CLOSE

    hall = Hall().to_confirming()
    hall.refused(Extend(actor=HOST, minutes=30, reason="x"), CONF_CLOSE, E.WindowClosed)


# --- the log, time and the scheduler --------------------------------------------------------------


def full_opening() -> Hall:
    hall = Hall(timetable(table_fields=["safety_licence"])).to_decrypting()
    hall.run(Object(actor=bidder(C), text="?"), DEC_OPEN)
    hall.run(Reply(actor=HOST, objection_id=1, text="!"), DEC_OPEN)
    hall.run(failed(A, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    hall.run(decrypted(A, DEC_OPEN + 2 * SECOND), DEC_OPEN + 2 * SECOND)
    hall.run(decrypted(B, DEC_OPEN + 2 * SECOND), DEC_OPEN + 2 * SECOND)
    hall.run(RecordIncident(actor=HOST, reason="r", bidders=[C]), DEC_OPEN + 3 * SECOND)
    hall.run(Suspend(actor=HOST, reason="s"), DEC_OPEN + 4 * SECOND)
    hall.run(Resume(actor=HOST, reason="t"), DEC_OPEN + 5 * SECOND)
    hall.run(Tick(actor=SERVER), DEC_CLOSE + SECOND)
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    hall.run(
        Confirm(actor=bidder(B), table_sha256=hall.state.table_sha256 or "", signature="s"),
        CONF_OPEN,
    )
    hall.run(Tick(actor=SERVER), CONF_CLOSE)
    hall.run(GenerateRecord(actor=SERVER, record_sha256="r" * 64, signature="s"), CONF_CLOSE)
    hall.run(SignRecord(actor=SUP, record_sha256="r" * 64, signature="s"), CONF_CLOSE)
    hall.run(SignRecord(actor=HOST, record_sha256="r" * 64, signature="s"), CONF_CLOSE)
    assert hall.status == "closed"
    return hall


def test_state_is_the_fold_of_its_events() -> None:
    hall = full_opening()
    tt = timetable(table_fields=["safety_licence"])
    state = new_session("s-1", "P-2026-001/L1", tt, title="某某道路工程")
    for event, at in hall.log:
        state = evolve(state, event, at)
    assert state == hall.state
    assert state.bids[C].status == "withdrawn"
    assert [a.ok for a in state.bids[A].attempts] == [False, True]


def test_tick_fires_once() -> None:
    hall = Hall().to_sign_in()
    assert hall.run(Tick(actor=SERVER), SIGN_IN) == []
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    assert types(hall.run(Tick(actor=SERVER), DEADLINE)) == ["session_sealed", "bids_counted"]
    assert hall.run(Tick(actor=SERVER), DEADLINE) == []
    hall.run(Join(actor=SUP), START)
    hall.run(Start(actor=HOST), START)
    hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    assert types(hall.run(Tick(actor=SERVER), DEC_CLOSE))[0] == "decryption_closed"
    assert hall.run(Tick(actor=SERVER), DEC_CLOSE) == []
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    assert types(hall.run(Tick(actor=SERVER), CONF_CLOSE)) == ["confirmation_closed"]
    assert hall.run(Tick(actor=SERVER), CONF_CLOSE) == []
    assert hall.run(Tick(actor=SERVER), CONF_CLOSE + timedelta(days=1)) == []


def test_tick_after_a_long_outage_catches_up_in_one_go() -> None:
    hall = Hall()
    hall.run(Publish(actor=HOST), T0)
    events = hall.run(Tick(actor=SERVER), DEADLINE + timedelta(hours=3))
    assert types(events) == ["session_failed", "bids_counted"]  # never sign_in_opened late


def test_next_due_follows_the_timetable() -> None:
    hall = Hall()
    assert next_due(hall.state) is None
    hall.run(Publish(actor=HOST), T0)
    assert (hall.status, next_due(hall.state)) == ("published", SIGN_IN)
    assert hall.run(Tick(actor=SERVER), SIGN_IN - US) == []
    hall.run(Tick(actor=SERVER), SIGN_IN)
    assert (hall.status, next_due(hall.state)) == ("sign_in", DEADLINE)
    assert hall.run(Tick(actor=SERVER), DEADLINE - US) == []
    for code in (A, B, C):
        hall.run(upload(code, UPLOAD), UPLOAD)
    hall.run(Tick(actor=SERVER), DEADLINE)
    assert next_due(hall.state) is None  # sealed: waits for the host
    hall.run(Join(actor=SUP), START)
    hall.run(Start(actor=HOST), START)
    assert next_due(hall.state) is None
    hall.run(OpenDecryption(actor=HOST), DEC_OPEN)
    assert next_due(hall.state) == DEC_CLOSE
    assert hall.run(Tick(actor=SERVER), DEC_CLOSE - US) == []
    hall.run(Tick(actor=SERVER), DEC_CLOSE)
    assert (hall.status, next_due(hall.state)) == ("announcing", None)
    hall.run(OpenConfirmation(actor=HOST), CONF_OPEN)
    assert next_due(hall.state) == CONF_CLOSE
    assert hall.run(Tick(actor=SERVER), CONF_CLOSE - US) == []
    hall.run(Tick(actor=SERVER), CONF_CLOSE)
    assert next_due(hall.state) is None

    published_late = Hall()
    published_late.run(Publish(actor=HOST), SIGN_IN + SECOND)
    assert (published_late.status, next_due(published_late.state)) == ("sign_in", DEADLINE)


# --- property: random halls -----------------------------------------------------------------------

BIDDERS = tuple(bidder(code) for code in (A, B, C, D))
EVERYONE = (*BIDDERS, HOST, SUP, CENTRE, SERVER)
MINUTE = timedelta(minutes=1)
STEPS = [
    timedelta(0),
    US,
    SECOND,
    SECOND,
    MINUTE,
    MINUTE,
    MINUTE,
    7 * MINUTE,
    20 * MINUTE,
    45 * MINUTE,
]
NATURAL: dict[str, tuple[Actor, ...]] = {
    "Publish": (HOST,),
    "Tick": (SERVER,),
    "Join": (HOST, SUP, CENTRE),
    "Leave": (SUP,),
    "SignIn": BIDDERS,
    "Upload": BIDDERS,
    "Retract": BIDDERS,
    "Rehearse": BIDDERS,
    "Start": (HOST,),
    "OpenDecryption": (HOST,),
    "SubmitKey": BIDDERS,
    "DecryptionResult": (SERVER,),
    "RecordIncident": (HOST,),
    "SetSecurity": (SERVER, CENTRE),
    "RequestBackup": (HOST,),
    "ApproveBackup": (HOST, SUP),
    "Object": BIDDERS,
    "Reply": (HOST,),
    "OpenConfirmation": (HOST,),
    "Confirm": BIDDERS,
    "GenerateRecord": (SERVER,),
    "SignRecord": (HOST, SUP),
    "Suspend": (HOST, SUP),
    "Resume": (HOST, SUP),
    "Extend": (HOST,),
    "PlatformOutage": (SERVER,),
}


SECURITY_KINDS: tuple[Literal["deposit", "guarantee"], ...] = ("deposit", "guarantee")


def random_command(data: st.DataObject, state: OpeningState, now: datetime) -> Command:
    kind = data.draw(st.sampled_from(sorted(NATURAL)))
    actor = data.draw(st.sampled_from(NATURAL[kind]) | st.sampled_from(EVERYONE))
    code = data.draw(st.sampled_from([b.id for b in BIDDERS]))
    codes = data.draw(st.lists(st.sampled_from([b.id for b in BIDDERS]), max_size=3))
    reason = data.draw(st.sampled_from(["", "  ", "网络故障"]))
    fields: dict[str, Any] = {"actor": actor}
    if kind == "Upload":
        version = data.draw(st.integers(1, 3))
        return upload(actor.id, now, version).model_copy(update={"actor": actor})
    if kind == "Rehearse":
        fields["passed"] = data.draw(st.booleans())
    elif kind == "DecryptionResult":
        fields |= {
            "bidder": code,
            "submitted_at": now - data.draw(st.sampled_from(STEPS[:5])),
            "ok": data.draw(st.booleans()),
            "cause": data.draw(st.sampled_from(["bidder", "platform"])),
            "via": data.draw(st.sampled_from(["bidder", "backup"])),
            "summary": {"bidder_name": "某公司", "price_fen": 1},
        }
    elif kind == "RecordIncident":
        fields |= {"reason": reason, "bidders": codes}
    elif kind == "SetSecurity":
        security_kind = data.draw(st.sampled_from(SECURITY_KINDS))
        fields |= {
            "bidder": code,
            "security": Security(kind=security_kind, status="valid", amount_fen=1),
        }
    elif kind == "RequestBackup":
        fields |= {
            "request_id": data.draw(st.sampled_from(["r1", "r2"])),
            "bidders": codes,
            "reason": reason,
        }
    elif kind == "ApproveBackup":
        fields["request_id"] = data.draw(st.sampled_from(["r1", "r2"]))
    elif kind == "Object":
        fields["text"] = data.draw(st.sampled_from([" ", "异议"]))
    elif kind == "Reply":
        fields |= {"objection_id": data.draw(st.integers(0, 3)), "text": "答复"}
    elif kind == "Confirm":
        fields |= {
            "table_sha256": data.draw(st.sampled_from([state.table_sha256 or "", "0" * 64])),
            "signature": "s",
        }
    elif kind in ("GenerateRecord", "SignRecord"):
        fields |= {
            "record_sha256": data.draw(st.sampled_from(["a" * 64, "b" * 64])),
            "signature": "s",
        }
    elif kind in ("Suspend", "Resume"):
        fields["reason"] = reason
    elif kind == "Extend":
        fields |= {"minutes": data.draw(st.integers(1, 60)), "reason": reason}
    elif kind == "PlatformOutage":
        down = data.draw(st.sampled_from(STEPS[:5]))
        fields |= {"down_from": now - down, "down_until": now}
    command_type = {c.__name__: c for c in COMMAND_TYPES}[kind]
    return command_type(**fields)


COMMAND_TYPES: tuple[type[Command], ...] = (
    Publish,
    Tick,
    Join,
    Leave,
    SignIn,
    Upload,
    Retract,
    Rehearse,
    Start,
    OpenDecryption,
    SubmitKey,
    DecryptionResult,
    RecordIncident,
    SetSecurity,
    RequestBackup,
    ApproveBackup,
    Object,
    Reply,
    OpenConfirmation,
    Confirm,
    GenerateRecord,
    SignRecord,
    Suspend,
    Resume,
    Extend,
    PlatformOutage,
)


def _record_due(hall: Hall, codes: list[str]) -> Hall:
    hall.to_confirming(codes)
    hall.run(Tick(actor=SERVER), CONF_CLOSE)
    return hall


# phase -> how a fresh hall gets there with the bids of ``codes``, and the instant it is then
PHASES: dict[str, tuple[Callable[[Hall, list[str]], Hall], datetime]] = {
    "draft": (lambda hall, codes: hall, T0),
    "sign_in": (lambda hall, codes: hall.to_sign_in(), SIGN_IN),
    "sealed": (Hall.to_sealed, DEADLINE),
    "decrypting": (Hall.to_decrypting, DEC_OPEN),
    "announcing": (Hall.to_announcing, DEC_CLOSE),
    "confirming": (Hall.to_confirming, CONF_OPEN),
    "record_due": (_record_due, CONF_CLOSE),
}


def before_deadline(state: OpeningState) -> bool:
    status = state.suspended_from if state.status == "suspended" else state.status
    return status in ("draft", "published", "sign_in")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_halls_refuse_cleanly_and_never_leak_bids_before_deadline(
    data: st.DataObject,
) -> None:
    backup = BackupConfig(k=2, custodians=[HOST.id, SUP.id], bundle_sha256="e" * 64)
    hall = Hall(timetable(min_bids=2, backup=backup))
    # Start from a random phase so that short random runs also reach the later rules.
    phase = data.draw(st.sampled_from(list(PHASES)))
    codes = data.draw(st.lists(st.sampled_from((A, B, C, D)), min_size=2, max_size=4, unique=True))
    reach, now = PHASES[phase]
    reach(hall, codes)
    for _ in range(data.draw(st.integers(1, 60))):
        now += data.draw(st.sampled_from(STEPS))
        cmd = random_command(data, hall.state, now)
        before = hall.state.model_copy(deep=True)
        pre_deadline = before_deadline(hall.state)
        try:
            events = decide(hall.state, cmd, now)
        except Refusal:
            assert hall.state == before
            continue
        assert hall.state == before
        for event in events:
            if pre_deadline and {"all", "staff"} & set(event.audience):
                assert not names_a_bidder(event), event
            if pre_deadline and names_a_bidder(event):
                assert len(event.audience) == 1 and event.audience[0].startswith("bidder:"), event
            hall.state = evolve(hall.state, event, now)
            hall.log.append((event, now))

    replayed = Hall(timetable(min_bids=2, backup=backup)).state
    for event, at in hall.log:
        replayed = evolve(replayed, event, at)
    assert replayed == hall.state


# --- warning signals (issue 6) ----------------------------------------------------------------


def _warning(ident: str, subjects: list[str]) -> dict[str, Any]:
    return {
        "id": ident * 64,
        "kind": "same_origin_address",
        "family": "same_origin",
        "score": 0.7,
        "subjects": subjects,
        "related": [],
        "explanation_zh": "同一地址",
        "explanation_en": "same address",
        "evidence": [{"session_id": "s-1", "seq": 5, "ref": "event:5", "note": ""}],
    }


def test_signals_are_for_supervisors_once_each_and_change_no_outcome() -> None:
    hall = Hall().to_announcing()
    before = hall.state.model_dump(exclude={"signals_raised"})
    for who in (HOST, SUP, bidder(A)):
        hall.refused(
            RaiseSignals(actor=who, signals=[_warning("a", [A, B])]), CONF_OPEN, E.NotPermitted
        )
    events = hall.run(
        RaiseSignals(actor=SERVER, signals=[_warning("a", [A, B]), _warning("b", [B, C])]),
        CONF_OPEN,
    )
    assert types(events) == ["signal", "signal"]
    assert all(e.audience == ["supervisor"] and e.actor == "server:server" for e in events)
    assert events[0].payload == _warning("a", [A, B])  # the Signal, as the supervisor wall reads it
    assert hall.state.model_dump(exclude={"signals_raised"}) == before
    assert hall.state.signals_raised == ["a" * 64, "b" * 64]
    # Raised again (the record, a restart, a second process): nothing new is written.
    again = hall.run(RaiseSignals(actor=SERVER, signals=[_warning("b", [B, C])]), CONF_OPEN)
    assert again == []
    for viewer in (HOST, bidder(A), bidder(B)):
        assert not [e for e in hall.seen_by(viewer) if e.type == "signal"]
    assert len([e for e in hall.seen_by(SUP) if e.type == "signal"]) == 2
    # A warning while suspended is still recorded; it does not resume or change anything.
    hall.run(Suspend(actor=HOST, reason="网络故障"), CONF_OPEN + SECOND)
    late = hall.run(RaiseSignals(actor=SERVER, signals=[_warning("c", [A, C])]), CONF_OPEN + SECOND)
    assert types(late) == ["signal"] and hall.status == "suspended"


def test_origin_is_recorded_in_the_bidders_own_events_only_when_given() -> None:
    hall = Hall().to_sign_in()
    origin = Origin(addr="203.0.113.7", machine="f" * 64, cert_serial="1a2b")
    plain = hall.run(upload(A, UPLOAD), UPLOAD)
    assert "origin" not in plain[0].payload  # events without an origin stay as they were
    noted = hall.run(upload(B, UPLOAD).model_copy(update={"origin": origin}), UPLOAD)
    assert noted[0].payload["origin"] == origin.model_dump()
    assert noted[0].audience == [bidder_tag(B)]  # rule 4: the bidder alone
    signed = hall.run(SignIn(actor=bidder(B), origin=origin), UPLOAD)
    assert signed[0].payload["origin"]["addr"] == "203.0.113.7"
    assert signed[0].audience == [bidder_tag(B)]
    with pytest.raises(ValueError):
        Origin(machine="not hex")


# --- decisions the API asks for without a command ---------------------------------------------------


def _outcome(call: Callable[..., object], *args: Any) -> tuple[type, str] | None:
    try:
        call(*args)
    except Refusal as exc:
        return type(exc), exc.line()
    return None


def test_may_upload_refuses_exactly_what_an_upload_at_that_instant_would() -> None:
    draft = Hall()
    open_ = Hall().to_sign_in()
    paused = Hall().to_sign_in()
    paused.run(Suspend(actor=HOST, reason="机房断电"), UPLOAD)
    sealed = Hall().to_sealed()
    cases = [
        (draft, T0),
        (open_, UPLOAD),
        (open_, DEADLINE - US),
        (open_, DEADLINE),  # the scheduler has not fired: server time has closed uploads anyway
        (paused, UPLOAD),
        (sealed, DEADLINE + SECOND),
    ]
    seen = set()
    for hall, at in cases:
        for actor in (bidder(A), HOST, SUP):
            cmd = upload(A, at).model_copy(update={"actor": actor})
            expected = _outcome(decide, hall.state, cmd, at)
            assert _outcome(may_upload, hall.state, actor, at) == expected, (hall.status, at)
            seen.add(expected[0] if expected else None)
    assert seen == {
        None,
        E.NotAllowedInState,
        E.NotPermitted,
        E.DeadlinePassed,
    }


def test_rule_03_a_bid_not_sealed_to_the_registered_certificate_is_refused() -> None:
    check_recipient(True)
    with pytest.raises(Refusal) as info:
        check_recipient(False)
    # The answer the API has always given (crypto.errors.NotARecipient's code and status).
    assert (info.value.code, info.value.status) == ("ENVELOPE_NOT_FOR_RECIPIENT", 422)
    assert "投标文件未使用您登记的加密证书加密" in info.value.line()
    assert "the bid is not sealed to your registered encryption certificate" in info.value.line()
    assert "加密证书" in info.value.zh and info.value.en


def outage(down_from: datetime, down_until: datetime) -> PlatformOutage:
    return PlatformOutage(actor=SERVER, down_from=down_from, down_until=down_until)


def test_rule_08_an_outage_in_the_decryption_window_extends_it_and_is_the_platforms_fault() -> None:
    """Downtime fairness: bidders get back the time the platform was down, and a bid still not
    decrypted is withdrawn (撤回, platform), never revoked (撤销, bidder)."""
    hall = Hall().to_decrypting((A, B, C))
    hall.run(decrypted(A, DEC_OPEN + SECOND), DEC_OPEN + SECOND)
    down_from = DEC_CLOSE - timedelta(minutes=5)
    down_until = DEC_CLOSE + timedelta(minutes=3)  # the window ran out while the server was down
    hall.refused(
        outage(down_from, down_until).model_copy(update={"actor": HOST}), down_until, E.NotPermitted
    )
    events = hall.run(outage(down_from, down_until), down_until)
    assert types(events) == ["platform_outage", "incident_recorded", "incident_recorded"]
    assert events[0].audience == ["all"]
    assert events[0].payload == {
        "window": "decryption",
        "down_from": iso(down_from),
        "down_until": iso(down_until),
        "extended_seconds": 480.0,
    }
    assert [e.payload["bidders"] for e in events[1:]] == [[B], [C]]  # A had decrypted
    assert [e.audience for e in events[1:]] == [[bidder_tag(B), "staff"], [bidder_tag(C), "staff"]]
    assert hall.state.decrypt_closes_at == DEC_CLOSE + timedelta(minutes=8)
    # The same outage reported again (a second process, a second restart) changes nothing.
    assert hall.run(outage(down_from, down_until), down_until + SECOND) == []
    # B decrypts in the extended window; C never sends its key.
    later = DEC_CLOSE + timedelta(minutes=4)
    hall.run(decrypted(B, later), later)
    assert hall.run(Tick(actor=SERVER), DEC_CLOSE + timedelta(minutes=7)) == []
    closed = hall.run(Tick(actor=SERVER), DEC_CLOSE + timedelta(minutes=8))
    assert types(closed) == ["decryption_closed", "bid_withdrawn", "table_published"]
    assert closed[1].payload["bidder"] == C
    assert closed[1].payload["evidence"]["finding"] == "platform_fault"


def test_rule_08_an_outage_outside_an_open_window_changes_nothing() -> None:
    hall = Hall().to_decrypting((A, B, C))
    # Began after the window had closed (the scheduler had not fired yet): the window stays closed.
    assert hall.run(outage(DEC_CLOSE, DEC_CLOSE + MINUTE), DEC_CLOSE + MINUTE) == []
    # Took no time.
    assert hall.run(outage(DEC_OPEN, DEC_OPEN), DEC_OPEN + SECOND) == []
    assert hall.state.decrypt_closes_at == DEC_CLOSE
    # Before the deadline the outage is not the decryption's: not allowed in that status.
    early = Hall().to_sign_in()
    early.refused(outage(UPLOAD, UPLOAD + MINUTE), UPLOAD + MINUTE, E.NotAllowedInState)


def test_rule_08_an_outage_in_the_confirmation_window_extends_it() -> None:
    hall = Hall().to_confirming((A, B, C))
    closes = hall.state.confirm_closes_at
    assert closes is not None
    events = hall.run(outage(closes - MINUTE, closes + MINUTE), closes + MINUTE)
    assert types(events) == ["platform_outage"]  # silence is consent: nobody's fault to record
    assert hall.state.confirm_closes_at == closes + 2 * MINUTE


def test_rule_08_a_failed_decryption_is_the_platforms_fault_only_for_platform_codes() -> None:
    assert failure_cause("ENVELOPE_MISSING") == "platform"
    assert failure_cause("PLATFORM_IO") == "platform"
    assert failure_cause("SUMMARY_LOT_MISMATCH") == "bidder"
    for crypto_code in ("KEY_UNWRAP_FAILED", "ENVELOPE_TAMPERED", "SIGNATURE_INVALID", "X"):
        assert failure_cause(crypto_code) == "bidder"
    assert FAILURE_CAUSE == {
        "ENVELOPE_MISSING": "platform",
        "PLATFORM_IO": "platform",
        "SUMMARY_LOT_MISMATCH": "bidder",
    }


def test_deposit_is_valid_from_the_required_amount_and_says_why_not() -> None:
    state = Hall(timetable(security_required_fen=500_000)).state
    assert deposit_security(state, 500_000, "") == Security(
        kind="deposit", status="valid", amount_fen=500_000, detail=""
    )
    assert deposit_security(state, 499_999, "") == Security(
        kind="deposit",
        status="invalid",
        amount_fen=499_999,
        detail="below the required 500000 fen / 低于要求金额",
    )
    short = deposit_security(state, 1, "BANK-REF-9")
    assert (short.status, short.detail) == ("invalid", "BANK-REF-9")
    assert deposit_security(Hall().state, 0, "").status == "valid"  # nothing required


def test_record_is_due_once_confirmations_closed_and_every_objection_answered() -> None:
    hall = Hall().to_confirming()
    assert not record_due(hall.state)
    hall.run(Object(actor=bidder(B), text="报价读错"), CONF_OPEN + SECOND)
    hall.run(Tick(actor=SERVER), CONF_CLOSE)
    assert hall.state.record_pending and not record_due(hall.state)
    hall.run(Reply(actor=HOST, objection_id=1, text="已核对，无误"), CONF_CLOSE + SECOND)
    assert record_due(hall.state)
    hall.run(GenerateRecord(actor=SERVER, record_sha256="a" * 64, signature="s"), CONF_CLOSE)
    assert not record_due(hall.state)


# --- the machine as the server sees it --------------------------------------------------------------


def test_opening_machine_answers_the_servers_questions() -> None:
    machine = MACHINES["opening"]
    assert machine is MACHINE and machine.kind == "opening" and machine.state is OpeningState
    hall = Hall().to_sign_in()
    assert machine.before_deadline(hall.state) and machine.before_deadline(Hall().state)
    assert machine.supervision(hall.state) == {"deadline": "2026-11-21T02:00:00Z"}
    hall.run(machine.join("supervisor", SUP.id), UPLOAD)
    assert machine.present(hall.state) == [("supervisor", SUP.id)]
    hall.run(Suspend(actor=HOST, reason="网络故障"), UPLOAD)
    assert machine.before_deadline(hall.state)  # by the status it was suspended from
    assert machine.next_due(hall.state) is None  # a pause stops every clock
    hall.run(Resume(actor=HOST, reason="恢复"), UPLOAD)
    assert machine.next_due(hall.state) == DEADLINE
    hall.run(machine.tick(), DEADLINE)
    assert hall.status == "failed" and not machine.before_deadline(hall.state)  # no bids: 流标
    hall.run(machine.leave("supervisor", SUP.id), DEADLINE)
    assert machine.present(hall.state) == []
    assert machine.link("room", "NJ-01", True) is None
    # after the deadline a company without a bid is no party to the opening (attack 7)
    assert machine.viewer_tags(hall.state, "bidder", A) is None
    assert machine.viewer_tags(hall.state, "host", HOST.id) == frozenset({"staff", "host"})
    assert not machine.record_pending(hall.state)


def test_every_command_has_one_row_in_the_table() -> None:
    assert set(COMMANDS) == set(COMMAND_TYPES) | {RaiseSignals}
    # A pause lets through only what its row allows: presence, time, objections, resuming.
    paused = {c.__name__ for c, rule in COMMANDS.items() if "suspended" in rule.states}
    assert paused == {"Tick", "Join", "Leave", "Object", "Resume", "RaiseSignals"}
