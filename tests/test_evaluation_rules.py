"""The evaluation rules of DESIGN.md section 6 (``# Eval rule N`` in ``server.domain.evaluation``)
as specifications of the pure state machine.

Pure: no server, no database, no clock. An :class:`Evaluation` holds one session's state and
drives it with ``decide`` + ``evolve`` at instants the test chooses; states are built by folding
the events the commands cause, from a fresh :class:`EvaluationState` with a small pool of experts
in three cities, three sites of one room each, and fixed random values.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.canonical import canonical_json
from schemas.common import uscc_check_char
from schemas.events import NewEvent
from schemas.experts import DrawRequest, DrawResult, Expert, Room, Site
from schemas.scoring import PriceAdjustment
from schemas.time import iso, parse_iso
from server.domain import draw as D
from server.domain import errors as E
from server.domain import evaluation as EV
from server.domain import scoring as SC
from server.domain.errors import Refusal
from server.domain.evaluation import (
    SERVER,
    SUSPEND_LIMIT,
    Actor,
    AddEntropy,
    BeginDraw,
    BidEntry,
    CallRescore,
    CloseStage,
    Command,
    Decline,
    Draw,
    EvalConfig,
    EvaluationState,
    ExpertSignIn,
    GenerateReport,
    Join,
    Leave,
    NoKey,
    RaiseSignals,
    RecordSegment,
    RefuseToSign,
    Replace,
    ReportDecline,
    RequestReplacement,
    RequestSignature,
    Resume,
    RoomLink,
    SignReport,
    StartEvaluation,
    Status,
    SubmitSheet,
    Summarize,
    Suspend,
    Tick,
    Timetable,
    Vote,
    Warn,
    decide,
    evolve,
    next_due,
    viewer_tags,
)
from server.domain.opening import sha256_json
from tests.support.rules import METHOD, REVIEW_ITEMS, as_record, types

# --- the cast -------------------------------------------------------------------------------------

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 Asia/Shanghai: the draw
CONVENE = T0 + timedelta(hours=1)  # 集合时间
GRACE = 30
DUE = CONVENE + timedelta(minutes=GRACE)  # not signed in by then: absent
SIGN_AT = CONVENE - timedelta(minutes=10)
US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def credit_code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


A = credit_code("91350100M000100Y4")
B = credit_code("91320000MA02BBBB2")
C = credit_code("91440300MA03CCCC3")
D4 = credit_code("91110000MA04DDDD4")  # a company the request itself asks to avoid
TENDERER = credit_code("91320100MA05TTTT5")
BIDS = (A, B, C)
NAMES = {A: "闽甲建设有限公司", B: "苏乙工程有限公司", C: "粤丙集团有限公司"}
TENDERER_NAME = "南京市政建设集团（有限公司）"
PRICES = {A: 100_000_000, B: 98_000_000, C: 103_000_000}

LEAD_CITY, SZ_CITY, WX_CITY = "320100", "320500", "320200"
SITES = [
    Site(id="NJ", name="南京", city=LEAD_CITY, rooms=[Room(id="NJ-01")]),
    Site(id="SZ", name="苏州", city=SZ_CITY, rooms=[Room(id="SZ-01")]),
    Site(id="WX", name="无锡", city=WX_CITY, rooms=[Room(id="WX-01")]),
]
ROOM_IDS = ("NJ-01", "SZ-01", "WX-01")


def _expert(n: int, city: str, **changes: Any) -> Expert:
    fields: dict[str, Any] = {
        "id": f"E{n:03d}",
        "name": f"专家{n:03d}",
        "categories": [f"A08.01.{1 + n % 3:02d}"],
        "city": city,
        "employer": f"某设计院{n}",
        "contact": f"1390000{n:04d}",
    }
    fields.update(changes)
    return Expert(**fields)


# Experts 91..95 sit in the lead city (always in the draw's region) and must always be avoided:
# they work for a bidder (by credit code, or by name only), for the tenderer (by code, or by a
# differently written name), or for the company the request names.
AVOIDED = {
    "E091": {"employer": "闽甲建设", "employer_credit_code": A},
    "E092": {"employer": "苏乙工程 有限公司"},
    "E093": {"employer": "南京市政建设集团", "employer_credit_code": TENDERER},
    "E094": {"employer": "南京市政建设集团(有限公司)"},
    "E095": {"employer": "京丁公司", "employer_credit_code": D4},
}
POOL = [
    *(_expert(n, LEAD_CITY) for n in range(1, 11)),
    _expert(11, LEAD_CITY, status="suspended"),
    *(_expert(n, SZ_CITY) for n in range(21, 28)),
    *(_expert(n, WX_CITY) for n in range(31, 38)),
    *(_expert(int(k[1:]), LEAD_CITY, **v) for k, v in AVOIDED.items()),
]
POOL_BLOB = hashlib.sha256(canonical_json(D.pool_snapshot(POOL))).hexdigest()
POOL_IDS = frozenset(e.id for e in POOL)

SERVER_RANDOM = "ef" * 32
SUP_ENTROPY = "ab" * 32
HOST_ENTROPY = "cd" * 32
REPORT_SHA = "5e" * 32

MAXIMA = {"T1": 4000, "C1": 3000}
ITEM_OF = {"qualification": "Q1", "preliminary": "P1"}
THRESHOLD = 1500

HOST = Actor(role="host", id="host-1")
SUP = Actor(role="supervisor", id="sup-1")
CENTRE = Actor(role="centre", id="centre-1")
STATUSES = frozenset(get_args(Status))


def room(room_id: str) -> Actor:
    return Actor(role="room", id=room_id)


def expert(expert_id: str) -> Actor:
    return Actor(role="expert", id=expert_id)


def new_state(**draw_changes: Any) -> EvaluationState:
    draw: dict[str, Any] = {
        "session_id": "P-2026-001~L1~eval~0001",
        "lead_site_id": "NJ",
        "secondary_sites": 1,
        "categories": [{"category": "A08.01", "count": 5, "spares": 3}],
        "min_outside_lead": 2,
        "avoid_credit_codes": [D4],  # bidders and the tenderer omitted on purpose (Eval rule 3)
    }
    draw.update(draw_changes)
    return EvaluationState(
        session_id="P-2026-001~L1~eval~0001",
        lot_id="P-2026-001/L1",
        opening_session_id="P-2026-001~L1",
        title="市政道路改造工程 01 标段 评标",
        timetable=Timetable(convene_at=CONVENE, grace_minutes=GRACE),
        config=EvalConfig.model_validate(
            {
                "method": METHOD,
                "review_items": REVIEW_ITEMS,
                "draw": draw,
                "rescore_threshold_points": THRESHOLD,
            }
        ),
        tenderer_credit_code=TENDERER,
        tenderer_name=TENDERER_NAME,
        bids={
            b: BidEntry(
                bidder=b,
                name=NAMES[b],
                price_fen=PRICES[b],
                envelope_sha256=hashlib.sha256(b.encode()).hexdigest(),
                summary={"bidder_name": NAMES[b], "price_fen": PRICES[b]},
            )
            for b in BIDS
        },
    )


def draw_cmd(server_random: str = SERVER_RANDOM, actor: Actor = SERVER) -> Draw:
    return Draw(
        actor=actor, server_random=server_random, pool=POOL, sites=SITES, pool_blob=POOL_BLOB
    )


def sign_in_cmd(member: EV.Member, room_id: str | None = None) -> ExpertSignIn:
    return ExpertSignIn(
        actor=room(room_id or member.room_id),
        expert_id=member.id,
        name=f"专家{member.id}",
        cert_sha256=hashlib.sha256(f"cert/{member.id}".encode()).hexdigest(),
        signature=f"sig-{member.id}",
        nonce="n-1",
    )


def review(
    expert_id: str, stage: str, bidders: Iterable[str], fail: dict[str, str] | None = None
) -> dict[str, Any]:
    fail = fail or {}
    return {
        "expert": expert_id,
        "stage": stage,
        "verdicts": [
            {
                "bidder": b,
                "item": ITEM_OF[stage],
                "passed": b not in fail,
                "reason": fail.get(b, ""),
            }
            for b in bidders
        ],
    }


def scores(
    expert_id: str,
    bidders: Iterable[str],
    t1: int = 3000,
    c1: int = 2500,
    **overrides: Any,
) -> dict[str, Any]:
    """A score sheet; ``overrides`` maps ``<bidder>_<criterion>`` to points."""
    return {
        "expert": expert_id,
        "stage": "detailed",
        "scores": [
            {"bidder": b, "criterion": c, "points_x100": overrides.get(f"{b}_{c}", v)}
            for b in bidders
            for c, v in (("T1", t1), ("C1", c1))
        ],
    }


def sheet_cmd(expert_id: str, stage: str, content: dict[str, Any]) -> SubmitSheet:
    return SubmitSheet(
        actor=expert(expert_id), stage=stage, content=content, signature=f"sig-{expert_id}-{stage}"
    )


def text_of(event: NewEvent) -> str:
    return canonical_json({"actor": event.actor, "payload": event.payload}).decode()


class Evaluation:
    """One evaluation driven through ``decide`` and ``evolve``; keeps the event log."""

    def __init__(self, state: EvaluationState | None = None) -> None:
        self.state = state or new_state()
        self.start = self.state
        self.log: list[tuple[NewEvent, datetime]] = []
        self.now = T0

    def copy(self) -> Evaluation:
        other = Evaluation(self.state)
        other.start, other.log, other.now = self.start, list(self.log), self.now
        return other

    def run(self, cmd: Command, at: datetime | None = None) -> list[NewEvent]:
        if at is not None:
            self.now = at
        events = decide(self.state, cmd, self.now)
        for event in events:
            self.state = evolve(self.state, event, self.now)
            self.log.append((event, self.now))
        return events

    def refused(self, cmd: Command, refusal: type[Refusal], at: datetime | None = None) -> Refusal:
        """Assert ``cmd`` is refused with exactly ``refusal`` and leaves the state as it was."""
        before = self.state.model_copy(deep=True)
        with pytest.raises(Refusal) as info:
            decide(self.state, cmd, at or self.now)
        assert type(info.value) is refusal, info.value
        assert self.state == before
        return info.value

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def ids(self) -> list[str]:
        """The committee's member ids, sorted."""
        return sorted(m.id for m in self.state.committee())

    def member(self, member_id: str) -> EV.Member:
        return self.state.members[member_id]

    @property
    def result(self) -> DrawResult:
        assert self.state.draw is not None and self.state.draw.result is not None
        return DrawResult.model_validate(self.state.draw.result)

    def seen_by(self, actor: Actor) -> list[NewEvent]:
        tags = viewer_tags(actor.role, actor.id)
        return [
            e for seq, (e, at) in enumerate(self.log, 1) if as_record(e, seq, at).visible_to(tags)
        ]

    # --- getting to a phase ---

    def to_drawing(self, server_random: str = SERVER_RANDOM) -> Evaluation:
        self.run(Join(actor=SUP), T0)
        self.run(Join(actor=HOST), T0)
        commitment = D.commitment(bytes.fromhex(server_random))
        self.run(BeginDraw(actor=HOST, commitment=commitment), T0 + SECOND)
        self.run(AddEntropy(actor=SUP, value=SUP_ENTROPY), T0 + 2 * SECOND)
        self.run(AddEntropy(actor=HOST, value=HOST_ENTROPY), T0 + 3 * SECOND)
        assert self.status == "drawing"
        return self

    def to_convening(self, server_random: str = SERVER_RANDOM) -> Evaluation:
        self.to_drawing(server_random)
        self.run(draw_cmd(server_random), T0 + 4 * SECOND)
        assert self.status == "convening"
        return self

    def sign_in(self, member_id: str, at: datetime | None = None) -> list[NewEvent]:
        return self.run(sign_in_cmd(self.member(member_id)), at)

    def to_signed_in(self) -> Evaluation:
        self.to_convening()
        for i, mid in enumerate(self.ids):
            self.sign_in(mid, SIGN_AT + i * SECOND)
        return self

    def to_evaluating(self) -> Evaluation:
        self.to_signed_in()
        self.run(StartEvaluation(actor=HOST), CONVENE)
        assert self.status == "evaluating" and self.state.stage == "chair"
        return self

    def to_qualification(self) -> Evaluation:
        """Evaluating, the chair (the first member) elected, qualification open."""
        self.to_evaluating()
        chair = self.ids[0]
        for mid in self.ids[:3]:
            self.run(Vote(actor=expert(mid), candidate=chair), CONVENE + MINUTE)
        assert self.state.chair == chair and self.state.stage == "qualification"
        return self

    @property
    def chair(self) -> Actor:
        assert self.state.chair is not None
        return expert(self.state.chair)

    def pass_stage(self, fail: dict[str, str] | None = None) -> None:
        """Every member passes every bid still in, but fails those in ``fail``; the chair closes."""
        stage = self.state.stage
        assert stage in ITEM_OF
        bidders = self.bids_in(stage)
        for mid in self.ids:
            self.run(sheet_cmd(mid, stage, review(mid, stage, bidders, fail)))
        self.run(CloseStage(actor=self.chair))

    def bids_in(self, stage: str) -> list[str]:
        bids = sorted(self.state.bids)
        for earlier in self.state.stages():
            if earlier == stage:
                break
            passed = set(self.state.outcomes.get(earlier, {}).get("passed", []))
            bids = [b for b in bids if b in passed]
        return bids

    def to_detailed(self) -> Evaluation:
        self.to_qualification()
        self.now = CONVENE + 10 * MINUTE
        self.pass_stage()
        self.pass_stage()
        assert self.state.stage == "detailed"
        return self

    def to_summarizing(self) -> Evaluation:
        self.to_detailed()
        for i, mid in enumerate(self.ids):
            self.run(sheet_cmd(mid, "detailed", scores(mid, BIDS, 3000 + 100 * i)))
        self.run(CloseStage(actor=self.chair))
        assert self.status == "summarizing"
        return self

    def to_signing(self) -> Evaluation:
        self.to_summarizing()
        self.run(Summarize(actor=self.chair))
        assert self.status == "signing"
        self.run(GenerateReport(actor=SERVER, report_sha256=REPORT_SHA, signature="srv"))
        assert self.state.report_sha256 == REPORT_SHA
        return self


@functools.cache
def _phase(name: str) -> Evaluation:
    ev = Evaluation()
    if name != "draft":
        getattr(ev, f"to_{name}")()
    return ev


def phase(name: str) -> Evaluation:
    """A (cached) evaluation in the named phase; states are values, so a shallow copy will do."""
    return _phase(name).copy()


# --- Eval rule 1 ----------------------------------------------------------------------------------


def test_eval_rule_01_draw_needs_commitment_then_both_entropies() -> None:
    ev = Evaluation()
    ev.run(Join(actor=HOST), T0)
    # nothing before the server has committed to its random value
    ev.refused(AddEntropy(actor=HOST, value=HOST_ENTROPY), E.NotAllowedInState)
    ev.refused(draw_cmd(), E.NotAllowedInState)
    ev.refused(BeginDraw(actor=SUP, commitment="0" * 64), E.NotPermitted)
    ev.refused(BeginDraw(actor=room("NJ-01"), commitment="0" * 64), E.NotPermitted)
    commitment = D.commitment(bytes.fromhex(SERVER_RANDOM))
    events = ev.run(BeginDraw(actor=HOST, commitment=commitment), T0 + SECOND)
    assert types(events) == ["draw_committed"] and events[0].audience == ["all"]
    assert ev.status == "drawing" and ev.state.draw is not None
    assert ev.state.draw.commitment == commitment
    ev.refused(BeginDraw(actor=HOST, commitment=commitment), E.NotAllowedInState)
    # then both entropies, the supervisor's from a supervisor in the session
    ev.refused(draw_cmd(), EV.EntropyMissing)
    ev.refused(AddEntropy(actor=SUP, value=SUP_ENTROPY), E.SupervisorAbsent)
    ev.refused(AddEntropy(actor=room("NJ-01"), value=SUP_ENTROPY), E.NotPermitted)
    ev.refused(AddEntropy(actor=CENTRE, value=SUP_ENTROPY), E.NotPermitted)
    ev.run(Join(actor=SUP))
    ev.run(AddEntropy(actor=SUP, value=SUP_ENTROPY))
    ev.refused(AddEntropy(actor=SUP, value=HOST_ENTROPY), EV.EntropyGiven)
    ev.refused(draw_cmd(), EV.EntropyMissing)
    ev.run(AddEntropy(actor=HOST, value=HOST_ENTROPY))
    ev.refused(AddEntropy(actor=HOST, value=HOST_ENTROPY), EV.EntropyGiven)
    assert ev.state.draw.entropy == {"supervisor": SUP_ENTROPY, "host": HOST_ENTROPY}
    # only the server draws
    for actor in (HOST, SUP, CENTRE):
        ev.refused(draw_cmd(actor=actor), E.NotPermitted)
    events = ev.run(draw_cmd(), T0 + 2 * SECOND)
    assert ev.status == "convening"
    seed = D.seed(
        bytes.fromhex(SERVER_RANDOM), bytes.fromhex(SUP_ENTROPY), bytes.fromhex(HOST_ENTROPY)
    )
    assert ev.state.draw.seed == seed.hex()
    drawn = next(e for e in events if e.type == "committee_drawn")
    assert drawn.payload["seed"] == seed.hex() and drawn.payload["members"] == 5
    ev.refused(draw_cmd(), E.NotAllowedInState)
    ev.refused(AddEntropy(actor=HOST, value=HOST_ENTROPY), E.NotAllowedInState)


def test_eval_rule_01_revealed_value_must_open_the_commitment() -> None:
    ev = phase("drawing")
    other = "ee" * 32
    assert D.commitment(bytes.fromhex(other)) != ev.state.draw.commitment  # type: ignore[union-attr]
    ev.refused(draw_cmd(other), EV.CommitmentMismatch)
    assert ev.status == "drawing"
    events = ev.run(draw_cmd(SERVER_RANDOM))
    completed = next(e for e in events if e.type == "draw_completed")
    assert completed.payload["server_random"] == SERVER_RANDOM
    assert D.commitment(bytes.fromhex(SERVER_RANDOM)) == ev.result.commitment


def test_eval_rule_01_draw_needs_a_supervisor_present_when_it_runs() -> None:
    ev = phase("drawing")
    ev.run(Leave(actor=SUP))
    ev.refused(draw_cmd(), E.SupervisorAbsent)
    ev.run(Join(actor=SUP))
    ev.run(draw_cmd())
    assert ev.status == "convening"


def test_eval_rule_01_anyone_can_recompute_the_committee_from_the_archive() -> None:
    ev = phase("convening")
    completed = next(e for e, _ in ev.log if e.type == "draw_completed")
    request = DrawRequest.model_validate(completed.payload["request"])
    server_random = bytes.fromhex(completed.payload["server_random"])
    sup, host = bytes.fromhex(SUP_ENTROPY), bytes.fromhex(HOST_ENTROPY)
    claimed = DrawResult.model_validate(completed.payload["result"])
    problems = D.verify(D.pool_snapshot(POOL), SITES, request, server_random, sup, host, claimed)
    assert problems == []
    assert D.run_draw(POOL, SITES, request, server_random, sup, host) == claimed
    assert completed.payload["pool_blob"] == POOL_BLOB
    # the members the state holds are exactly the committee drawn
    assert ev.ids == sorted(m.expert_id for m in claimed.committee)


# --- Eval rule 2 ----------------------------------------------------------------------------------

PUBLIC = frozenset({"all", "staff", "host"})
SECRET_SITES = frozenset({"SZ", "WX"})  # which secondary site was drawn is secret too


def assert_identities_hidden_until_sign_in(log: Iterable[tuple[NewEvent, datetime]]) -> None:
    """Member ids, room ids and drawn secondary sites appear only in events whose audience lacks
    ``all``/``staff``/``host``, until the member signs in (which reveals the member's own id,
    room and site)."""
    secret = set(POOL_IDS) | set(ROOM_IDS) | set(SECRET_SITES)
    revealed: set[str] = set()
    for event, _at in log:
        if event.type == "member_signed_in":
            p = event.payload
            revealed |= {p["expert_id"], p["room_id"], p["site_id"]}
        if PUBLIC & set(event.audience):
            text = text_of(event)
            leaked = {s for s in secret - revealed if s in text}
            assert not leaked, (event, leaked)


def test_eval_rule_02_draw_events_name_members_to_the_supervisor_only() -> None:
    ev = phase("convening")
    ids = ev.ids
    result = ev.result
    # the draw's events: the identities and rooms went to the supervisor (and each room its own)
    completed = next(e for e, _ in ev.log if e.type == "draw_completed")
    assert completed.audience == ["supervisor"]
    for e, _ in ev.log:
        if e.type == "member_drawn":
            assert e.audience == ["supervisor"]
        if e.type == "room_assigned":
            assert e.audience == ["supervisor", f"room:{e.payload['room_id']}"]
    host_saw = " ".join(text_of(e) for e in ev.seen_by(HOST))
    for mid in ids:
        assert mid not in host_saw
    for r in (result.lead, *result.secondary_sites):
        assert r.room_id not in host_saw
    sup_saw = " ".join(text_of(e) for e in ev.seen_by(SUP))
    assert all(mid in sup_saw for mid in ids)
    # a decline, an absence and the replacements stay as hidden
    ev.run(Decline(actor=CENTRE, expert_id=ids[0], reason="出差在外"), SIGN_AT - MINUTE)
    ids = ev.ids
    for i, mid in enumerate(ids[1:]):
        ev.sign_in(mid, SIGN_AT + i * SECOND)
    ev.run(Tick(actor=SERVER), DUE)
    assert ev.member(ids[0]).status == "absent"
    assert_identities_hidden_until_sign_in(ev.log)
    # signing in reveals the member (to all), and no one else
    late = ev.member(ids[0]).replaced_by
    assert late is not None
    events = ev.sign_in(late, DUE + MINUTE)
    assert types(events) == ["member_signed_in"] and events[0].audience == ["all"]
    ev.run(StartEvaluation(actor=HOST))
    assert ev.status == "evaluating"
    assert_identities_hidden_until_sign_in(ev.log)
    host_saw = " ".join(text_of(e) for e in ev.seen_by(HOST))
    assert all(mid in host_saw for mid in ev.ids)
    assert ids[0] not in host_saw  # absent, never signed in: still unnamed to the host


def test_eval_rule_02_a_no_key_record_does_not_name_the_expert_to_the_host() -> None:
    ev = phase("convening")
    mid = ev.ids[0]
    ev.run(NoKey(actor=room(ev.member(mid).room_id), expert_id=mid), SIGN_AT)
    assert ev.member(mid).status == "no_key"
    assert_identities_hidden_until_sign_in(ev.log)


def test_eval_rule_02_rooms_learn_only_their_own_assignment() -> None:
    ev = phase("convening")
    result = ev.result
    drawn_rooms = {r.room_id for r in (result.lead, *result.secondary_sites)}
    for room_id in ROOM_IDS:
        seen = ev.seen_by(room(room_id))
        assigned = [e.payload["room_id"] for e in seen if e.type == "room_assigned"]
        assert assigned == ([room_id] if room_id in drawn_rooms else [])
        assert not [e for e in seen if e.type in ("member_drawn", "draw_completed")]


# --- Eval rule 3 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("server_random", [SERVER_RANDOM, "01" * 32, "7f" * 32])
def test_eval_rule_03_bidders_and_tenderer_always_avoided(server_random: str) -> None:
    ev = Evaluation()
    # the request omits the bidders and the tenderer; it names one other company
    assert ev.state.config.draw.avoid_credit_codes == [D4]
    assert ev.state.config.draw.avoid_names == []
    ev.to_convening(server_random)
    completed = next(e for e, _ in ev.log if e.type == "draw_completed")
    request = completed.payload["request"]
    assert request["avoid_credit_codes"] == sorted({A, B, C, D4, TENDERER})
    assert set(request["avoid_names"]) == {*NAMES.values(), TENDERER_NAME}
    result = ev.result
    # all five are in the lead city, so always in the draw's region, and all five left out
    assert result.counts.avoided == len(AVOIDED)
    spares = {s.expert_id for c in result.categories for s in c.spares}
    chosen = {m.expert_id for m in result.committee} | spares
    assert not chosen & set(AVOIDED)
    assert not set(ev.state.members) & set(AVOIDED)


def test_eval_rule_03_avoidance_holds_for_replacements_too() -> None:
    ev = phase("convening")
    for i in range(3):  # three spares: every one of them is called on
        mid = next(m for m in ev.ids if ev.member(m).status == "drawn")
        ev.run(Decline(actor=HOST, expert_id=mid, reason=f"无法联系 {i}"), T0 + (i + 1) * MINUTE)
    assert not set(ev.state.members) & set(AVOIDED)
    mid = next(m for m in ev.ids if ev.member(m).status == "drawn")
    ev.refused(Decline(actor=HOST, expert_id=mid, reason="无法联系"), D.NoSpareLeft)


# --- Eval rule 4 ----------------------------------------------------------------------------------


def test_eval_rule_04_start_needs_supervisor_and_every_member_signed_in() -> None:
    ev = phase("convening")
    ids = ev.ids
    ev.refused(StartEvaluation(actor=HOST), EV.NotSignedIn, SIGN_AT)
    for i, mid in enumerate(ids[:-1]):
        ev.sign_in(mid, SIGN_AT + i * SECOND)
    ev.refused(StartEvaluation(actor=HOST), EV.NotSignedIn)
    ev.sign_in(ids[-1])
    ev.run(Leave(actor=SUP))
    ev.refused(StartEvaluation(actor=HOST), E.SupervisorAbsent)
    ev.run(Join(actor=SUP))
    for actor in (SUP, CENTRE, SERVER, room(ev.member(ids[0]).room_id), expert(ids[0])):
        ev.refused(StartEvaluation(actor=actor), E.NotPermitted)
    events = ev.run(StartEvaluation(actor=HOST), CONVENE)
    assert types(events) == ["evaluation_started"] and events[0].payload["members"] == 5
    assert ev.status == "evaluating" and ev.state.stage == "chair"
    ev.refused(StartEvaluation(actor=HOST), E.NotAllowedInState)


def test_eval_rule_04_no_start_before_the_draw() -> None:
    ev = Evaluation()
    ev.run(Join(actor=SUP), T0)
    ev.refused(StartEvaluation(actor=HOST), E.NotAllowedInState)
    ev = phase("drawing")
    ev.refused(StartEvaluation(actor=HOST), E.NotAllowedInState)


# --- Eval rule 5 ----------------------------------------------------------------------------------


def test_eval_rule_05_absent_at_deadline_replaced_by_next_spare() -> None:
    ev = phase("convening")
    result = ev.result
    spares = [s.expert_id for s in result.categories[0].spares]
    # a member from the lead city: any spare keeps the region rule, so the next one is taken
    absent = next(m.expert_id for m in result.committee if m.site_id == result.lead.site_id)
    for i, mid in enumerate(m for m in ev.ids if m != absent):
        ev.sign_in(mid, SIGN_AT + i * SECOND)
    assert next_due(ev.state) == DUE
    assert ev.run(Tick(actor=SERVER), DUE - US) == []
    events = ev.run(Tick(actor=SERVER), DUE)
    assert types(events) == ["member_absent", "member_replaced"]
    assert events[1].payload["by"] == spares[0]
    assert ev.member(absent).status == "absent"
    assert ev.member(absent).replaced_by == spares[0]
    new = ev.member(spares[0])
    assert new.status == "drawn" and new.replaces == absent
    assert parse_iso(new.due_by or "") == DUE + timedelta(minutes=GRACE)
    assert len(ev.state.committee()) == 5 and absent not in ev.ids
    assert ev.run(Tick(actor=SERVER), DUE + MINUTE) == []  # each absence fires once
    # the replacement is late in turn: absent, and the spare after takes the seat
    assert next_due(ev.state) == DUE + timedelta(minutes=GRACE)
    events = ev.run(Tick(actor=SERVER), DUE + timedelta(minutes=GRACE))
    assert types(events) == ["member_absent", "member_replaced"]
    assert events[1].payload["by"] == spares[1]
    assert DrawResult.model_validate(ev.state.draw.result).replacements[-1].reason  # type: ignore[union-attr]


def test_eval_rule_05_absence_recorded_even_when_no_spare_is_left() -> None:
    ev = phase("convening")
    originals = set(ev.ids)
    for i in range(3):  # the three spares are used up
        mid = next(m for m in ev.ids if ev.member(m).status == "drawn")
        ev.run(Decline(actor=HOST, expert_id=mid, reason="无法联系"), T0 + (i + 1) * MINUTE)
    absent = next(m for m in ev.ids if m in originals)
    for mid in ev.ids:
        if mid != absent:
            ev.sign_in(mid, SIGN_AT)
    events = ev.run(Tick(actor=SERVER), DUE)  # time alone cannot be refused
    assert "member_absent" in types(events)
    assert ev.member(absent).status == "absent"
    due = next_due(ev.state)
    assert due is None or due > DUE


def test_eval_rule_05_absent_owner_representative_is_recorded() -> None:
    state = new_state(categories=[{"category": "A08.01", "count": 4, "spares": 3}], owner_reps=1)
    config = state.config.model_copy(update={"owner_reps": ["R001"]})
    ev = Evaluation(state.model_copy(update={"config": config})).to_convening()
    assert "R001" in ev.ids and ev.member("R001").kind == "owner_rep"
    for mid in ev.ids:
        if mid != "R001":
            ev.sign_in(mid, SIGN_AT)
    events = ev.run(Tick(actor=SERVER), DUE)
    assert "member_absent" in types(events) and ev.member("R001").status == "absent"


def test_eval_rule_05_replacement_called_before_convening_is_due_with_everyone() -> None:
    ev = phase("convening")
    mid = ev.ids[0]
    ev.run(Decline(actor=CENTRE, expert_id=mid, reason="出差在外"), T0 + 5 * MINUTE)
    spare = ev.member(mid).replaced_by
    assert spare is not None
    assert parse_iso(ev.member(spare).due_by or "") >= DUE
    assert ev.run(Tick(actor=SERVER), CONVENE - MINUTE) == []  # not absent before convening


def test_eval_rule_05_declined_member_replaced_by_next_spare() -> None:
    ev = phase("convening")
    result = ev.result
    spares = [s.expert_id for s in result.categories[0].spares]
    mid = next(m.expert_id for m in result.committee if m.site_id == result.lead.site_id)
    ev.refused(Decline(actor=HOST, expert_id=mid, reason="  "), E.ReasonRequired)
    ev.refused(Decline(actor=SUP, expert_id=mid, reason="出差"), E.NotPermitted)
    ev.refused(Decline(actor=HOST, expert_id="E999", reason="出差"), EV.NotAMember)
    events = ev.run(Decline(actor=HOST, expert_id=mid, reason="出差"), SIGN_AT)
    assert types(events) == ["member_declined", "member_replaced"]
    assert ev.member(mid).status == "declined" and ev.member(mid).replaced_by == spares[0]
    assert ev.refused(Decline(actor=HOST, expert_id=mid, reason="出差"), EV.NotAMember)
    ev.sign_in(spares[0])
    ev.refused(Decline(actor=HOST, expert_id=spares[0], reason="出差"), E.AlreadyDone)


def test_eval_rule_05_late_recorded() -> None:
    ev = phase("convening")
    on_time, at_time, late = ev.ids[:3]
    ev.sign_in(on_time, SIGN_AT)
    ev.sign_in(at_time, CONVENE)
    events = ev.sign_in(late, CONVENE + US)
    assert events[0].payload["late"] is True
    assert ev.member(on_time).late is False and ev.member(at_time).late is False
    assert ev.member(late).late is True
    assert ev.member(late).signed_in_at == iso(CONVENE + US)
    assert ev.member(late).cert_sha256 == hashlib.sha256(f"cert/{late}".encode()).hexdigest()


def test_eval_rule_05_wrong_room_refused() -> None:
    ev = phase("convening")
    mid = ev.ids[0]
    own = ev.member(mid).room_id
    for other in ROOM_IDS:
        if other != own:
            ev.refused(sign_in_cmd(ev.member(mid), other), EV.WrongRoom, SIGN_AT)
            # Eval rule 2 too: another room's member looks like no member at all to a room
            ev.refused(NoKey(actor=room(other), expert_id=mid), EV.NotAMember)
    for actor in (HOST, SUP, CENTRE, expert(mid)):
        cmd = sign_in_cmd(ev.member(mid)).model_copy(update={"actor": actor})
        ev.refused(cmd, E.NotPermitted)
    stranger = sign_in_cmd(ev.member(mid)).model_copy(update={"expert_id": "E999"})
    ev.refused(stranger, EV.NotAMember)
    ev.sign_in(mid, SIGN_AT)
    ev.refused(sign_in_cmd(ev.member(mid)), E.AlreadyDone)


def test_eval_rule_05_no_key_recorded() -> None:
    ev = phase("convening")
    ids = ev.ids
    mid = ids[0]
    at_room = room(ev.member(mid).room_id)
    events = ev.run(NoKey(actor=at_room, expert_id=mid), SIGN_AT)
    assert types(events) == ["member_no_key"] and events[0].payload["expert_id"] == mid
    assert "supervisor" in events[0].audience
    assert ev.member(mid).status == "no_key"
    assert mid in ev.ids  # still on the committee, but blocks the start
    for i, other in enumerate(ids[1:]):
        ev.sign_in(other, SIGN_AT + (i + 1) * SECOND)
    ev.refused(StartEvaluation(actor=HOST), EV.NotSignedIn)
    # not "absent" at the deadline: the missing key is what is recorded
    assert ev.run(Tick(actor=SERVER), DUE) == []
    assert ev.member(mid).status == "no_key"
    ev.refused(Replace(actor=HOST, expert_id=mid, reason=" "), E.ReasonRequired)
    ev.refused(Replace(actor=SUP, expert_id=mid, reason="无CA锁"), E.NotPermitted)
    events = ev.run(Replace(actor=CENTRE, expert_id=mid, reason="无CA锁"))
    assert types(events) == ["member_replaced"]
    assert ev.member(mid).status == "replaced" and mid not in ev.ids
    assert ev.result.replacements[-1].reason == "无CA锁"


def test_eval_rule_05_no_key_not_recorded_against_a_signed_in_member() -> None:
    ev = phase("convening")
    mid = ev.ids[0]
    ev.sign_in(mid, SIGN_AT)
    ev.refused(NoKey(actor=room(ev.member(mid).room_id), expert_id=mid), E.AlreadyDone)


def test_eval_rule_05_replace_refuses_a_signed_in_member() -> None:
    ev = phase("convening")
    mid = ev.ids[0]
    ev.sign_in(mid, SIGN_AT)
    ev.refused(Replace(actor=HOST, expert_id=mid, reason="身体不适"), E.AlreadyDone)


# --- Eval rule 6 ----------------------------------------------------------------------------------


def test_eval_rule_06_chair_needs_a_majority_of_the_committee() -> None:
    ev = phase("evaluating")
    m = ev.ids
    ev.refused(sheet_cmd(m[0], "qualification", review(m[0], "qualification", BIDS)), EV.WrongStage)
    ev.refused(CloseStage(actor=expert(m[0])), EV.NotChair)
    ev.refused(Vote(actor=HOST, candidate=m[0]), E.NotPermitted)
    ev.refused(Vote(actor=expert("E999"), candidate=m[0]), EV.NotAMember)
    ev.refused(Vote(actor=expert(m[0]), candidate="E999"), EV.NotAMember)
    # two of five is not a majority; neither is 2-2-1
    for voter, candidate in ((0, 0), (1, 0), (2, 1), (3, 1), (4, 2)):
        events = ev.run(Vote(actor=expert(m[voter]), candidate=m[candidate]))
        assert types(events) == ["chair_vote"]
        assert ev.state.chair is None and ev.state.stage == "chair"
    # a member changes their vote: three of five
    events = ev.run(Vote(actor=expert(m[2]), candidate=m[0]))
    assert types(events) == ["chair_vote", "chair_elected", "stage_opened"]
    assert events[1].payload == {"chair": m[0], "votes": 3, "of": 5}
    assert events[1].audience == ["all"]
    assert events[2].payload == {"stage": "qualification"}
    assert ev.state.chair == m[0] and ev.state.stage == "qualification"
    ev.refused(Vote(actor=expert(m[3]), candidate=m[3]), EV.WrongStage)
    ev.refused(CloseStage(actor=expert(m[1])), EV.NotChair)


def test_eval_rule_06_votes_of_non_members_and_before_the_start_do_not_count() -> None:
    ev = phase("signed_in")
    mid = ev.ids[0]
    ev.refused(Vote(actor=expert(mid), candidate=mid), E.NotAllowedInState)
    ev = phase("evaluating")
    spare = ev.result.categories[0].spares[0].expert_id
    ev.refused(Vote(actor=expert(spare), candidate=mid), EV.NotAMember)


# --- Eval rule 7 ----------------------------------------------------------------------------------


def test_eval_rule_07_incomplete_or_out_of_range_sheet_refused() -> None:
    ev = phase("qualification")
    mid = ev.ids[1]
    q = "qualification"
    bad: list[tuple[dict[str, Any], type[Refusal]]] = [
        (review(mid, q, (A, B)), SC.SheetIncomplete),
        (review(mid, q, BIDS, {C: "  "}), SC.ReasonRequiredForFail),
        (review(mid, q, (*BIDS, D4)), SC.SheetEntryUnknown),
        (review(mid, q, (A, A, B, C)), SC.SheetEntryDuplicate),
        (review(ev.ids[2], q, BIDS), EV.SheetInvalid),  # someone else's sheet
        (review(mid, "preliminary", BIDS), EV.SheetInvalid),  # another stage's sheet
        ({"expert": mid, "stage": q, "verdicts": "all pass"}, EV.SheetInvalid),
        ({"expert": mid, "stage": q}, EV.SheetInvalid),
        ({**review(mid, q, BIDS), "extra": 1}, EV.SheetInvalid),
        (scores(mid, BIDS), EV.SheetInvalid),
    ]
    passed_as_text = review(mid, q, BIDS)
    passed_as_text["verdicts"][0]["passed"] = "yes"
    bad.append((passed_as_text, EV.SheetInvalid))
    for content, refusal in bad:
        ev.refused(sheet_cmd(mid, q, content), refusal)
    ev.refused(sheet_cmd(mid, "detailed", scores(mid, BIDS)), EV.WrongStage)
    assert q not in ev.state.sheets
    ev.run(sheet_cmd(mid, q, review(mid, q, BIDS, {C: "资质证书已过期"})))
    ev.refused(sheet_cmd(mid, q, review(mid, q, BIDS)), E.AlreadyDone)


def test_eval_rule_07_score_sheet_in_range_and_only_for_bids_still_in() -> None:
    ev = phase("qualification")
    ev.pass_stage(fail={C: "资质证书已过期"})  # C fails qualification by majority
    ev.pass_stage()
    assert ev.state.stage == "detailed" and ev.bids_in("detailed") == sorted((A, B))
    mid = ev.ids[1]
    d = "detailed"
    bad: list[tuple[dict[str, Any], type[Refusal]]] = [
        (scores(mid, (A, B), t1=4001), SC.ScoreOutOfRange),
        (scores(mid, (A, B), **{f"{B}_C1": 3001}), SC.ScoreOutOfRange),
        (scores(mid, (A, B), c1=-1), SC.ScoreOutOfRange),
        (scores(mid, (A,)), SC.SheetIncomplete),
        (scores(mid, BIDS), SC.SheetEntryUnknown),  # C is out
        (scores(mid, (A, B), **{f"{A}_T1": 3000.5}), EV.SheetInvalid),  # integer hundredths
        (scores(mid, (A, B), **{f"{A}_T1": "3000"}), EV.SheetInvalid),
        (scores(mid, (A, B), **{f"{A}_T1": True}), EV.SheetInvalid),
        (review(mid, "qualification", (A, B)), EV.SheetInvalid),
    ]
    incomplete = scores(mid, (A, B))
    incomplete["scores"] = [s for s in incomplete["scores"] if s["criterion"] != "C1"]
    bad.append((incomplete, SC.SheetIncomplete))
    for content, refusal in bad:
        ev.refused(sheet_cmd(mid, d, content), refusal)
    ev.run(sheet_cmd(mid, d, scores(mid, (A, B), t1=4000, c1=0)))  # the bounds are in range
    assert ev.state.sheets[d][mid].round == 1


# --- Eval rule 8 ----------------------------------------------------------------------------------


def test_eval_rule_08_sheet_content_goes_to_author_and_supervisor_only() -> None:
    ev = phase("qualification")
    author = ev.ids[1]
    marker = "营业执照已吊销-唯一标记"
    content = review(author, "qualification", BIDS, {B: marker})
    events = ev.run(sheet_cmd(author, "qualification", content))
    assert types(events) == ["sheet_submitted", "sheet_content"]
    submitted, full = events
    assert marker not in text_of(submitted)
    assert submitted.payload["sha256"] == sha256_json(content)
    assert sorted(full.audience) == sorted(["supervisor", f"expert:{author}"])
    assert full.payload["content"] == content and full.payload["sha256"] == sha256_json(content)
    assert ev.state.sheets["qualification"][author].content == content
    viewers = [HOST, CENTRE, *(expert(m) for m in ev.ids if m != author)]
    viewers += [room(r) for r in ROOM_IDS]
    for viewer in viewers:
        seen = " ".join(text_of(e) for e in ev.seen_by(viewer))
        assert marker not in seen, viewer
        if viewer.role == "expert" or viewer == HOST:
            assert f'"sha256":"{sha256_json(content)}"' in seen  # they learn it was submitted
    for viewer in (SUP, expert(author)):
        assert marker in " ".join(text_of(e) for e in ev.seen_by(viewer))


def rescore_called() -> tuple[Evaluation, list[str]]:
    """The detailed stage: four members' sheets alike, the fifth's far off on A's T1, and the
    chair calls that sheet back for a rescore. Returns the evaluation and its members' ids."""
    ev = phase("detailed")
    m = ev.ids
    for mid in m[:4]:
        ev.run(sheet_cmd(mid, "detailed", scores(mid, BIDS)))
    ev.run(sheet_cmd(m[4], "detailed", scores(m[4], BIDS, **{f"{A}_T1": 500})))
    ev.run(CallRescore(actor=ev.chair, expert_id=m[4], reason="偏离过大"))
    return ev, m


def test_eval_rule_08_a_rescored_sheet_goes_the_same_way() -> None:
    ev, m = rescore_called()
    events = ev.run(sheet_cmd(m[4], "detailed", scores(m[4], BIDS, **{f"{A}_T1": 2999})))
    assert events[1].type == "sheet_content" and events[1].payload["round"] == 2
    assert sorted(events[1].audience) == sorted(["supervisor", f"expert:{m[4]}"])


# --- Eval rule 9 ----------------------------------------------------------------------------------


def test_eval_rule_09_resume_within_four_hours_void_after() -> None:
    ev = phase("evaluating")
    at = CONVENE + 5 * MINUTE
    ev.refused(Suspend(actor=SUP, reason="副场网络中断"), E.NotPermitted, at)
    ev.refused(Suspend(actor=HOST, reason="  "), E.ReasonRequired, at)
    events = ev.run(Suspend(actor=HOST, reason="副场网络中断"), at)
    assert types(events) == ["evaluation_suspended"] and events[0].audience == ["all"]
    assert ev.status == "suspended" and ev.state.suspended_from == "evaluating"
    assert ev.state.suspended_at == at
    assert next_due(ev.state) == at + timedelta(hours=4) == at + SUSPEND_LIMIT
    # while suspended nothing moves but the resumption (and joins, warnings, recordings)
    ev.refused(Vote(actor=expert(ev.ids[0]), candidate=ev.ids[0]), E.NotAllowedInState)
    ev.refused(Suspend(actor=HOST, reason="again"), E.NotAllowedInState)
    ev.refused(Resume(actor=SUP, reason="网络已恢复"), E.NotPermitted)
    ev.refused(Resume(actor=HOST, reason=" "), E.ReasonRequired)
    assert ev.run(Tick(actor=SERVER), at + SUSPEND_LIMIT - US) == []
    events = ev.run(Resume(actor=HOST, reason="网络已恢复"), at + SUSPEND_LIMIT - US)
    assert types(events) == ["evaluation_resumed"]
    assert ev.status == "evaluating" and ev.state.stage == "chair"
    assert ev.state.suspended_at is None and next_due(ev.state) is None
    # four hours or more: no resumption; the tick voids it
    at2 = ev.now + HOUR
    ev.run(Suspend(actor=HOST, reason="副场停电"), at2)
    ev.refused(Resume(actor=HOST, reason="恢复"), EV.SuspendedTooLong, at2 + SUSPEND_LIMIT)
    ev.refused(Resume(actor=HOST, reason="恢复"), EV.SuspendedTooLong, at2 + 5 * HOUR)
    events = ev.run(Tick(actor=SERVER), at2 + SUSPEND_LIMIT)
    assert types(events) == ["evaluation_void"] and events[0].audience == ["all"]
    assert events[0].payload == {"reason": "suspended_over_4h", "suspended_at": iso(at2)}
    assert ev.status == "void" and ev.state.void_reason == "suspended_over_4h"
    assert next_due(ev.state) is None
    assert ev.run(Tick(actor=SERVER), at2 + 6 * HOUR) == []
    ev.refused(Resume(actor=HOST, reason="恢复"), E.NotAllowedInState)
    ev.refused(Suspend(actor=HOST, reason="x"), E.NotAllowedInState)


def test_eval_rule_09_suspension_holds_the_sign_in_deadline() -> None:
    ev = phase("convening")
    ids = ev.ids
    for i, mid in enumerate(ids[1:]):
        ev.sign_in(mid, SIGN_AT + i * SECOND)
    pause = 2 * HOUR
    ev.run(Suspend(actor=HOST, reason="主场停电"), DUE - 10 * MINUTE)
    assert next_due(ev.state) == DUE - 10 * MINUTE + SUSPEND_LIMIT
    assert ev.run(Tick(actor=SERVER), DUE + HOUR) == []  # no absence while suspended
    ev.run(Resume(actor=HOST, reason="已恢复供电"), DUE - 10 * MINUTE + pause)
    assert ev.status == "convening"
    assert parse_iso(ev.member(ids[0]).due_by or "") == DUE + pause
    assert next_due(ev.state) == DUE + pause
    assert ev.run(Tick(actor=SERVER), DUE + pause - US) == []
    assert types(ev.run(Tick(actor=SERVER), DUE + pause)) == ["member_absent", "member_replaced"]


def test_eval_rule_09_suspend_only_when_active() -> None:
    ev = Evaluation()
    ev.refused(Suspend(actor=HOST, reason="x"), E.NotAllowedInState, T0)
    ev = phase("signing")
    ev.run(Suspend(actor=HOST, reason="系统故障"))
    assert ev.state.suspended_from == "signing"
    ev.refused(SignReport(actor=expert(ev.ids[0]), agree=True, signature="s"), E.NotAllowedInState)
    ev.run(Resume(actor=HOST, reason="已修复"), ev.now + HOUR)
    assert ev.status == "signing"


# --- Eval rule 10 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("off_by", "beyond"), [(THRESHOLD, False), (THRESHOLD + 1, True)])
def test_eval_rule_10_rescore_only_beyond_threshold(off_by: int, beyond: bool) -> None:
    ev = phase("detailed")
    m = ev.ids
    chair = ev.chair
    assert chair.id == m[0]
    ev.refused(CallRescore(actor=chair, expert_id=m[4], reason="复核"), EV.SheetsMissing)
    for mid in m[:4]:
        ev.run(sheet_cmd(mid, "detailed", scores(mid, BIDS)))
    outlier = scores(m[4], BIDS, **{f"{A}_T1": 3000 - off_by})
    ev.run(sheet_cmd(m[4], "detailed", outlier))
    # the others are off by a quarter of it: never beyond
    for mid in m[1:4]:
        ev.refused(CallRescore(actor=chair, expert_id=mid, reason="复核"), EV.NoDeviation)
    ev.refused(CallRescore(actor=expert(m[1]), expert_id=m[4], reason="复核"), EV.NotChair)
    ev.refused(CallRescore(actor=HOST, expert_id=m[4], reason="复核"), E.NotPermitted)
    if not beyond:
        ev.refused(CallRescore(actor=chair, expert_id=m[4], reason="复核"), EV.NoDeviation)
        ev.run(CloseStage(actor=chair))
        assert ev.status == "summarizing" and ev.state.rescores == []
        return
    ev.refused(CallRescore(actor=chair, expert_id=m[4], reason=" "), E.ReasonRequired)
    events = ev.run(CallRescore(actor=chair, expert_id=m[4], reason="偏离过大，请复核"))
    assert types(events) == ["rescore_called"]
    deviations = events[0].payload["deviations"]
    assert {d["criterion"] for d in deviations} == {"T1", None}  # the criterion and the total
    assert all(d["expert"] == m[4] and d["bidder"] == A for d in deviations)
    assert ev.state.reopened["detailed"] == [m[4]]
    ev.refused(CloseStage(actor=chair), EV.SheetsMissing)
    ev.refused(sheet_cmd(m[1], "detailed", scores(m[1], BIDS)), E.AlreadyDone)  # not reopened
    events = ev.run(sheet_cmd(m[4], "detailed", scores(m[4], BIDS, **{f"{A}_T1": 2900})))
    assert events[0].payload["round"] == 2 and ev.state.reopened["detailed"] == []
    ev.refused(sheet_cmd(m[4], "detailed", scores(m[4], BIDS)), E.AlreadyDone)
    ev.run(CloseStage(actor=chair))
    assert ev.status == "summarizing" and len(ev.state.rescores) == 1


def test_eval_rule_10_a_reopened_sheet_needs_one_resubmission() -> None:
    ev, m = rescore_called()
    with contextlib.suppress(Refusal):  # refusing the second call or merging it would both do
        ev.run(CallRescore(actor=ev.chair, expert_id=m[4], reason="请再复核"))
    ev.run(sheet_cmd(m[4], "detailed", scores(m[4], BIDS, **{f"{A}_T1": 2900})))
    assert ev.state.reopened["detailed"] == []
    ev.run(CloseStage(actor=ev.chair))
    assert ev.status == "summarizing"


def test_eval_rule_10_no_rescore_of_a_pass_fail_stage() -> None:
    ev = phase("qualification")
    m = ev.ids
    for i, mid in enumerate(m):
        fail = {C: "资质证书已过期"} if i == 4 else {}
        ev.run(sheet_cmd(mid, "qualification", review(mid, "qualification", BIDS, fail)))
    ev.refused(CallRescore(actor=ev.chair, expert_id=m[4], reason="复核"), EV.NoDeviation)


# --- Eval rule 11 ---------------------------------------------------------------------------------


def test_eval_rule_11_disagreement_needs_reason_refusal_without_reason_is_agreement() -> None:
    ev = phase("signing")
    m = ev.ids
    ev.refused(
        SignReport(actor=expert(m[1]), agree=False, reason="", signature="s"), E.ReasonRequired
    )
    ev.refused(
        SignReport(actor=expert(m[1]), agree=False, reason=" \n ", signature="s"), E.ReasonRequired
    )
    events = ev.run(
        SignReport(actor=expert(m[1]), agree=False, reason="价格分计算有误", signature="s1")
    )
    assert events[0].audience == ["all"]
    sig = ev.state.report_signatures[m[1]]
    assert (sig.agree, sig.reason, sig.deemed) == (False, "价格分计算有误", False)
    assert sig.signature == "s1"
    # refusing without a reason counts as agreement (实施条例 art. 53)
    ev.run(RefuseToSign(actor=expert(m[2]), reason="  "))
    sig = ev.state.report_signatures[m[2]]
    assert (sig.agree, sig.deemed, sig.signature) == (True, True, None)
    # refusing with a reason is a disagreement
    ev.run(RefuseToSign(actor=expert(m[3]), reason="不同意技术评分"))
    sig = ev.state.report_signatures[m[3]]
    assert (sig.agree, sig.deemed, sig.reason) == (False, False, "不同意技术评分")
    ev.refused(SignReport(actor=expert(m[1]), agree=True, signature="s"), E.AlreadyDone)
    ev.refused(RefuseToSign(actor=expert(m[2])), E.AlreadyDone)
    for actor in (HOST, SUP, room("NJ-01")):
        ev.refused(SignReport(actor=actor, agree=True, signature="s"), E.NotPermitted)
    ev.refused(SignReport(actor=expert("E999"), agree=True, signature="s"), EV.NotAMember)
    assert types(ev.run(SignReport(actor=expert(m[0]), agree=True, signature="s0"))) == [
        "report_signed"
    ]
    events = ev.run(SignReport(actor=expert(m[4]), agree=True, signature="s4"))
    assert types(events) == ["report_signed", "evaluation_closed"]
    assert events[1].payload == {"report_sha256": REPORT_SHA}
    assert ev.status == "closed" and set(ev.state.report_signatures) == set(m)


def test_eval_rule_11_nothing_to_sign_before_the_report() -> None:
    ev = phase("summarizing")
    mid = ev.ids[0]
    ev.refused(SignReport(actor=expert(mid), agree=True, signature="s"), E.NotAllowedInState)
    ev.run(Summarize(actor=ev.chair))
    assert ev.status == "signing" and ev.state.ranking is not None
    ev.refused(SignReport(actor=expert(mid), agree=True, signature="s"), E.NotAllowedInState)
    ev.refused(RefuseToSign(actor=expert(mid)), E.NotAllowedInState)
    for actor in (HOST, SUP, ev.chair):
        ev.refused(
            GenerateReport(actor=actor, report_sha256=REPORT_SHA, signature="x"), E.NotPermitted
        )
    ev.run(GenerateReport(actor=SERVER, report_sha256=REPORT_SHA, signature="srv"))
    ev.refused(GenerateReport(actor=SERVER, report_sha256="0" * 64, signature="x"), E.AlreadyDone)
    ev.run(SignReport(actor=expert(mid), agree=True, signature="s"))


# --- the expert desk's signature relay -------------------------------------------------------------


def test_a_drafted_sheet_goes_to_its_author_and_room_only_until_signed() -> None:
    """The desk (browser) hands a draft to the room device, which signs it with the expert's key;
    the draft is no record: only its author and that room see it, and the signed sheet ends it."""
    ev = phase("qualification")
    author = ev.ids[1]
    seat = ev.member(author).room_id
    marker = "资质证书过期-草稿标记"
    content = review(author, "qualification", BIDS, {C: marker})
    events = ev.run(
        RequestSignature(actor=expert(author), kind="sheet", stage="qualification", content=content)
    )
    assert types(events) == ["sheet_to_sign"]
    assert sorted(events[0].audience) == sorted([f"expert:{author}", f"room:{seat}"])
    assert events[0].payload["sha256"] == sha256_json(content)
    assert events[0].payload["request"] == 1 and events[0].payload["round"] == 1
    draft = EV.draft_for(ev.state, "expert", author, author)
    assert draft["kind"] == "sheet" and draft["content"] == content
    assert EV.draft_for(ev.state, "room", seat, author) == draft
    others = [HOST, SUP, CENTRE, *(expert(m) for m in ev.ids if m != author)]
    others += [room(r) for r in ROOM_IDS if r != seat]
    for viewer in others:
        assert marker not in " ".join(text_of(e) for e in ev.seen_by(viewer)), viewer
    assert not ev.state.sheets.get("qualification")  # nothing submitted yet
    # a second draft replaces the first
    again = review(author, "qualification", BIDS)
    ev.run(
        RequestSignature(actor=expert(author), kind="sheet", stage="qualification", content=again)
    )
    assert EV.draft_for(ev.state, "expert", author, author)["request"] == 2
    ev.run(sheet_cmd(author, "qualification", again))
    assert EV.draft_for(ev.state, "expert", author, author) == {}


def test_a_draft_is_checked_like_the_sheet_it_becomes() -> None:
    ev = phase("qualification")
    author, other = ev.ids[1], ev.ids[2]

    def request(who: str, stage: str, content: dict[str, Any]) -> RequestSignature:
        return RequestSignature(actor=expert(who), kind="sheet", stage=stage, content=content)

    short = review(author, "qualification", BIDS[:2])
    ev.refused(request(author, "qualification", short), SC.SheetIncomplete)
    ev.refused(request(author, "preliminary", review(author, "preliminary", BIDS)), EV.WrongStage)
    ev.refused(
        request(author, "qualification", review(other, "qualification", BIDS)), EV.SheetInvalid
    )
    ev.refused(
        request("E999", "qualification", review("E999", "qualification", BIDS)), EV.NotAMember
    )
    for actor in (HOST, SUP, room("NJ-01")):
        ev.refused(
            RequestSignature(actor=actor, kind="sheet", stage="qualification", content=short),
            E.NotPermitted,
        )
    ev.run(sheet_cmd(author, "qualification", review(author, "qualification", BIDS)))
    ev.refused(
        request(author, "qualification", review(author, "qualification", BIDS)), E.AlreadyDone
    )
    ev.refused(RequestSignature(actor=expert(author), kind="report"), E.NotAllowedInState)


def test_only_the_author_and_the_authors_room_may_read_a_draft() -> None:
    ev = phase("qualification")
    author, other = ev.ids[1], ev.ids[2]
    seat = ev.member(author).room_id
    for role, party in (
        ("expert", other),
        ("room", "XX-01"),
        ("host", "host-1"),
        ("supervisor", "sup-1"),
    ):
        with pytest.raises(EV.NotYourDraft):
            EV.draft_for(ev.state, role, party, author)
    elsewhere = next(r for r in ROOM_IDS if r != seat)
    with pytest.raises(EV.NotYourDraft):
        EV.draft_for(ev.state, "room", elsewhere, author)
    assert EV.draft_for(ev.state, "expert", author, author) == {}


def test_the_report_answer_is_relayed_with_its_reason() -> None:
    ev = phase("signing")
    mid = ev.ids[1]
    ev.refused(
        RequestSignature(actor=expert(mid), kind="report", agree=False, reason=" "),
        E.ReasonRequired,
    )
    events = ev.run(
        RequestSignature(actor=expert(mid), kind="report", agree=False, reason="价格分有误")
    )
    assert types(events) == ["report_to_sign"]
    p = events[0].payload
    assert (p["report_sha256"], p["agree"], p["reason"]) == (REPORT_SHA, False, "价格分有误")
    assert ev.state.to_sign[mid]["kind"] == "report"
    ev.run(SignReport(actor=expert(mid), agree=False, reason="价格分有误", signature="s"))
    assert mid not in ev.state.to_sign
    ev.refused(RequestSignature(actor=expert(mid), kind="report"), E.AlreadyDone)


def test_documents_open_to_signed_in_members_once_started() -> None:
    ev = phase("signed_in")
    mid = ev.ids[0]
    with pytest.raises(EV.DocumentsClosed):
        EV.documents_open(ev.state, "expert", mid)
    ev.run(StartEvaluation(actor=HOST), CONVENE)
    EV.documents_open(ev.state, "expert", mid)
    for role, party in (
        ("expert", "E999"),
        ("host", "host-1"),
        ("supervisor", "sup-1"),
        ("room", "NJ-01"),
    ):
        with pytest.raises(EV.NotAMember):
            EV.documents_open(ev.state, role, party)
    ev.run(Suspend(actor=HOST, reason="故障"))
    EV.documents_open(ev.state, "expert", mid)


# --- Eval rule 12 ---------------------------------------------------------------------------------


def test_eval_rule_12_supervisor_warning_reaches_all_and_supervisor_cannot_change_state() -> None:
    ev = phase("qualification")
    before = ev.state
    events = ev.run(Warn(actor=SUP, text="  请注意评标纪律，不得私下交流  "))
    assert types(events) == ["supervisor_warning"] and events[0].audience == ["all"]
    assert events[0].payload == {"text": "请注意评标纪律，不得私下交流", "id": 1}
    assert ev.state.model_copy(update={"warnings": []}) == before
    assert ev.state.warnings == [
        {"id": 1, "text": "请注意评标纪律，不得私下交流", "by": "supervisor:sup-1"}
    ]
    viewers = [HOST, CENTRE, *(expert(m) for m in ev.ids), *(room(r) for r in ROOM_IDS)]
    for viewer in viewers:
        assert "supervisor_warning" in types(ev.seen_by(viewer)), viewer
    for actor in (HOST, CENTRE, expert(ev.ids[0]), room("NJ-01"), SERVER):
        ev.refused(Warn(actor=actor, text="警告"), E.NotPermitted)
    assert ev.run(Warn(actor=SUP, text="第二次提醒"))[0].payload["id"] == 2


SUPERVISOR_EVENTS = {"party_joined", "party_left", "draw_entropy", "supervisor_warning"}


def every_command(ev: Evaluation, actor: Actor) -> list[Command]:
    """One command of every kind, as plausible as the state allows, by ``actor``."""
    ids = ev.ids or ["E001"]
    stage = ev.state.stage if ev.state.stage in ("qualification", "preliminary", "detailed") else ""
    if stage == "detailed":
        content = scores(ids[0], ev.bids_in(stage))
    else:
        content = review(ids[0], stage or "qualification", BIDS)
    commitment = D.commitment(bytes.fromhex(SERVER_RANDOM))
    a: dict[str, Any] = {"actor": actor}
    return [
        Tick(**a),
        Join(**a),
        Leave(**a),
        RoomLink(**a, up=True),
        BeginDraw(**a, commitment=commitment),
        AddEntropy(**a, value=SUP_ENTROPY),
        draw_cmd(actor=actor),
        Decline(**a, expert_id=ids[0], reason="出差"),
        ExpertSignIn(**a, expert_id=ids[0], cert_sha256="c" * 64),
        NoKey(**a, expert_id=ids[0]),
        Replace(**a, expert_id=ids[0], reason="无CA锁"),
        ReportDecline(**a, expert_id=ids[0], reason="出差"),
        RequestReplacement(**a, expert_id=ids[0], reason="无CA锁"),
        StartEvaluation(**a),
        Vote(**a, candidate=ids[0]),
        SubmitSheet(**a, stage=stage or "qualification", content=content, signature="s"),
        RequestSignature(**a, kind="sheet", stage=stage or "qualification", content=content),
        RaiseSignals(**a, signals=[]),
        CallRescore(**a, expert_id=ids[0], reason="复核"),
        CloseStage(**a),
        Summarize(**a),
        GenerateReport(**a, report_sha256=REPORT_SHA, signature="s"),
        SignReport(**a, agree=True, signature="s"),
        RefuseToSign(**a),
        Warn(**a, text="注意纪律"),
        Suspend(**a, reason="故障"),
        Resume(**a, reason="恢复"),
        RecordSegment(
            **a,
            room_id="NJ-01",
            index=0,
            sha256="9" * 64,
            size=1,
            started_at=iso(T0),
            ended_at=iso(T0 + SECOND),
        ),
    ]


def test_every_command_kind_is_covered() -> None:
    assert {type(c) for c in every_command(Evaluation(), SUP)} == set(EV.COMMANDS)


@pytest.mark.parametrize(
    "name",
    ["draft", "drawing", "convening", "signed_in", "qualification", "detailed", "signing", "void"],
)
def test_eval_rule_12_no_supervisor_command_changes_the_status(name: str) -> None:
    if name == "void":
        ev = phase("convening")
        ev.run(Suspend(actor=HOST, reason="故障"))
        ev.run(Tick(actor=SERVER), ev.now + SUSPEND_LIMIT)
        assert ev.status == "void"
    elif name == "drawing":
        ev = Evaluation()
        ev.run(Join(actor=HOST), T0)
        ev.run(BeginDraw(actor=HOST, commitment=D.commitment(bytes.fromhex(SERVER_RANDOM))))
    else:
        ev = phase(name)
    for suspended in (False, True):
        if suspended:
            if ev.state.status not in EV.ACTIVE:
                continue
            ev.run(Suspend(actor=HOST, reason="故障"))
        for cmd in every_command(ev, SUP):
            trial = ev.copy()
            try:
                events = trial.run(cmd)
            except Refusal:
                continue
            assert set(types(events)) <= SUPERVISOR_EVENTS, (cmd, events)
            assert trial.status == ev.status, cmd
            assert trial.state.stage == ev.state.stage and trial.state.chair == ev.state.chair


# --- Eval rule 13 ---------------------------------------------------------------------------------


def segment(actor: Actor, room_id: str, index: int = 0, **changes: Any) -> RecordSegment:
    fields: dict[str, Any] = {
        "actor": actor,
        "room_id": room_id,
        "index": index,
        "sha256": hashlib.sha256(f"{room_id}/{index}".encode()).hexdigest(),
        "size": 1_048_576,
        "started_at": iso(CONVENE + index * 10 * SECOND),
        "ended_at": iso(CONVENE + (index + 1) * 10 * SECOND),
    }
    fields.update(changes)
    return RecordSegment(**fields)


def test_eval_rule_13_segment_hash_in_log_for_server_only() -> None:
    ev = phase("evaluating")
    lead = ev.result.lead.room_id
    cmd = segment(SERVER, lead)
    events = ev.run(cmd)
    assert types(events) == ["media_segment"] and events[0].audience == ["supervisor"]
    assert events[0].actor == "server:server"
    assert events[0].payload["sha256"] == cmd.sha256 and events[0].payload["room_id"] == lead
    assert events[0].payload["index"] == 0 and events[0].payload["size"] == 1_048_576
    assert ev.state.segments == 1
    for actor in (HOST, SUP, CENTRE, room(lead), expert(ev.ids[0])):
        ev.refused(segment(actor, lead, 1), E.NotPermitted)
    ev.refused(segment(SERVER, "XX-01", 1), E.NotPermitted)  # not a room of this evaluation
    # recording goes on while suspended (the fault is on the record too)
    ev.run(Suspend(actor=HOST, reason="副场网络中断"))
    ev.run(segment(SERVER, lead, 1, error="upstream lost"))
    assert ev.state.segments == 2
    assert [e.payload["index"] for e, _ in ev.log if e.type == "media_segment"] == [0, 1]


def test_eval_rule_13_no_segment_before_any_room_is_drawn() -> None:
    ev = Evaluation()
    ev.refused(segment(SERVER, "NJ-01"), E.NotPermitted, T0)


def test_room_links_go_to_the_supervisor_and_the_room() -> None:
    ev = phase("convening")
    lead = ev.result.lead.room_id
    ev.refused(RoomLink(actor=room("XX-01"), up=True), E.NotPermitted)
    ev.refused(RoomLink(actor=HOST, up=True), E.NotPermitted)
    events = ev.run(RoomLink(actor=room(lead), up=True))
    assert events[0].audience == ["supervisor", f"room:{lead}"]
    assert ev.run(RoomLink(actor=room(lead), up=True)) == []
    assert ev.state.rooms[lead]["up"] is True


# --- the state is the fold of its events ----------------------------------------------------------


def test_state_is_the_fold_of_its_events() -> None:
    ev = phase("signing")
    replayed = new_state()
    for event, at in ev.log:
        replayed = evolve(replayed, event, at)
    assert replayed == ev.state


# --- random evaluations ---------------------------------------------------------------------------

STEPS = (timedelta(0), US, SECOND, MINUTE, 10 * MINUTE, 31 * MINUTE, HOUR, 4 * HOUR, 5 * HOUR)
REASONS = ("", "  ", "网络故障")
KNOWN_AUDIENCE = {"all", "staff", "supervisor", "committee", "host", "centre"}
PHASES = ("convening", "signed_in", "qualification", "detailed", "summarizing", "signing")
STAGE_NAMES = ("chair", "qualification", "preliminary", "detailed")
EVERY_KIND = tuple(range(24))  # the command kinds of random_command
LIKELY_KINDS = {  # what usually happens next, so that random runs get somewhere
    "convening": (8, 8, 8, 8, 8, 8, 7, 9, 10, 11, 11, 0),
    "chair": (12,) * 8,
    "evaluating": (13,) * 30 + (15, 15, 15, 15, 14, 14),
    "summarizing": (16,) * 6,
    "signing": (17, 17, 18, 18, 18, 18, 19, 19),
    "suspended": (22, 22, 22, 0),
}


def _kinds(state: EvaluationState) -> tuple[int, ...]:
    key = "chair" if state.stage == "chair" else state.status
    return EVERY_KIND + LIKELY_KINDS.get(key, ())


def _actors(state: EvaluationState) -> list[Actor]:
    experts = sorted(set(state.members) | {"E021", "E999"})
    return [
        HOST,
        SUP,
        CENTRE,
        SERVER,
        *(room(r) for r in (*ROOM_IDS, "XX-01")),
        *(expert(e) for e in experts),
    ]


def _random_content(data: st.DataObject, ev: Evaluation, author: str, stage: str) -> dict[str, Any]:
    bidders = ev.bids_in(stage) if stage in ("qualification", "preliminary", "detailed") else []
    shape = data.draw(st.sampled_from(("valid",) * 16 + ("short", "range", "other", "junk")))
    if stage == "detailed":
        points = st.sampled_from((0, 1000, 2500, 3000, 4000))
        content: dict[str, Any] = {
            "expert": author,
            "stage": "detailed",
            "scores": [
                {"bidder": b, "criterion": c, "points_x100": min(data.draw(points), MAXIMA[c])}
                for b in bidders
                for c in MAXIMA
            ],
        }
        entries = content["scores"]
    else:
        sheet_stage = stage if stage in ITEM_OF else "qualification"
        fails = {b: "不符合要求" for b in bidders if data.draw(st.booleans())}
        content = review(author, sheet_stage, bidders, fails)
        entries = content["verdicts"]
    if shape == "short" and entries:
        entries.pop()
    elif shape == "range" and entries:
        if stage == "detailed":
            entries[0]["points_x100"] = data.draw(st.sampled_from((-1, 4001, 10**9)))
        else:
            entries[0] |= {"passed": False, "reason": ""}
    elif shape == "other":
        content["expert"] = data.draw(st.sampled_from(["E999", *sorted(ev.state.members)]))
    elif shape == "junk":
        content = data.draw(
            st.sampled_from([{}, {"expert": author}, {"expert": author, "stage": stage, "x": 1}])
        )
    return content


def _natural(ev: Evaluation, kind: int) -> list[Actor]:
    """The actors a command of ``kind`` usually comes from (so that random runs get somewhere)."""
    state = ev.state
    committee = [expert(m) for m in ev.ids]
    rooms = [room(r) for r in sorted({m.room_id for m in state.members.values()} or ROOM_IDS)]
    if kind in (0, 6, 17, 23):
        return [SERVER]
    if kind in (1, 2):
        return [HOST, SUP, CENTRE]
    if kind in (3, 8, 9):
        return rooms
    if kind == 5:
        return [HOST, SUP]
    if kind in (7, 10):
        return [HOST, CENTRE]
    if kind in (4, 11, 21, 22):
        return [HOST]
    if kind in (14, 15, 16) and state.chair:
        return [expert(state.chair)]
    if kind == 13 and state.stage:
        waiting = [
            expert(m)
            for m in ev.ids
            if m not in state.sheets.get(state.stage, {})
            or m in state.reopened.get(state.stage, [])
        ]
        return waiting or committee
    if kind == 20:
        return [SUP]
    return committee


def random_command(data: st.DataObject, ev: Evaluation) -> Command:
    state = ev.state
    kind = data.draw(st.sampled_from(_kinds(state)))
    natural = data.draw(st.integers(0, 3)) > 0  # three times in four
    actor = data.draw(st.sampled_from(_natural(ev, kind) if natural else _actors(state)))
    member_ids = sorted(state.members) or ["E001"]
    some_expert = data.draw(st.sampled_from([*member_ids, "E021", "E999"]))
    if kind in (8, 9) and data.draw(st.booleans()):  # a member at (usually) their own room
        some_expert = data.draw(st.sampled_from(ev.ids))
        actor = room(state.members[some_expert].room_id)
    reason = data.draw(st.sampled_from(REASONS))
    a: dict[str, Any] = {"actor": actor}
    match kind:
        case 0:
            return Tick(**a)
        case 1:
            return Join(**a)
        case 2:
            return Leave(**a)
        case 3:
            return RoomLink(**a, up=data.draw(st.booleans()))
        case 4:
            return BeginDraw(**a, commitment=D.commitment(bytes.fromhex(SERVER_RANDOM)))
        case 5:
            return AddEntropy(**a, value=data.draw(st.sampled_from((SUP_ENTROPY, HOST_ENTROPY))))
        case 6:
            return draw_cmd(data.draw(st.sampled_from((SERVER_RANDOM, "ee" * 32))), actor)
        case 7:
            return Decline(**a, expert_id=some_expert, reason=reason)
        case 8:
            return ExpertSignIn(**a, expert_id=some_expert, name="某专家", cert_sha256="c" * 64)
        case 9:
            return NoKey(**a, expert_id=some_expert)
        case 10:
            return Replace(**a, expert_id=some_expert, reason=reason)
        case 11:
            return StartEvaluation(**a)
        case 12:
            return Vote(**a, candidate=data.draw(st.sampled_from([*ev.ids[:2], some_expert])))
        case 13:
            current = state.stage or "chair"
            stage = data.draw(st.sampled_from([current] * 16 + list(STAGE_NAMES)))
            content = _random_content(data, ev, actor.id, stage)
            return SubmitSheet(**a, stage=stage, content=content, signature="s")
        case 14:
            authors = sorted(state.sheets.get(state.stage or "", {})) or [some_expert]
            return CallRescore(**a, expert_id=data.draw(st.sampled_from(authors)), reason=reason)
        case 15:
            return CloseStage(**a)
        case 16:
            adjustments = data.draw(
                st.sampled_from([[], [PriceAdjustment(bidder=A, kind="k", amount_fen=100)]])
            )
            return Summarize(**a, adjustments=adjustments)
        case 17:
            return GenerateReport(**a, report_sha256=REPORT_SHA, signature="srv")
        case 18:
            return SignReport(**a, agree=data.draw(st.booleans()), reason=reason, signature="s")
        case 19:
            return RefuseToSign(**a, reason=reason)
        case 20:
            return Warn(**a, text=data.draw(st.sampled_from(("注意纪律", " "))))
        case 21:
            return Suspend(**a, reason=reason)
        case 22:
            return Resume(**a, reason=reason)
        case _:
            return segment(
                actor,
                data.draw(st.sampled_from((*ROOM_IDS, "XX-01"))),
                data.draw(st.integers(0, 3)),
            )


def check_invariants(state: EvaluationState) -> None:
    assert state.status in STATUSES
    committee = state.committee()
    members = {m.id for m in committee}
    signed_in = {m.id for m in committee if m.status == "signed_in"}
    # replacements keep the committee's size; an absence with no spare left shortens it, and
    # then the evaluation cannot start (committee rule) until the centre replaces the member
    assert len(committee) <= 5
    if state.status in ("evaluating", "summarizing", "signing", "closed"):
        assert len(committee) == 5
    assert not set(state.members) & set(AVOIDED)  # Eval rule 3
    assert set(state.report_signatures) <= signed_in
    assert set(state.votes) <= members
    assert state.chair is None or state.chair in signed_in
    for sheets in state.sheets.values():
        assert set(sheets) <= members
    for stage, reopened in state.reopened.items():
        assert set(reopened) <= set(state.sheets.get(stage, {}))
    if state.status in ("evaluating", "summarizing", "signing", "closed"):
        assert signed_in == members  # Eval rule 4
    if state.status == "closed":
        assert set(state.report_signatures) == members and state.report_sha256 is not None
    if state.status == "suspended":
        assert state.suspended_from in EV.ACTIVE and state.suspended_at is not None
    for sig in state.report_signatures.values():  # Eval rule 11
        assert sig.agree or sig.reason.strip()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_evaluations_refuse_cleanly_and_keep_the_rules(data: st.DataObject) -> None:
    ev = phase(data.draw(st.sampled_from(PHASES)))
    start = ev.state
    start_log = len(ev.log)
    for _ in range(data.draw(st.integers(1, 60))):
        now = ev.now + data.draw(st.sampled_from(STEPS))
        cmd = random_command(data, ev)
        before = ev.state
        dump = before.model_dump()
        try:
            events = decide(before, cmd, now)
        except Refusal:
            assert ev.state.model_dump() == dump  # a refusal leaves nothing behind
            continue
        assert ev.state.model_dump() == dump  # deciding does not touch the state
        assert isinstance(events, list) and all(isinstance(e, NewEvent) for e in events)
        ev.now = now
        for event in events:
            assert event.audience, event
            for tag in event.audience:
                assert tag in KNOWN_AUDIENCE or tag.split(":", 1)[0] in ("expert", "room"), event
            if event.type == "sheet_content":  # Eval rule 8
                assert sorted(event.audience) == sorted(
                    ["supervisor", f"expert:{event.payload['expert_id']}"]
                )
            if event.type == "media_segment":  # Eval rule 13
                assert event.actor == "server:server" and cmd.actor == SERVER
            ev.state = evolve(ev.state, event, now)
            ev.log.append((event, now))
        if cmd.actor.role == "supervisor":  # Eval rule 12
            assert ev.state.status == before.status, (cmd, events)
            assert set(types(events)) <= SUPERVISOR_EVENTS, (cmd, events)
        check_invariants(ev.state)

    assert_identities_hidden_until_sign_in(ev.log)
    replayed = start
    for event, at in ev.log[start_log:]:
        replayed = evolve(replayed, event, at)
    assert replayed == ev.state


def test_evaluation_machine_answers_the_servers_questions() -> None:
    from server.domain.sessions import MACHINES

    machine = MACHINES["evaluation"]
    assert machine is EV.MACHINE and machine.state is EvaluationState
    ev = phase("convening")
    lead = ev.result.lead.room_id
    assert machine.supervision(ev.state) == {
        "opening_session_id": ev.state.opening_session_id,
        "rooms": sorted(ev.state.rooms),
    }
    assert not machine.before_deadline(ev.state) and not machine.record_pending(ev.state)
    link = machine.link("room", lead, True)
    assert isinstance(link, RoomLink) and link.up and link.actor == room(lead)
    ev.run(link)
    assert ("room", lead) in machine.present(ev.state)
    assert ("supervisor", SUP.id) in machine.present(ev.state)
    assert machine.viewer_tags(ev.state, "room", lead) == frozenset({f"room:{lead}"})
    assert machine.viewer_tags(ev.state, "room", "XX-01") is None  # not drawn
    assert machine.viewer_tags(ev.state, "bidder", "91350100MA31AAAAXA") is None
    assert machine.viewer_tags(ev.state, "supervisor", SUP.id) == frozenset({"staff", "supervisor"})
    ev.run(machine.link("room", lead, False))
    assert ("room", lead) not in machine.present(ev.state)
    assert machine.next_due(ev.state) == min(
        datetime.fromisoformat(m.due_by) for m in ev.state.members.values() if m.due_by
    )
