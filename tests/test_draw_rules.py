"""The expert draw (专家抽取) of DESIGN.md section 6 as specifications of ``server.domain.draw``.

Pure: no server, no database, no clock, no random source. Pools are built by hand (or by the
deterministic generator) and the three random values are constants of the test.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.canonical import canonical_json
from schemas.common import uscc_check_char
from schemas.experts import (
    CategoryDemand,
    DrawRequest,
    DrawResult,
    Expert,
    ExpertStatus,
    Room,
    Site,
    employer_name_sha256,
    normalize_employer_name,
)
from server.demo.experts_gen import CITIES, generate_pool, generate_sites, typical_bidders
from server.domain import draw as D
from server.domain.errors import Refusal
from server.domain.pool import parent, within

SR = bytes(range(32))
SUP = b"supervisor entropy 1"
HOST = b"host entropy 1"

LEAD_CITY = "150700"  # 呼伦贝尔
CITY_B = "150100"  # 呼和浩特
CITY_C = "150200"  # 包头
CITY_D = "150400"  # 赤峰


def code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


BIDDER_1 = code("91150700MA0BD0001")
BIDDER_2 = code("91150100MA0BD0002")
TENDERER = code("11150700MB0TN0001")
OTHER = code("12150700MC0TH0001")


def expert(
    n: int,
    categories: list[str] | str = "A08.01.01",
    city: str = LEAD_CITY,
    *,
    employer: str = "呼伦贝尔学院",
    credit: str | None = OTHER,
    status: ExpertStatus = "active",
) -> Expert:
    cats = [categories] if isinstance(categories, str) else categories
    return Expert(
        id=f"E{n:05d}",
        name=f"专家{n:05d}",
        categories=cats,
        city=city,
        employer=employer,
        employer_credit_code=credit,
        status=status,
        contact=f"139{n:08d}",
    )


def site(sid: str, city: str, rooms: int = 3, unavailable: tuple[int, ...] = (), **kw: Any) -> Site:
    return Site(
        id=sid,
        name=f"{CITIES.get(city, city)}交易中心",
        city=city,
        rooms=[
            Room(id=f"{sid}-R{r}", available=r not in unavailable, **kw)
            for r in range(1, rooms + 1)
        ],
    )


TWO_SITES: list[Site] = []  # filled below: the lead and one site in city B

SITES = [
    site("LEAD", LEAD_CITY),
    site("LEAD2", LEAD_CITY),  # another site in the lead city: never a secondary site
    site("SB", CITY_B),
    site("SB2", CITY_B),  # a second site in city B: at most one site per city is drawn
    site("SC", CITY_C),
    site("SD", CITY_D, unavailable=(1, 2, 3)),  # no room available: never drawn
]


TWO_SITES.extend([SITES[0], SITES[2]])


def request(**kw: Any) -> DrawRequest:
    fields: dict[str, Any] = {
        "session_id": "EV-2026-001",
        "lead_site_id": "LEAD",
        "secondary_sites": 2,
        "categories": [CategoryDemand(category="A08.01.01", count=5, spares=2)],
    }
    fields.update(kw)
    return DrawRequest(**fields)


def spread_pool(per_city: int = 20, categories: str = "A08.01.01") -> list[Expert]:
    """``per_city`` experts in each of the four cities."""
    out = []
    n = 0
    for city in (LEAD_CITY, CITY_B, CITY_C, CITY_D):
        for _ in range(per_city):
            n += 1
            out.append(expert(n, categories, city))
    return out


def draw(pool: list[Expert], req: DrawRequest | None = None, **kw: Any) -> DrawResult:
    args: dict[str, Any] = {"sites": SITES, "sr": SR, "sup": SUP, "host": HOST}
    args.update(kw)
    return D.run_draw(pool, args["sites"], req or request(), args["sr"], args["sup"], args["host"])


def members(result: DrawResult) -> list[str]:
    return [m.expert_id for m in result.committee]


def refused(code_: str, fn: Any, *args: Any, **kw: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        fn(*args, **kw)
    assert caught.value.code == code_, caught.value.line()
    assert caught.value.zh and caught.value.en
    return caught.value


# --- rules on the committee ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("experts", "reps", "ok"),
    [
        (5, 0, True),
        (7, 0, True),
        (4, 1, True),
        (3, 0, False),  # fewer than five
        (4, 0, False),  # fewer than five, even
        (6, 0, False),  # even
        (5, 1, False),  # even
    ],
)
def test_rule_committee_size_odd_at_least_five(experts: int, reps: int, ok: bool) -> None:
    pool = spread_pool(30)
    req = request(
        categories=[CategoryDemand(category="A08.01.01", count=experts, spares=1)], owner_reps=reps
    )
    if ok:
        result = draw(pool, req)
        assert len(result.committee) + result.rules.owner_reps == experts + reps
    else:
        err = refused("COMMITTEE_INVALID", draw, pool, req)
        assert err.status == 422


@pytest.mark.parametrize(
    ("experts", "reps", "ok"),
    [
        (5, 2, True),  # 5/7 >= 2/3
        (4, 1, True),  # 4/5
        (6, 3, True),  # 6/9 = 2/3 exactly
        (3, 2, False),  # 3/5 < 2/3
        (4, 3, False),  # 4/7 < 2/3
        (8, 5, False),  # 8/13 < 2/3
    ],
)
def test_rule_two_thirds_experts(experts: int, reps: int, ok: bool) -> None:
    if ok:
        D.check_committee(experts, reps)
    else:
        refused("COMMITTEE_INVALID", D.check_committee, experts, reps)


def test_rule_committee_is_checked_before_anything_is_drawn() -> None:
    refused("COMMITTEE_INVALID", draw, [], request(owner_reps=2 + 2))


# --- avoidance (回避) ---------------------------------------------------------------------------------


def test_rule_avoidance_bidder_employer() -> None:
    pool = spread_pool(6)
    # Many experts employed by a bidder, in every city: none of them may be drawn.
    pool += [
        expert(1000 + i, city=city, employer="呼伦贝尔路桥公司", credit=BIDDER_1)
        for i, city in enumerate([LEAD_CITY, CITY_B, CITY_C] * 10)
    ]
    req = request(avoid_credit_codes=[BIDDER_1, BIDDER_2, TENDERER])
    for k in range(10):
        result = draw(pool, req, sup=f"s{k}".encode())
        drawn = set(members(result)) | {s.expert_id for c in result.categories for s in c.spares}
        assert not drawn & {e.id for e in pool if e.employer_credit_code == BIDDER_1}
        assert result.counts.avoided == 30
        assert result.avoided == 30


def test_rule_avoidance_tenderer_employer() -> None:
    pool = spread_pool(6) + [expert(900 + i, credit=TENDERER, employer="招标人") for i in range(30)]
    result = draw(pool, request(avoid_credit_codes=[TENDERER]))
    assert not {m for m in members(result) if int(m[1:]) >= 900}
    assert result.counts.avoided == 30


def test_rule_avoidance_by_normalized_employer_name() -> None:
    """No credit code on record: the employer's name decides, however it is written."""
    variants = [
        "内蒙古路桥集团（有限公司）",
        "内蒙古路桥集团 (有限公司)",
        "内蒙古 路桥集团(有限公司)",
    ]
    assert len({normalize_employer_name(v) for v in variants}) == 1
    pool = spread_pool(6) + [
        expert(800 + i, city=LEAD_CITY, employer=variants[i % 3], credit=None) for i in range(30)
    ]
    result = draw(pool, request(avoid_names=["内蒙古路桥集团(有限公司)"]))
    assert result.counts.avoided == 30
    assert not {m for m in members(result) if int(m[1:]) >= 800}


def test_rule_avoidance_never_matches_on_a_missing_code_or_empty_name() -> None:
    pool = [expert(i, city=c, credit=None) for i, c in enumerate([LEAD_CITY, CITY_B, CITY_C] * 5)]
    result = draw(pool, request(avoid_names=["", "（ ）"], avoid_credit_codes=[BIDDER_1]))
    assert result.counts.avoided == 0


# --- eligibility ----------------------------------------------------------------------------------


def test_rule_only_active_experts_are_drawn() -> None:
    pool = spread_pool(4)
    pool += [
        expert(500 + i, city=c, status=s)
        for i, (c, s) in enumerate(
            [
                (c, s)
                for c in (LEAD_CITY, CITY_B, CITY_C)
                for s in ("suspended", "retired", "removed")
            ]
            * 5
        )
    ]
    inactive = {e.id for e in pool if e.status != "active"}
    for k in range(10):
        result = draw(pool, request(), host=bytes([k]))
        assert not set(members(result)) & inactive
        assert not {s.expert_id for c in result.categories for s in c.spares} & inactive


def test_rule_experts_only_from_the_drawn_cities() -> None:
    pool = spread_pool(20)
    by_id = {e.id: e for e in pool}
    for k in range(10):
        result = draw(pool, request(secondary_sites=1), host=bytes([k]))
        cities = {result.lead.city} | {s.city for s in result.secondary_sites}
        assert {by_id[m].city for m in members(result)} <= cities
        assert result.counts.in_region == 20 * len(cities)


def test_rule_an_expert_is_drawn_at_most_once() -> None:
    """Overlapping requests (A08 and A08.01.01): an expert is a member or a spare only once."""
    pool = spread_pool(6, "A08.01.01") + [
        expert(700 + i, "A08.02.01", c) for i, c in enumerate([LEAD_CITY, CITY_B, CITY_C] * 4)
    ]
    req = request(
        categories=[
            CategoryDemand(category="A08", count=3, spares=3),
            CategoryDemand(category="A08.01.01", count=4, spares=3),
        ]
    )
    for k in range(10):
        result = draw(pool, req, sup=bytes([k]))
        picked = members(result) + [s.expert_id for c in result.categories for s in c.spares]
        assert len(picked) == len(set(picked)) == 7 + 6


# --- categories -------------------------------------------------------------------------------------


def test_rule_category_code_parent_chain() -> None:
    assert parent("A08.01.03") == "A08.01"
    assert parent("A08.01") == "A08"
    assert parent("A08") is None
    assert within("A08.01.03", "A08") and within("A08.01.03", "A08.01.03")
    assert not within("A08.01.03", "A08.0") and not within("A081.01", "A08")
    with pytest.raises(ValueError):
        parent("A8.1")


def test_rule_category_falls_back_to_parent_recorded() -> None:
    """Seed 002, 二(二)三: too few experts in a category -> draw from the level above."""
    pool = [expert(i, "A08.01.03", c) for i, c in enumerate([LEAD_CITY, CITY_B], start=1)]
    pool += [expert(100 + i, "A08.01.01", c) for i, c in enumerate([LEAD_CITY, CITY_B] * 6)]
    pool += [expert(200 + i, "A08.02.01", c) for i, c in enumerate([LEAD_CITY, CITY_B] * 6)]
    req = request(
        secondary_sites=1, categories=[CategoryDemand(category="A08.01.03", count=5, spares=2)]
    )
    result = draw(pool, req, sites=TWO_SITES)
    [fb] = result.fallbacks
    assert (fb.requested_category, fb.from_category, fb.to_category) == (
        "A08.01.03",
        "A08.01.03",
        "A08.01",
    )
    assert (fb.available, fb.needed) == (2, 7)
    [outcome] = result.categories
    assert outcome.category == "A08.01" and outcome.candidates == 14
    assert all(
        m.category == "A08.01" and m.requested_category == "A08.01.03" for m in result.committee
    )
    assert all(m.expert_id < "E00200" for m in result.committee)  # never from A08.02


def test_rule_category_falls_back_up_to_the_top_level() -> None:
    pool = [expert(i, "A08.02.01", c) for i, c in enumerate([LEAD_CITY, CITY_B] * 5)]
    req = request(
        secondary_sites=1, categories=[CategoryDemand(category="A08.01.03", count=5, spares=0)]
    )
    result = draw(pool, req, sites=TWO_SITES)
    assert [(f.from_category, f.to_category, f.available) for f in result.fallbacks] == [
        ("A08.01.03", "A08.01", 0),
        ("A08.01", "A08", 0),
    ]
    assert {m.category for m in result.committee} == {"A08"}


def test_rule_pool_too_small_names_the_category() -> None:
    pool = [expert(i, "A08.02.01", c) for i, c in enumerate([LEAD_CITY, CITY_B] * 3)]
    req = request(
        secondary_sites=1, categories=[CategoryDemand(category="A08.01.03", count=5, spares=2)]
    )
    err = refused("POOL_TOO_SMALL", draw, pool, req, sites=TWO_SITES)
    assert "A08.01.03" in err.zh and "A08.01.03" in err.en and "A08.01.03" in err.detail


def test_rule_categories_are_processed_in_sorted_order() -> None:
    pool = spread_pool(10, "A08.01.01") + [
        expert(600 + i, "B01.01.01", c) for i, c in enumerate([LEAD_CITY, CITY_B, CITY_C] * 4)
    ]
    a = CategoryDemand(category="B01.01.01", count=2, spares=1)
    b = CategoryDemand(category="A08.01.01", count=3, spares=1)
    one = draw(pool, request(categories=[a, b]))
    two = draw(pool, request(categories=[b, a]))
    assert [c.requested_category for c in one.categories] == ["A08.01.01", "B01.01.01"]
    assert members(one) == members(two)


# --- region spread -------------------------------------------------------------------------------------


def test_rule_region_spread() -> None:
    """At least ``min_outside_lead`` of the committee's experts come from outside the lead city."""
    pool = [expert(i, city=LEAD_CITY) for i in range(200)]  # the lead city dominates
    pool += [expert(1000 + i, city=c) for i, c in enumerate([CITY_B, CITY_C] * 4)]
    by_id = {e.id: e for e in pool}
    seen_lead = 0
    for k in range(20):
        result = draw(pool, request(min_outside_lead=3), sup=bytes([k]))
        outside = [m for m in members(result) if by_id[m].city != LEAD_CITY]
        assert len(outside) >= 3
        seen_lead += len(members(result)) - len(outside)
        for m in result.committee:
            assert (m.site_id == "LEAD") == (by_id[m.expert_id].city == LEAD_CITY)
    assert seen_lead  # the rule does not push lead-city experts out beyond what it needs


def test_rule_region_rule_unmet_is_refused() -> None:
    pool = [expert(i, city=LEAD_CITY) for i in range(50)] + [expert(99, city=CITY_B)]
    refused("REGION_RULE_UNMET", draw, pool, request(min_outside_lead=2))
    refused("REGION_RULE_UNMET", draw, pool, request(min_outside_lead=1, secondary_sites=0))


# --- sites and rooms (两随机) --------------------------------------------------------------------------


def test_rule_rooms_drawn_too() -> None:
    pool = spread_pool(10)
    chosen_sites: Counter[str] = Counter()
    chosen_rooms: Counter[str] = Counter()
    lead_rooms: Counter[str] = Counter()
    for k in range(120):
        result = draw(pool, request(secondary_sites=1), host=k.to_bytes(2, "big"))
        [sec] = result.secondary_sites
        chosen_sites[sec.site_id] += 1
        chosen_rooms[sec.room_id] += 1
        lead_rooms[result.lead.room_id] += 1
        assert sec.city != LEAD_CITY
        site_ = next(s for s in SITES if s.id == sec.site_id)
        assert any(r.id == sec.room_id and r.available for r in site_.rooms)
    assert set(chosen_sites) == {"SB", "SB2", "SC"}  # never the lead city, never room-less SD
    assert len(chosen_rooms) == 9  # every available room of those sites comes up
    assert len(lead_rooms) == 3  # with no booked lead room, the lead room is drawn too


def test_rule_secondary_sites_one_per_city_in_other_cities() -> None:
    pool = spread_pool(10)
    for k in range(30):
        result = draw(pool, request(secondary_sites=2), sup=bytes([k]))
        cities = [s.city for s in result.secondary_sites]
        assert len(set(cities)) == 2 and LEAD_CITY not in cities


def test_rule_booked_lead_room_is_kept() -> None:
    result = draw(spread_pool(10), request(lead_room_id="LEAD-R2"))
    assert result.lead.room_id == "LEAD-R2"
    sites = [site("LEAD", LEAD_CITY, unavailable=(2,)), *SITES[1:]]
    refused("ROOM_UNAVAILABLE", draw, spread_pool(10), request(lead_room_id="LEAD-R2"), sites=sites)


def test_rule_sites_too_few_is_refused() -> None:
    refused("SITES_TOO_FEW", draw, spread_pool(10), request(secondary_sites=3))


def test_rule_each_expert_sits_in_the_drawn_room_of_their_city() -> None:
    pool = spread_pool(10)
    by_id = {e.id: e for e in pool}
    result = draw(pool, request(min_outside_lead=2))
    room_of_city = {s.city: (s.site_id, s.room_id) for s in [result.lead, *result.secondary_sites]}
    for m in result.committee:
        assert (m.site_id, m.room_id) == room_of_city[by_id[m.expert_id].city]
    for c in result.categories:
        for s in c.spares:
            assert (s.site_id, s.room_id) == room_of_city[by_id[s.expert_id].city]


def test_rule_seat_limits_are_kept() -> None:
    small = [site(s.id, s.city, seats=2) for s in SITES]  # 3 rooms a site, 2 seats each
    pool = spread_pool(20)
    for k in range(10):
        result = draw(pool, request(owner_reps=0), sites=small, host=bytes([k]))
        per_room = Counter(m.room_id for m in result.committee)
        assert max(per_room.values()) <= 2
    tiny = [site(s.id, s.city, seats=1) for s in SITES]
    refused("SEATS_TOO_FEW", draw, pool, request(), sites=tiny)
    # The owner representatives sit in the lead room too.
    refused("SEATS_TOO_FEW", draw, pool, request(owner_reps=2, secondary_sites=1), sites=small)


# --- the random values ------------------------------------------------------------------------------


def test_rule_seed_is_hash_of_three_entropies() -> None:
    expected = hashlib.sha256(
        b"bidbridge/draw/seed/v1\x00"
        + len(SR).to_bytes(4, "big")
        + SR
        + len(SUP).to_bytes(4, "big")
        + SUP
        + len(HOST).to_bytes(4, "big")
        + HOST
    ).digest()
    assert D.seed(SR, SUP, HOST) == expected
    assert draw(spread_pool(10)).seed == expected.hex()
    # Length prefixes: moving a byte from one value to the next changes the seed.
    assert D.seed(SR, b"ab", b"c") != D.seed(SR, b"a", b"bc")
    assert D.seed(SR, SUP, HOST) != D.seed(SR, HOST, SUP)


def test_rule_random_values_must_have_a_sane_length() -> None:
    refused("ENTROPY_INVALID", D.seed, b"short", SUP, HOST)
    refused("ENTROPY_INVALID", D.seed, SR, b"", HOST)
    refused("ENTROPY_INVALID", D.commitment, b"")


def test_rule_commitment_binds_server_random() -> None:
    c = D.commitment(SR)
    assert c == hashlib.sha256(b"bidbridge/draw/commitment/v1\x00" + SR).hexdigest()
    assert D.commitment(SR) == c
    assert len({D.commitment(bytes([i]) * 32) for i in range(50)}) == 50
    pool = spread_pool(10)
    result = draw(pool)
    assert result.commitment == c
    other = bytes(32)
    diffs = D.verify(D.pool_snapshot(pool), SITES, request(), other, SUP, HOST, result)
    assert any(d.startswith("commitment") for d in diffs)


def test_rule_same_inputs_same_committee() -> None:
    pool = spread_pool(20)
    one = draw(pool, request(min_outside_lead=2))
    two = draw(list(reversed(pool)), request(min_outside_lead=2))  # pool order does not matter
    assert one == two
    assert one.model_dump_json() == two.model_dump_json()


def test_rule_any_entropy_change_changes_committee() -> None:
    """Each of the three values moves the outcome: a one-bit change gives another committee."""
    pool = spread_pool(50)
    base = members(draw(pool))

    def flip(value: bytes, bit: int) -> bytes:
        b = bytearray(value)
        b[bit // 8 % len(b)] ^= 1 << (bit % 8)
        return bytes(b)

    for which in ("sr", "sup", "host"):
        changed = 0
        for bit in range(20):
            values = {"sr": SR, "sup": SUP, "host": HOST}
            values[which] = flip(values[which], bit * 7)
            if members(draw(pool, **values)) != base:
                changed += 1
        # 5 of 200 experts: two independent committees coincide with odds of about 1e-9.
        assert changed >= 19, (which, changed)


def test_rule_draw_follows_the_shuffle_uniformly() -> None:
    """Over many seeds every candidate is drawn about equally often (no bias by id)."""
    pool = [expert(i, city=c) for i, c in enumerate([LEAD_CITY, CITY_B, CITY_C] * 4)]  # 12
    req = request(categories=[CategoryDemand(category="A08.01.01", count=5, spares=0)])
    counts: Counter[str] = Counter()
    runs = 600
    for k in range(runs):
        counts.update(members(draw(pool, req, host=k.to_bytes(2, "big"))))
    expected = runs * 5 / 12  # 250
    assert len(counts) == 12
    assert all(abs(n - expected) < 0.25 * expected for n in counts.values()), counts


# --- replacing a decliner -----------------------------------------------------------------------------


def test_rule_spare_replaces_decliner_recorded() -> None:
    pool = spread_pool(10)
    result = draw(pool)
    first = result.committee[1]
    spares = result.categories[0].spares
    new, updated = D.replace(result, pool, first.expert_id, "出差在外 / travelling")
    assert new.expert_id == spares[0].expert_id
    assert (new.order, new.requested_category, new.category) == (
        first.order,
        first.requested_category,
        first.category,
    )
    assert (new.site_id, new.room_id) == (spares[0].site_id, spares[0].room_id)
    assert first.expert_id not in members(updated) and new.expert_id in members(updated)
    assert len(updated.committee) == len(result.committee)
    [record] = updated.replacements
    assert (record.declined_expert_id, record.replacement_expert_id) == (
        first.expert_id,
        new.expert_id,
    )
    assert record.reason == "出差在外 / travelling" and record.skipped == []
    # The next decliner gets the next spare; then there is none left.
    second, updated = D.replace(updated, pool, new.expert_id, "生病 / ill")
    assert second.expert_id == spares[1].expert_id
    refused("NO_SPARE_LEFT", D.replace, updated, pool, second.expert_id, "无法联系 / unreachable")
    # The record recomputes offline, replacements included.
    assert D.verify(D.pool_snapshot(pool), SITES, request(), SR, SUP, HOST, updated) == []


def test_rule_replacement_skips_a_spare_no_longer_active_recorded() -> None:
    pool = spread_pool(10)
    result = draw(pool)
    spares = result.categories[0].spares
    later = [
        e.model_copy(update={"status": "suspended"}) if e.id == spares[0].expert_id else e
        for e in pool
    ]
    new, updated = D.replace(result, later, result.committee[0].expert_id, "拒绝 / declined")
    assert new.expert_id == spares[1].expert_id
    assert [(s.expert_id, s.why) for s in updated.replacements[0].skipped] == [
        (spares[0].expert_id, "inactive")
    ]
    assert D.verify(D.pool_snapshot(pool), SITES, request(), SR, SUP, HOST, updated) == []


def test_rule_replacement_keeps_the_region_rule() -> None:
    """A spare from the lead city may not replace the only outside expert the rule needs."""
    pool = [expert(i, city=LEAD_CITY) for i in range(40)] + [expert(900, city=CITY_B)]
    req = request(
        secondary_sites=1,
        min_outside_lead=1,
        categories=[CategoryDemand(category="A08.01.01", count=5, spares=3)],
    )
    result = draw(pool, req, sites=TWO_SITES)
    outsider = next(m for m in result.committee if m.site_id != "LEAD")
    refused("NO_SPARE_LEFT", D.replace, result, pool, outsider.expert_id, "拒绝 / declined")
    insider = next(m for m in result.committee if m.site_id == "LEAD")
    new, _ = D.replace(result, pool, insider.expert_id, "拒绝 / declined")
    assert new.site_id == "LEAD"


def test_rule_replace_needs_a_member_and_a_reason() -> None:
    pool = spread_pool(10)
    result = draw(pool)
    refused("EXPERT_NOT_MEMBER", D.replace, result, pool, "E99999", "reason")
    refused("REASON_REQUIRED", D.replace, result, pool, result.committee[0].expert_id, "  ")


# --- the archive: snapshot and verification ---------------------------------------------------------------


def test_rule_snapshot_keeps_no_personal_data() -> None:
    pool = spread_pool(3)
    snap = D.pool_snapshot(pool)
    assert [r["id"] for r in snap] == sorted(e.id for e in pool)
    for row, e in zip(snap, sorted(pool, key=lambda e: e.id), strict=True):
        assert set(row) == {
            "id",
            "categories",
            "city",
            "employer_credit_code",
            "employer_name_sha256",
            "status",
        }
        assert e.name not in str(row) and e.contact not in str(row) and e.employer not in str(row)
        assert row["employer_name_sha256"] == employer_name_sha256(e.employer)


def test_rule_pool_hash_is_hash_of_canonical_snapshot() -> None:
    pool = generate_pool(300, 5, [LEAD_CITY, CITY_B, CITY_C])
    result = draw(pool, request(categories=[CategoryDemand(category="A10", count=5)]))
    snap = D.pool_snapshot(pool)
    assert result.pool_sha256 == hashlib.sha256(canonical_json(snap)).hexdigest()


def test_rule_verify_recomputes_from_the_archive_and_names_differences() -> None:
    pool = spread_pool(20)
    req = request(min_outside_lead=2)
    result = draw(pool, req)
    snap = D.pool_snapshot(pool)
    assert D.verify(snap, SITES, req, SR, SUP, HOST, result) == []

    forged = result.model_copy(
        update={
            "committee": [
                result.committee[0].model_copy(update={"expert_id": "E09999"}),
                *result.committee[1:],
            ]
        }
    )
    diffs = D.verify(snap, SITES, req, SR, SUP, HOST, forged)
    assert diffs == [
        f"committee[0].expert_id: claimed 'E09999', recomputed '{result.committee[0].expert_id}'"
    ]

    # A snapshot changed after the fact no longer hashes to the recorded value.
    changed = [dict(r) for r in snap]
    changed[0]["status"] = "suspended" if changed[0]["status"] == "active" else "active"
    assert any(
        d.startswith("pool_sha256") for d in D.verify(changed, SITES, req, SR, SUP, HOST, result)
    )
    # Other entropy, other draw.
    assert D.verify(snap, SITES, req, SR, SUP, b"other", result)


def test_rule_duplicate_ids_in_the_pool_are_refused() -> None:
    pool = spread_pool(5)
    refused("POOL_INVALID", draw, [*pool, pool[3]])


# --- the documented layout, reimplemented independently -------------------------------------------------


def _independent_shuffle(seed: bytes, label: str, items: list[Any]) -> list[Any]:
    """The module docstring's byte layout, with hashlib only."""
    lab = label.encode()
    stream = b"".join(
        hashlib.sha256(
            b"bidbridge/draw/stream/v1\x00"
            + seed
            + len(lab).to_bytes(4, "big")
            + lab
            + i.to_bytes(8, "big")
        ).digest()
        for i in range(64)
    )
    pos = 0

    def uniform(n: int) -> int:
        nonlocal pos
        while True:
            x = int.from_bytes(stream[pos : pos + 4], "big")
            pos += 4
            if x < 2**32 - 2**32 % n:
                return x % n

    a = list(items)
    for i in range(len(a) - 1):
        j = i + uniform(len(a) - i)
        a[i], a[j] = a[j], a[i]
    return a


def test_documented_layout_is_reproduced_by_an_independent_implementation() -> None:
    seed_ = hashlib.sha256(
        b"bidbridge/draw/seed/v1\x00"
        + b"".join(len(v).to_bytes(4, "big") + v for v in (SR, SUP, HOST))
    ).digest()
    assert seed_ == D.seed(SR, SUP, HOST)
    for n in (0, 1, 2, 7, 50, 200):
        items = list(range(n))
        for label in ("sites", "experts/A08.01.01", "rooms/站点"):
            assert D.shuffle(items, seed_, label) == _independent_shuffle(seed_, label, items)

    # And the whole draw in the simple case: no region rule, one category, no avoidance.
    pool = spread_pool(10)
    result = draw(pool, request(secondary_sites=1, lead_room_id="LEAD-R1"))
    secondary = [
        s for s in sorted(SITES, key=lambda s: s.id) if s.city != LEAD_CITY and s.id != "SD"
    ]
    chosen = _independent_shuffle(seed_, "sites", secondary)[0]
    rooms = sorted(r.id for r in chosen.rooms if r.available)
    assert result.secondary_sites[0].site_id == chosen.id
    assert (
        result.secondary_sites[0].room_id
        == _independent_shuffle(seed_, f"rooms/{chosen.id}", rooms)[0]
    )
    cities = {LEAD_CITY, chosen.city}
    candidates = sorted(e.id for e in pool if e.city in cities)
    order = _independent_shuffle(seed_, "experts/A08.01.01", candidates)
    assert members(result) == order[:5]
    assert [s.expert_id for s in result.categories[0].spares] == order[5:7]


def test_rule_uniform_rejects_to_stay_unbiased() -> None:
    """n = 2**31 + 1 rejects almost half of the 32-bit words; values stay in range and match."""
    stream = D.SeedStream(D.seed(SR, SUP, HOST), "test")
    n = 2**31 + 1
    values = [stream.uniform(n) for _ in range(200)]
    assert all(0 <= v < n for v in values)
    label = b"test"
    words = b"".join(
        hashlib.sha256(
            b"bidbridge/draw/stream/v1\x00"
            + D.seed(SR, SUP, HOST)
            + len(label).to_bytes(4, "big")
            + label
            + i.to_bytes(8, "big")
        ).digest()
        for i in range(200)
    )
    raw = [int.from_bytes(words[k : k + 4], "big") for k in range(0, len(words), 4)]
    accepted = [x % n for x in raw if x < 2**32 - 2**32 % n]
    assert values == accepted[:200]
    assert len(accepted) < len(raw) * 0.6  # the rejection path really ran


# --- properties -------------------------------------------------------------------------------------------

CATS = ["A08.01.01", "A08.01.02", "A08.02.01", "B01.01.01", "B01.02.03"]
REQ_CATS = [*CATS, "A08.01", "A08", "B01", "B01.02"]
CITY_SET = [LEAD_CITY, CITY_B, CITY_C, CITY_D]
STATUSES: list[ExpertStatus] = ["active"] * 6 + ["suspended", "retired"]
EMPLOYERS = [
    ("甲公司", BIDDER_1),
    ("乙公司", BIDDER_2),
    ("甲公司", None),
    ("丙大学", OTHER),
    ("丁研究院", None),
]


@st.composite
def scenarios(draw_: st.DrawFn) -> tuple[list[Expert], list[Site], DrawRequest, bytes]:
    """Small random pools, sites and requests, shaped so that most draws can succeed."""
    n = draw_(st.integers(0, 80) | st.integers(20, 80))
    pool = []
    for i in range(n):
        employer, credit = draw_(st.sampled_from(EMPLOYERS))
        pool.append(
            expert(
                i,
                draw_(st.lists(st.sampled_from(CATS), min_size=1, max_size=3, unique=True)),
                draw_(st.sampled_from(CITY_SET)),
                employer=employer,
                credit=credit,
                status=draw_(st.sampled_from(STATUSES)),
            )
        )
    sites = []
    cities = [LEAD_CITY, *draw_(st.lists(st.sampled_from(CITY_SET), max_size=5))]
    for k, city in enumerate(cities):
        rooms = [
            Room(
                id=f"S{k}-R{r}",
                available=r == 0 or draw_(st.sampled_from([True, True, False])),
                seats=draw_(st.sampled_from([None, None, 2, 4, 9])),
            )
            for r in range(draw_(st.integers(0 if k else 1, 3)))
        ]
        sites.append(Site(id=f"S{k}", city=city, rooms=rooms))
    others = {
        s.city for s in sites[1:] if s.city != LEAD_CITY and any(r.available for r in s.rooms)
    }
    secondary = draw_(st.integers(0, len(others))) + (draw_(st.integers(0, 9)) == 7)
    # Mostly lawful committees, some not: (experts, owner representatives).
    experts, reps = draw_(
        st.sampled_from([(5, 0), (5, 0), (7, 0), (4, 1), (5, 2), (6, 1), (9, 0), (4, 0), (3, 2)])
    )
    cats = draw_(st.lists(st.sampled_from(REQ_CATS), min_size=1, max_size=3, unique=True))
    cats = cats[:experts]
    cuts = sorted(draw_(st.sets(st.integers(1, experts - 1), max_size=len(cats) - 1)))
    while len(cuts) < len(cats) - 1:
        cats.pop()
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, experts], strict=True)]
    demands = [
        CategoryDemand(category=c, count=size, spares=draw_(st.integers(0, 2)))
        for c, size in zip(cats, sizes, strict=True)
    ]
    req = DrawRequest(
        session_id="EV-P",
        lead_site_id="S0",
        secondary_sites=secondary,
        owner_reps=reps,
        categories=demands,
        min_outside_lead=draw_(st.sampled_from([0, 0, 1, 2, 4])),
        avoid_credit_codes=draw_(st.sampled_from([[], [BIDDER_1], [BIDDER_1, BIDDER_2]])),
        avoid_names=draw_(st.sampled_from([[], ["甲 公司"]])),
    )
    return pool, sites, req, draw_(st.binary(min_size=1, max_size=8))


REFUSALS = {
    "COMMITTEE_INVALID",
    "POOL_TOO_SMALL",
    "REGION_RULE_UNMET",
    "SEATS_TOO_FEW",
    "SITES_TOO_FEW",
    "SITES_INVALID",
    "ROOM_UNAVAILABLE",
}


def assert_rules(pool: list[Expert], sites: list[Site], req: DrawRequest, r: DrawResult) -> None:
    by_id = {e.id: e for e in pool}
    site_by_id = {s.id: s for s in sites}
    experts = len(r.committee)
    total = experts + req.owner_reps
    assert experts == sum(d.count for d in req.categories)
    assert total >= 5 and total % 2 == 1 and 3 * experts >= 2 * total
    # Sites: the lead, then distinct other cities, each with an available room.
    assert r.lead.site_id == req.lead_site_id
    cities = [r.lead.city] + [s.city for s in r.secondary_sites]
    assert len(cities) == len(set(cities)) == req.secondary_sites + 1
    room_of_city = {}
    for s in [r.lead, *r.secondary_sites]:
        room = next(x for x in site_by_id[s.site_id].rooms if x.id == s.room_id)
        assert room.available and site_by_id[s.site_id].city == s.city
        room_of_city[s.city] = (s.site_id, s.room_id, room.seats)
    avoid_names = {employer_name_sha256(n) for n in req.avoid_names}
    spares = [s.expert_id for c in r.categories for s in c.spares]
    picked = [m.expert_id for m in r.committee] + spares
    assert len(picked) == len(set(picked))
    for eid in picked:
        e = by_id[eid]
        assert e.status == "active" and e.city in cities
        assert e.employer_credit_code not in req.avoid_credit_codes
        assert e.employer_name_sha256 not in avoid_names
    for m in r.committee:
        e = by_id[m.expert_id]
        assert any(within(c, m.category) for c in e.categories)
        assert within(m.requested_category, m.category)
        assert (m.site_id, m.room_id) == room_of_city[e.city][:2]
    outside = sum(1 for m in r.committee if by_id[m.expert_id].city != r.lead.city)
    assert outside >= req.min_outside_lead
    per_room = Counter(m.room_id for m in r.committee)
    for site_id, room_id, seats in room_of_city.values():
        used = per_room[room_id] + (req.owner_reps if site_id == r.lead.site_id else 0)
        assert seats is None or used <= seats
    assert sorted(m.order for m in r.committee) == list(range(1, experts + 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_every_committee_keeps_every_rule_or_is_refused(
    scenario: tuple[list[Expert], list[Site], DrawRequest, bytes],
) -> None:
    pool, sites, req, host = scenario
    try:
        result = D.run_draw(pool, sites, req, SR, SUP, host)
    except Refusal as refusal:
        assert refusal.code in REFUSALS, refusal.line()
        return
    assert_rules(pool, sites, req, result)
    assert D.verify(D.pool_snapshot(pool), sites, req, SR, SUP, host, result) == []


@given(
    st.lists(st.integers(), max_size=80), st.binary(min_size=1, max_size=16), st.text(max_size=8)
)
def test_property_shuffle_is_a_permutation(items: list[int], entropy: bytes, label: str) -> None:
    seed_ = D.seed(SR, entropy, HOST)
    out = D.shuffle(items, seed_, label)
    assert sorted(out) == sorted(items)
    assert out == D.shuffle(items, seed_, label)
    # Lazily taken prefixes are prefixes of the whole shuffle.
    k = len(items) // 2
    it = D.shuffled(items, seed_, label)
    assert [next(it) for _ in range(k)] == out[:k]


# --- the synthetic pool ----------------------------------------------------------------------------------


def test_generated_pool_is_deterministic_and_realistic() -> None:
    cities = list(CITIES)[:4]
    one = generate_pool(3000, 11, cities)
    assert one == generate_pool(3000, 11, cities)
    assert one != generate_pool(3000, 12, cities)
    assert [e.id for e in one] == sorted(e.id for e in one)
    inactive = sum(e.status != "active" for e in one) / len(one)
    assert 0.01 < inactive < 0.08
    bidder_codes = {c for _, c in typical_bidders(11)}
    employed_by_bidders = sum(e.employer_credit_code in bidder_codes for e in one)
    assert 0.03 * len(one) < employed_by_bidders < 0.15 * len(one)
    assert any(e.employer_credit_code is None for e in one)
    sizes = Counter(c for e in one for c in e.categories)
    assert max(sizes.values()) > 20 * min(sizes.values())  # uneven, so fallbacks happen
    sites = generate_sites(cities, 11)
    assert {s.city for s in sites} == set(cities)
    bidders = typical_bidders(11)[:30]
    req = DrawRequest(
        session_id="EV-G",
        lead_site_id=sites[0].id,
        secondary_sites=2,
        owner_reps=2,
        categories=[
            CategoryDemand(category="A01.01.01", count=3),
            CategoryDemand(category="B02", count=2),
        ],
        min_outside_lead=2,
        avoid_credit_codes=[c for _, c in bidders],
        avoid_names=[n for n, _ in bidders],
    )
    result = D.run_draw(one, sites, req, SR, SUP, HOST)
    assert result.counts.avoided > 0
    assert_rules(one, sites, req, result)
