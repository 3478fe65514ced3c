"""The verifiable expert draw (专家抽取): committee rules, secondary sites and rooms, experts, spares.

Theory of operation: the draw is a pure function of the pool, the sites, the request and three
random values, so that anyone holding the archive can compute it again and get the same
committee (DESIGN.md section 6). Before the draw the server publishes :func:`commitment` of its
random value; then the supervisor and the host each add entropy; then the server reveals its
value and :func:`run_draw` runs. The server cannot pick its value after seeing the others (it is
committed), and the host and supervisor cannot steer the outcome because they do not know the
server's value when they choose theirs. Nothing here reads a clock or a random source: the random
values are parameters. :func:`verify` recomputes a draw from an archived :func:`pool_snapshot`
and lists every difference from a claimed result.

Byte layout (what an independent verifier reimplements; ``||`` concatenates, ``H`` is SHA-256,
``u32``/``u64`` are unsigned big-endian integers of 4/8 bytes, labels are UTF-8)::

    commitment = hex( H( b"bidbridge/draw/commitment/v1\\x00" || server_random ) )

    seed = H( b"bidbridge/draw/seed/v1\\x00"
              || u32(len(server_random))      || server_random
              || u32(len(supervisor_entropy)) || supervisor_entropy
              || u32(len(host_entropy))       || host_entropy )

    stream(label) = B_0 || B_1 || B_2 || ...
        B_i = H( b"bidbridge/draw/stream/v1\\x00" || seed || u32(len(label)) || label || u64(i) )

    uniform(n), 2 <= n <= 2**32, reads the label's stream front to back:
        x = u32 of the next 4 bytes;  limit = 2**32 - (2**32 mod n)
        if x < limit: return x mod n   else: discard x and read the next 4 bytes (rejection)

    shuffle(a, label), forward Fisher-Yates over a list a of m items:
        for i in 0, 1, ..., m-2:  j = i + uniform(m - i);  swap a[i], a[j]
        (a prefix of the result needs only the first draws: the draw stops early)

Sizes: ``server_random`` 16..1024 bytes (the server uses 32), each entropy 1..1024 bytes.
Identifiers are compared and sorted as Python ``str`` (Unicode code points; ids are ASCII).

The draw, step by step (``run_draw``):

1. Committee rule (招标投标法 art. 37): members = sum of requested counts + ``owner_reps`` (业主代表,
   appointed, not drawn); at least 5, odd, experts at least two thirds. Else COMMITTEE_INVALID.
2. Lead site: ``lead_site_id``; its room is ``lead_room_id`` (must be available) or, if none is
   given, the first of ``shuffle(available rooms sorted by id, "rooms/<lead site id>")``.
3. Secondary sites (两随机: the sites and rooms are drawn too): candidates are the other sites in
   cities other than the lead's, with at least one available room, sorted by id; walk
   ``shuffle(candidates, "sites")`` and take a site unless a site of its city was already taken,
   until ``secondary_sites`` are taken (else SITES_TOO_FEW). Each taken site's room is the first
   of ``shuffle(its available rooms sorted by id, "rooms/<site id>")``.
4. Eligible experts: status ``active``; city is the lead's or a taken site's; not avoided (回避):
   the employer's credit code is in ``avoid_credit_codes`` or the employer's name key
   (``schemas.experts.employer_name_sha256``) equals that of a name in ``avoid_names``.
5. Per requested category, in ascending order of the code (an expert is taken at most once, as a
   member or a spare): candidates are the eligible experts not yet taken holding the code or a
   descendant. Fewer than ``count + spares``: go up to the parent code (recorded as a fallback
   with the counts), up to the top level; still fewer: POOL_TOO_SMALL. Sort the candidates by id
   and walk ``shuffle(candidates, "experts/<requested code>")``, stopping once the category's
   members and spares are complete. While members are needed, a candidate becomes the next member
   (``order`` counts members 1, 2, ... over all categories) if the room of its city has a seat
   left (``Room.seats``, None for no limit; the lead room also seats the ``owner_reps``) and,
   when it is from the lead city, if ``slots - 1 >= min_outside_lead - outside`` (``slots``:
   members still to draw over this and the later categories; ``outside``: members drawn so far
   from outside the lead city). Otherwise, or once the members are complete, it becomes the next
   spare while spares are needed. Members still missing when the candidates run out:
   REGION_RULE_UNMET (or SEATS_TOO_FEW). The region rule is applied greedily in category order:
   a refusal means this order could not meet it.
6. Each member and spare is assigned the drawn room of their city.

Eligibility counts: ``pool`` (all rows), ``in_region`` (city drawn, any status), ``active`` (of
those), ``avoided`` (of those), ``eligible`` (``active - avoided``).

``pool_sha256`` is ``H(canonical_json(pool_snapshot(pool)))``; ``sites_sha256`` is
``H(canonical_json([site.model_dump(mode="json") for site in sites sorted by id]))``;
``request_sha256`` is ``H(canonical_json(request.model_dump(mode="json")))``.

:func:`replace` gives a decliner's seat to the first spare of the decliner's requested category
who is not yet used, is still in the pool and active, and keeps the region and seat rules; a
spare skipped for a rule stays available for later replacements. All of it is recorded.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from schemas.canonical import canonical_json
from schemas.experts import (
    CategoryDraw,
    DrawnSite,
    DrawRequest,
    DrawResult,
    DrawRules,
    EligibleCounts,
    Expert,
    Fallback,
    Member,
    PoolRowError,
    PoolSnapshotRow,
    Replacement,
    Room,
    Site,
    SkippedSpare,
    SkipWhy,
    Spare,
    employer_name_sha256,
    normalize_employer_name,
    snapshot_rows_json,
)
from server.domain import errors as E
from server.domain.errors import Refusal
from server.domain.pool import PoolInvalid, parent, within

COMMITMENT_PREFIX = b"bidbridge/draw/commitment/v1\x00"
SEED_PREFIX = b"bidbridge/draw/seed/v1\x00"
STREAM_PREFIX = b"bidbridge/draw/stream/v1\x00"
SITES_LABEL = "sites"
SERVER_RANDOM_BYTES = (16, 1024)
ENTROPY_BYTES = (1, 1024)
_U32 = 1 << 32

T = TypeVar("T")


class CommitteeInvalid(Refusal):
    code = "COMMITTEE_INVALID"
    status = 422
    zh = "评标委员会应为 5 人以上单数，其中技术、经济等方面的专家不得少于成员总数的三分之二"
    en = "the committee must have 5 or more members, an odd number, at least two thirds of them experts (Tendering and Bidding Law, art. 37)"


class PoolTooSmall(Refusal):
    code = "POOL_TOO_SMALL"
    status = 409
    zh = "专家库中符合条件的专家不足"
    en = "too few eligible experts in the pool"


class RegionRuleUnmet(Refusal):
    code = "REGION_RULE_UNMET"
    status = 409
    zh = "无法满足异地专家人数要求"
    en = "the rule on experts from outside the lead city cannot be met"


class SeatsTooFew(Refusal):
    code = "SEATS_TOO_FEW"
    status = 409
    zh = "抽中的评标室座位不足"
    en = "the drawn rooms have too few seats"


class SitesTooFew(Refusal):
    code = "SITES_TOO_FEW"
    status = 409
    zh = "可供抽取的异地副场不足"
    en = "too few secondary sites in other cities with an available room"


class SitesInvalid(Refusal):
    code = "SITES_INVALID"
    status = 422
    zh = "场地信息有误"
    en = "the sites do not fit the request"


class RoomUnavailable(Refusal):
    code = "ROOM_UNAVAILABLE"
    status = 409
    zh = "主场评标室不可用"
    en = "the lead site has no available room"


class EntropyInvalid(Refusal):
    code = "ENTROPY_INVALID"
    status = 422
    zh = "随机数长度无效"
    en = "a random value has an invalid length"


class NotAMember(Refusal):
    code = "EXPERT_NOT_MEMBER"
    status = 404
    zh = "该专家不是本次抽取的评标委员会成员"
    en = "this expert is not a member of the drawn committee"


class NoSpareLeft(Refusal):
    code = "NO_SPARE_LEFT"
    status = 409
    zh = "该专业类别已无可用的候补专家，请重新抽取"
    en = "no spare of this category is left; draw again"


# --- the random values ------------------------------------------------------------------------------


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _check_length(value: bytes, bounds: tuple[int, int], what: str) -> None:
    low, high = bounds
    if not low <= len(value) <= high:
        raise EntropyInvalid(f"{what}: {len(value)} bytes, expected {low}..{high}")


def commitment(server_random: bytes) -> str:
    """Hex SHA-256 the server publishes before the draw: binds it to ``server_random``."""
    _check_length(server_random, SERVER_RANDOM_BYTES, "server_random")
    return hashlib.sha256(COMMITMENT_PREFIX + server_random).hexdigest()


def seed(server_random: bytes, supervisor_entropy: bytes, host_entropy: bytes) -> bytes:
    """The 32-byte seed: SHA-256 of the three values, each length-prefixed (module docstring)."""
    _check_length(server_random, SERVER_RANDOM_BYTES, "server_random")
    _check_length(supervisor_entropy, ENTROPY_BYTES, "supervisor_entropy")
    _check_length(host_entropy, ENTROPY_BYTES, "host_entropy")
    framed = b"".join(_u32(len(v)) + v for v in (server_random, supervisor_entropy, host_entropy))
    return hashlib.sha256(SEED_PREFIX + framed).digest()


class SeedStream:
    """The byte stream of one label: SHA-256 in counter mode (module docstring)."""

    def __init__(self, seed: bytes, label: str) -> None:
        encoded = label.encode("utf-8")
        self._prefix = STREAM_PREFIX + seed + _u32(len(encoded)) + encoded
        self._counter = 0
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self._pos == len(self._buf):
                self._buf = hashlib.sha256(self._prefix + self._counter.to_bytes(8, "big")).digest()
                self._counter += 1
                self._pos = 0
            take = min(n - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def uniform(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` by rejection sampling on 32-bit words."""
        if not 2 <= n <= _U32:
            raise ValueError(f"uniform() needs 2 <= n <= 2**32, not {n}")
        limit = _U32 - _U32 % n
        while True:
            pos = self._pos
            if pos + 4 <= len(self._buf):  # the usual case: a whole word left in the block
                self._pos = pos + 4
                x = int.from_bytes(self._buf[pos : pos + 4], "big")
            else:
                x = int.from_bytes(self.read(4), "big")
            if x < limit:
                return x % n


def shuffled(items: Sequence[T], seed: bytes, label: str) -> Iterator[T]:
    """The items in shuffled order, lazily: forward Fisher-Yates driven by ``stream(label)``."""
    a = list(items)
    stream = SeedStream(seed, label)
    m = len(a)
    for i in range(m - 1):
        j = i + stream.uniform(m - i)
        a[i], a[j] = a[j], a[i]
        yield a[i]
    if m:
        yield a[m - 1]


def shuffle(items: Sequence[T], seed: bytes, label: str) -> list[T]:
    """The whole shuffled list (a permutation of ``items``)."""
    return list(shuffled(items, seed, label))


# --- the committee rule -------------------------------------------------------------------------------


def check_committee(experts: int, owner_reps: int) -> None:
    """招标投标法 art. 37: 5 or more members, an odd number, experts at least two thirds."""
    total = experts + owner_reps
    if total < 5 or total % 2 == 0 or 3 * experts < 2 * total:
        raise CommitteeInvalid(f"{experts} experts + {owner_reps} owner representatives = {total}")


# --- the pool snapshot --------------------------------------------------------------------------------


class _Entry(Protocol):
    """What the draw reads of an expert: an ``Expert`` or an archived ``PoolSnapshotRow``."""

    @property
    def id(self) -> str: ...
    @property
    def categories(self) -> list[str]: ...
    @property
    def city(self) -> str: ...
    @property
    def employer_credit_code(self) -> str | None: ...
    @property
    def employer_name_sha256(self) -> str: ...
    @property
    def status(self) -> str: ...


def _sorted_pool(pool: Sequence[Expert]) -> list[Expert]:
    """The pool sorted by id; duplicate ids are refused (POOL_INVALID)."""
    ordered = sorted(pool, key=lambda e: e.id)
    errors = [
        PoolRowError(
            row=0,
            field="id",
            code="DUPLICATE_ID",
            zh="专家编号重复",
            en="duplicate expert id",
            value=b.id,
        )
        for a, b in itertools.pairwise(ordered)
        if a.id == b.id
    ]
    if errors:
        raise PoolInvalid(errors)
    return ordered


def pool_snapshot(pool: Sequence[Expert]) -> list[dict[str, Any]]:
    """What the archive keeps of the pool to recompute a draw: one row per expert, sorted by id.

    A row is ``id, categories (sorted), city, employer_credit_code, employer_name_sha256,
    status``: exactly what eligibility and ordering read. Names and contacts are left out, since
    recomputation does not need them. The employer's *name* is kept only as the SHA-256 of its
    normalized key, because avoidance compares names too and a verifier must be able to redo
    that from the bidders' and tenderer's names in the request. That hash hides the name from a
    casual reader but not from someone who can guess it (company names are few and public), so
    the snapshot is pseudonymous, not anonymous; the employer's credit code, a company identifier,
    is kept as is.
    """
    return [e.snapshot() for e in _sorted_pool(pool)]


def _pool_sha256(rows: list[bytes]) -> str:
    # Equal to H(canonical_json(pool_snapshot(pool))): canonical JSON joins list items with ","
    # and no whitespace, and each expert's row bytes are computed once (schemas.experts.Expert).
    # Hashed in slices: one 20 MB join for a 100,000-expert pool costs more than the hashing.
    digest = hashlib.sha256(b"[")
    for start in range(0, len(rows), 512):
        if start:
            digest.update(b",")
        digest.update(b",".join(rows[start : start + 512]))
    digest.update(b"]")
    return digest.hexdigest()


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sites_sha256(sites: Sequence[Site]) -> str:
    return _sha256_json([s.model_dump(mode="json") for s in sorted(sites, key=lambda s: s.id)])


def request_sha256(request: DrawRequest) -> str:
    return _sha256_json(request.model_dump(mode="json"))


# --- the draw -----------------------------------------------------------------------------------------


def run_draw(
    pool: Sequence[Expert],
    sites: Sequence[Site],
    request: DrawRequest,
    server_random: bytes,
    supervisor_entropy: bytes,
    host_entropy: bytes,
) -> DrawResult:
    """Draw the secondary sites, their rooms and the committee (module docstring, steps 1-6)."""
    draw_seed = seed(server_random, supervisor_entropy, host_entropy)
    check_committee(request.experts, request.owner_reps)

    def pool_sha256(ids_increase: bool) -> str:
        # A pool already sorted by id (as the store lists it) is hashed as it is; any other
        # order is sorted first, and a repeated id refused.
        return _pool_sha256(snapshot_rows_json(pool if ids_increase else _sorted_pool(pool)))

    return _draw(pool, pool_sha256, sites, request, draw_seed, commitment(server_random))


def _pick_room(site: Site, draw_seed: bytes) -> Room | None:
    rooms = sorted((r for r in site.rooms if r.available), key=lambda r: r.id)
    return next(shuffled(rooms, draw_seed, f"rooms/{site.id}"), None)


def _draw(
    entries: Sequence[_Entry],
    pool_sha256: Callable[[bool], str],
    sites: Sequence[Site],
    request: DrawRequest,
    draw_seed: bytes,
    commitment_hex: str,
) -> DrawResult:
    # Step 1.
    check_committee(request.experts, request.owner_reps)

    # Step 2: the lead site and its room.
    by_id: dict[str, Site] = {}
    for s in sites:
        if s.id in by_id:
            raise SitesInvalid(f"duplicate site id {s.id}")
        by_id[s.id] = s
    lead_site = by_id.get(request.lead_site_id)
    if lead_site is None:
        raise SitesInvalid(
            f"lead site {request.lead_site_id} is unknown",
            zh=f"主场 {request.lead_site_id} 不在场地列表中",
            en=f"the lead site {request.lead_site_id} is not among the sites",
        )
    if request.lead_room_id is not None:
        booked = [r for r in lead_site.rooms if r.id == request.lead_room_id]
        if not booked:
            raise SitesInvalid(
                f"room {request.lead_room_id} is not a room of {lead_site.id}",
                zh=f"主场没有编号为 {request.lead_room_id} 的评标室",
                en=f"the lead site has no room {request.lead_room_id}",
            )
        if not booked[0].available:
            raise RoomUnavailable(f"room {request.lead_room_id}")
        lead_room: Room | None = booked[0]
    else:
        lead_room = _pick_room(lead_site, draw_seed)
    if lead_room is None:
        raise RoomUnavailable(lead_site.id)
    lead = DrawnSite(
        site_id=lead_site.id,
        city=lead_site.city,
        room_id=lead_room.id,
        role="lead",
        seats=lead_room.seats,
    )

    # Step 3: the secondary sites and their rooms (两随机).
    candidates = sorted(
        (
            s
            for s in sites
            if s.id != lead.site_id and s.city != lead.city and any(r.available for r in s.rooms)
        ),
        key=lambda s: s.id,
    )
    secondary: list[DrawnSite] = []
    cities = {lead.city}
    if request.secondary_sites:
        for s in shuffled(candidates, draw_seed, SITES_LABEL):
            if s.city in cities:
                continue
            room = _pick_room(s, draw_seed)
            assert room is not None  # candidates have an available room
            secondary.append(
                DrawnSite(
                    site_id=s.id, city=s.city, room_id=room.id, role="secondary", seats=room.seats
                )
            )
            cities.add(s.city)
            if len(secondary) == request.secondary_sites:
                break
    if len(secondary) < request.secondary_sites:
        found = len(secondary)
        raise SitesTooFew(
            f"{found} of {request.secondary_sites}",
            zh=f"异地副场不足：需要 {request.secondary_sites} 个，可抽取 {found} 个",
            en=f"{request.secondary_sites} secondary sites asked for, {found} can be drawn",
        )
    site_of_city = {d.city: d for d in (lead, *secondary)}

    # Seats and the region rule, before drawing anyone.
    seats_left: dict[str, int | None] = {d.site_id: d.seats for d in (lead, *secondary)}
    if lead.seats is not None:
        seats_left[lead.site_id] = lead.seats - request.owner_reps
        if lead.seats < request.owner_reps:
            raise SeatsTooFew(f"lead room {lead.room_id}: {lead.seats} seats")
    total_seats = _capacity(seats_left.values())
    if total_seats is not None and total_seats < request.experts:
        raise SeatsTooFew(f"{total_seats} seats for {request.experts} experts")
    outside_seats = _capacity(seats_left[d.site_id] for d in secondary)
    outside_cap = min(request.experts, request.experts if outside_seats is None else outside_seats)
    if not secondary:
        outside_cap = 0
    if outside_cap < request.min_outside_lead:
        raise RegionRuleUnmet(
            f"at most {outside_cap} of {request.min_outside_lead} from outside the lead city",
            zh=f"异地专家至少需要 {request.min_outside_lead} 人，最多只能抽取 {outside_cap} 人",
            en=f"{request.min_outside_lead} experts from outside the lead city are required, "
            f"at most {outside_cap} can be drawn",
        )

    # Step 4: who is eligible.
    counts, by_code, ids_increase = _eligible(entries, cities, request)
    pool_hash = pool_sha256(ids_increase)

    # Step 5: the experts, category by category.
    taken: set[str] = set()
    committee: list[Member] = []
    outcomes: list[CategoryDraw] = []
    fallbacks: list[Fallback] = []
    demands = sorted(request.categories, key=lambda d: d.category)
    slots_left = request.experts
    outside_needed = request.min_outside_lead
    for demand in demands:
        needed = demand.count + demand.spares
        level = demand.category
        while True:
            pool_here = _candidates(by_code, level, taken)
            if len(pool_here) >= needed:
                break
            up = parent(level)
            if up is None:
                raise PoolTooSmall(
                    f"category {demand.category}: {len(pool_here)} eligible up to {level}, "
                    f"{needed} needed",
                    zh=f"专业类别 {demand.category} 符合条件的专家不足：上溯至 {level} 仍只有 "
                    f"{len(pool_here)} 人，需要 {needed} 人（含候补）",
                    en=f"too few eligible experts for category {demand.category}: "
                    f"{len(pool_here)} up to {level}, {needed} needed (spares included)",
                )
            fallbacks.append(
                Fallback(
                    requested_category=demand.category,
                    from_category=level,
                    to_category=up,
                    available=len(pool_here),
                    needed=needed,
                )
            )
            level = up

        members_needed = demand.count
        spares: list[Spare] = []
        skipped: set[SkipWhy] = set()
        for e in shuffled(pool_here, draw_seed, f"experts/{demand.category}"):
            if members_needed == 0 and len(spares) == demand.spares:
                break
            place = site_of_city[e.city]
            if members_needed:
                free = seats_left[place.site_id]
                outside = place.role == "secondary"
                if free is not None and free <= 0:
                    skipped.add("seats")
                elif not outside and slots_left - 1 < outside_needed:
                    skipped.add("region_rule")
                else:
                    if free is not None:
                        seats_left[place.site_id] = free - 1
                    members_needed -= 1
                    slots_left -= 1
                    if outside:
                        outside_needed = max(0, outside_needed - 1)
                    taken.add(e.id)
                    committee.append(
                        Member(
                            expert_id=e.id,
                            category=level,
                            requested_category=demand.category,
                            site_id=place.site_id,
                            room_id=place.room_id,
                            order=len(committee) + 1,
                        )
                    )
                    continue
            if len(spares) < demand.spares:
                taken.add(e.id)
                spares.append(Spare(expert_id=e.id, site_id=place.site_id, room_id=place.room_id))
        if members_needed:
            short = f"category {demand.category}: {members_needed} member(s) missing"
            if "region_rule" in skipped:
                raise RegionRuleUnmet(short)
            raise SeatsTooFew(short)
        outcomes.append(
            CategoryDraw(
                requested_category=demand.category,
                category=level,
                count=demand.count,
                candidates=len(pool_here),
                spares=spares,
            )
        )

    return DrawResult(
        session_id=request.session_id,
        seed=draw_seed.hex(),
        commitment=commitment_hex,
        request_sha256=request_sha256(request),
        sites_sha256=sites_sha256(sites),
        pool_sha256=pool_hash,
        counts=counts,
        rules=DrawRules(min_outside_lead=request.min_outside_lead, owner_reps=request.owner_reps),
        lead=lead,
        secondary_sites=secondary,
        committee=committee,
        categories=outcomes,
        fallbacks=fallbacks,
    )


def _eligible(
    entries: Sequence[_Entry], cities: set[str], request: DrawRequest
) -> tuple[EligibleCounts, dict[str, list[_Entry]], bool]:
    """Step 4: who is active, in a drawn city and not avoided (回避), indexed by category held;
    and whether the ids strictly increase (the pool is sorted and has no repeated id).

    One pass, each expert touched once: this runs over every expert of a pool of 100,000.
    """
    avoid_codes: set[str | None] = set(request.avoid_credit_codes)  # None is never in it
    avoid_names = {
        employer_name_sha256(n) for n in request.avoid_names if normalize_employer_name(n)
    }
    by_code: defaultdict[str, list[_Entry]] = defaultdict(list)
    in_region = active = avoided = 0
    previous = ""
    increasing = True
    for e in entries:
        eid = e.id
        if eid <= previous:
            increasing = False
        previous = eid
        if e.city not in cities:
            continue
        in_region += 1
        if e.status != "active":
            continue
        active += 1
        if e.employer_credit_code in avoid_codes or (
            avoid_names and e.employer_name_sha256 in avoid_names
        ):
            avoided += 1
            continue
        for c in e.categories:
            by_code[c].append(e)
    counts = EligibleCounts(
        pool=len(entries),
        in_region=in_region,
        active=active,
        avoided=avoided,
        eligible=active - avoided,
    )
    return counts, by_code, increasing


def _capacity(seats: Iterable[int | None]) -> int | None:
    """The sum of the seats, or None when any of them is unlimited."""
    total = 0
    for s in seats:
        if s is None:
            return None
        total += s
    return total


def _candidates(by_code: Mapping[str, list[_Entry]], level: str, taken: set[str]) -> list[_Entry]:
    """Eligible experts not yet taken holding ``level`` or a descendant, sorted by id."""
    found: dict[str, _Entry] = {}
    for code, holders in by_code.items():
        if within(code, level):
            for e in holders:
                if e.id not in taken:
                    found[e.id] = e
    return [found[k] for k in sorted(found)]


# --- replacing a decliner -----------------------------------------------------------------------------


def replace(
    result: DrawResult,
    pool: Sequence[Expert] | None,
    declined_expert_id: str,
    reason: str,
) -> tuple[Member, DrawResult]:
    """The next spare of the decliner's category takes the seat; the result records it.

    ``pool`` is the pool now: a spare no longer in it, or no longer active, is skipped and the
    skip recorded. Pass None to skip that check (the draw-time pool is then trusted).
    """
    reason = reason.strip()
    if not reason:
        raise E.ReasonRequired()
    unavailable: dict[str, SkipWhy] = {}
    if pool is not None:
        spare_ids = {s.expert_id for c in result.categories for s in c.spares}
        now = {e.id: e.status for e in pool if e.id in spare_ids}
        for sid in spare_ids:
            status = now.get(sid)
            if status is None:
                unavailable[sid] = "not_in_pool"
            elif status != "active":
                unavailable[sid] = "inactive"
    return _replace(result, declined_expert_id, reason, unavailable)


def _replace(
    result: DrawResult,
    declined_expert_id: str,
    reason: str,
    unavailable: Mapping[str, SkipWhy],
) -> tuple[Member, DrawResult]:
    index = next(
        (i for i, m in enumerate(result.committee) if m.expert_id == declined_expert_id), None
    )
    if index is None:
        raise NotAMember(declined_expert_id)
    member = result.committee[index]
    outcome = next(
        c for c in result.categories if c.requested_category == member.requested_category
    )
    used = {m.expert_id for m in result.committee}
    for r in result.replacements:
        used.add(r.declined_expert_id)
        used.update(s.expert_id for s in r.skipped if s.why in ("not_in_pool", "inactive"))

    lead = result.lead
    seats_left: dict[str, int | None] = {
        d.site_id: d.seats for d in (lead, *result.secondary_sites)
    }
    if lead.seats is not None:
        seats_left[lead.site_id] = lead.seats - result.rules.owner_reps
    for m in result.committee:
        free = seats_left[m.site_id]
        if free is not None:
            seats_left[m.site_id] = free - 1
    if seats_left[member.site_id] is not None:
        seats_left[member.site_id] = (seats_left[member.site_id] or 0) + 1
    outside = sum(1 for m in result.committee if m.site_id != lead.site_id)
    if member.site_id != lead.site_id:
        outside -= 1

    skipped: list[SkippedSpare] = []
    for spare in outcome.spares:
        if spare.expert_id in used:
            continue
        why = unavailable.get(spare.expert_id)
        free = seats_left[spare.site_id]
        if why is None and free is not None and free <= 0:
            why = "seats"
        if (
            why is None
            and outside + (spare.site_id != lead.site_id) < result.rules.min_outside_lead
        ):
            why = "region_rule"
        if why is not None:
            skipped.append(SkippedSpare(expert_id=spare.expert_id, why=why))
            continue
        new = Member(
            expert_id=spare.expert_id,
            category=outcome.category,
            requested_category=outcome.requested_category,
            site_id=spare.site_id,
            room_id=spare.room_id,
            order=member.order,
        )
        committee = list(result.committee)
        committee[index] = new
        record = Replacement(
            declined_expert_id=member.expert_id,
            replacement_expert_id=new.expert_id,
            requested_category=outcome.requested_category,
            order=member.order,
            reason=reason,
            skipped=skipped,
        )
        updated = result.model_copy(
            update={"committee": committee, "replacements": [*result.replacements, record]}
        )
        return new, updated
    raise NoSpareLeft(
        f"category {outcome.requested_category}",
        zh=f"专业类别 {outcome.requested_category} 已无可用的候补专家，请重新抽取",
        en=f"no spare of category {outcome.requested_category} is left; draw again",
    )


# --- verification -------------------------------------------------------------------------------------


def verify(
    snapshot: Sequence[Mapping[str, Any]],
    sites: Sequence[Site],
    request: DrawRequest,
    server_random: bytes,
    supervisor_entropy: bytes,
    host_entropy: bytes,
    claimed: DrawResult,
) -> list[str]:
    """Recompute the draw (and its recorded replacements) from the archive; list the differences.

    An empty list means the claimed result is exactly what these inputs give. Spares skipped at
    replacement time because they had left the pool or were no longer active are taken from the
    claimed record: the pool's later state is not part of the draw-time snapshot.
    """
    diffs: list[str] = []
    rows: list[PoolSnapshotRow] = []
    for i, raw in enumerate(snapshot):
        try:
            rows.append(PoolSnapshotRow.model_validate(dict(raw)))
        except ValidationError as exc:
            first = exc.errors()[0]
            diffs.append(f"snapshot[{i}]: not a valid pool snapshot row: {first['msg']}")
    if diffs:
        return diffs
    ids = [r.id for r in rows]
    if any(a >= b for a, b in itertools.pairwise(ids)):
        diffs.append("snapshot: rows are not sorted by id, or an id appears twice")
    try:
        claimed_commitment = commitment(server_random)
        draw_seed = seed(server_random, supervisor_entropy, host_entropy)
    except Refusal as refusal:
        return [*diffs, f"random values: {refusal.line()}"]
    if claimed_commitment != claimed.commitment:
        diffs.append("commitment: the revealed server random does not match the commitment")
    pool_hash = _sha256_json([dict(r) for r in snapshot])
    try:
        recomputed = _draw(rows, lambda _: pool_hash, sites, request, draw_seed, claimed_commitment)
        for step, r in enumerate(claimed.replacements):
            status_skips = {
                s.expert_id: s.why for s in r.skipped if s.why in ("not_in_pool", "inactive")
            }
            try:
                _, recomputed = _replace(recomputed, r.declined_expert_id, r.reason, status_skips)
            except Refusal as refusal:
                diffs.append(f"replacements[{step}]: recomputation refused: {refusal.line()}")
                break
    except Refusal as refusal:
        return [*diffs, f"draw: recomputation refused: {refusal.line()}"]
    diffs.extend(_diff("", claimed.model_dump(mode="json"), recomputed.model_dump(mode="json")))
    return diffs


def _diff(path: str, claimed: Any, actual: Any) -> list[str]:
    if isinstance(claimed, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(claimed) | set(actual)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: claimed but not recomputed")
            elif key not in claimed:
                out.append(f"{sub}: missing from the claim")
            else:
                out.extend(_diff(sub, claimed[key], actual[key]))
        return out
    if isinstance(claimed, list) and isinstance(actual, list):
        out = []
        if len(claimed) != len(actual):
            out.append(f"{path}: claimed {len(claimed)} entries, recomputed {len(actual)}")
        for i, (c, a) in enumerate(zip(claimed, actual, strict=False)):
            out.extend(_diff(f"{path}[{i}]", c, a))
        return out
    if claimed != actual:
        return [f"{path}: claimed {claimed!r}, recomputed {actual!r}"]
    return []
