"""Bid-rigging and unfair-evaluation signals (围标串标、评标不公预警): facts in, warnings out.

Theory of operation. The server collects the facts of a lot's opening or of an evaluation from
the event log (``schemas.signals``) and calls the functions here; they are pure (no I/O, no
clock, no randomness), so recomputing them from an archive gives the same warnings with the same
ids. Each family of signs is one function:

* :func:`same_origin` - bids uploaded, rehearsed or decrypted from one network address; bids
  sealed on one machine (the fingerprint inside the signed package, ``crypto.fingerprint``).
* :func:`same_hands` - identical document files, identical author / last-modified-by metadata,
  identical odd errors in the bills of quantities (工程量清单).
* :func:`same_money` - deposits (保证金) paid from one account.
* :func:`price_patterns` - prices in an arithmetic progression, several prices in a very small
  band, a cluster hugging the ceiling, one low bid with high accompanying bids (陪标).
* :func:`certificate_trail` - several companies' CA keys used on one machine.
* :func:`unfair_evaluation` - an expert far from the committee on one bidder on every criterion,
  an expert who favours one bidder across projects, experts whose sheets are identical
  (in :mod:`server.domain.signals_evaluation`, re-exported here; both build their warnings with
  :mod:`server.domain.signals_base`).

Each :class:`~schemas.signals.Signal` has a score in [0, 1] (how strongly the sign alone points
at collusion, judged from how often it arises innocently), the subjects, an explanation in
Chinese and English with the numbers, and the events or files it rests on. :func:`combined`
joins a lot's signals into suspected rings.

False alarms are designed out where the innocent cause is known: the tender's own forms (files
in ``tender_hashes`` or shared by most bidders) and metadata shared by most bidders are not
signs; a shared address alone is weak (offices share NAT addresses) unless the uploads were
minutes apart; price patterns fire only when their chance probability, given the number of bids,
the spread of the lot (at least a floor share of the ceiling) and the rounding of the prices, is
small.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import combinations

from schemas.signals import (
    BidFacts,
    Evidence,
    LotFacts,
    Observation,
    PairScore,
    RingSuspicion,
    Signal,
)
from server.domain.signals_base import MAX_EVIDENCE as MAX_EVIDENCE
from server.domain.signals_base import build_signal as _signal
from server.domain.signals_base import event_evidence as _event
from server.domain.signals_evaluation import (  # re-exported: every signal is named here
    FAVOUR_EACH as FAVOUR_EACH,
)
from server.domain.signals_evaluation import (
    FAVOUR_MEAN as FAVOUR_MEAN,
)
from server.domain.signals_evaluation import (
    FAVOUR_MIN_PROJECTS as FAVOUR_MIN_PROJECTS,
)
from server.domain.signals_evaluation import (
    IDENTICAL_MIN_CELLS as IDENTICAL_MIN_CELLS,
)
from server.domain.signals_evaluation import (
    IDENTICAL_NEAR as IDENTICAL_NEAR,
)
from server.domain.signals_evaluation import (
    IDENTICAL_NEAR_MIN_CELLS as IDENTICAL_NEAR_MIN_CELLS,
)
from server.domain.signals_evaluation import (
    OUTLIER_DEVIATION as OUTLIER_DEVIATION,
)
from server.domain.signals_evaluation import (
    OUTLIER_MIN_CRITERIA as OUTLIER_MIN_CRITERIA,
)
from server.domain.signals_evaluation import (
    OUTLIER_MIN_EXPERTS as OUTLIER_MIN_EXPERTS,
)
from server.domain.signals_evaluation import (
    OUTLIER_STRONG as OUTLIER_STRONG,
)
from server.domain.signals_evaluation import (
    SCORE_IDENTICAL as SCORE_IDENTICAL,
)
from server.domain.signals_evaluation import (
    SCORE_IDENTICAL_NEAR as SCORE_IDENTICAL_NEAR,
)
from server.domain.signals_evaluation import (
    SCORE_OUTLIER as SCORE_OUTLIER,
)
from server.domain.signals_evaluation import (
    SCORE_OUTLIER_STRONG as SCORE_OUTLIER_STRONG,
)
from server.domain.signals_evaluation import (
    evaluation_signals as evaluation_signals,
)
from server.domain.signals_evaluation import (
    unfair_evaluation as unfair_evaluation,
)

# --- thresholds and scores (each with why) -------------------------------------------------------


ADDRESS_CLOSE = timedelta(minutes=15)
"""Uploads / rehearsals of two companies from one address this close are one person's batch."""
ADDRESS_NEAR = timedelta(hours=2)
SCORE_ADDRESS_CLOSE = 0.7
SCORE_ADDRESS_NEAR = 0.5
SCORE_ADDRESS_FAR = 0.35
"""Companies in one office building or on one carrier-grade NAT share public addresses; without
closeness in time a shared address is weak."""
SCORE_ADDRESS_DECRYPT_ONLY = 0.3
"""Every bidder decrypts in the same 30-minute window, so time says nothing there."""

SCORE_SEALING_MACHINE = 0.9
"""Two companies' packages sealed on one machine: an agent preparing both bids."""
SCORE_CERTIFICATE_TRAIL = 0.85
SCORE_CERTIFICATE_TRAIL_MANY = 0.9
"""Several companies' CA keys (USB tokens) used on one machine: one hand holds them."""

MIN_DOCUMENT_SIZE = 256
"""Tiny files (empty documents, one-line notes) are identical by accident."""
COMMON_SHARE = Decimal("0.7")
COMMON_MIN_BIDDERS = 3
"""A file, metadata value or BOQ error held by more than 70 % of the bidders, and by at least 3,
comes from the tender itself (its forms, its bill of quantities), not from collusion."""
SCORE_SAME_FILE = 0.85
SCORE_SAME_FILES = 0.9
SCORE_SAME_AUTHOR = 0.7
SCORE_SAME_AUTHORS = 0.8
DEFAULT_AUTHORS = frozenset(
    {
        "",
        "administrator",
        "admin",
        "user",
        "users",
        "owner",
        "microsoft",
        "microsoft office user",
        "微软用户",
        "微软中国",
        "windows 用户",
        "windows user",
        "用户",
        "unknown",
        "lenovo",
        "dell",
        "hp",
        "wps",
        "walkinnet",
        "deepinwin",
        "ylmf",
        "mc seamonkey",
    }
)
"""Names that installations fill in by default: shared by thousands of unrelated companies."""
SCORE_SAME_BOQ_ERROR = 0.8
SCORE_SAME_BOQ_ERRORS = 0.9
"""The same arithmetic slip on the same row, to the fen, is copied, not made twice."""

SCORE_SAME_DEPOSIT = 0.95
"""Two companies' deposits from one account: one payer (招标投标法实施条例 art. 40(6) lists it)."""

MIN_SPREAD_SHARE = Decimal("0.02")
"""Price patterns are judged against the lot's spread, but at least 2 % of the ceiling (or of the
median price): a lot whose bids all sit within 2 % is itself unusual."""
P_CHANCE = 0.02
"""A price pattern fires when its estimated chance probability under independent pricing is at
most 2 %: with one such test per lot, about 1 lot in 50 without collusion may fire by chance, at
the weak price scores below that alone stay under the ring threshold."""
AP_STEP_TOLERANCE = Decimal("0.001")
"""Gaps of a progression may differ by 0.1 % of the step (rounding a percentage to the fen)."""
SCORE_PROGRESSION = 0.45
SCORE_PROGRESSION_LONG = 0.65
BAND_SHARE = Decimal("0.003")
"""Prices within 0.3 % of the reference price of each other are "in a very small band"."""
SCORE_BAND = 0.4
SCORE_BAND_MANY = 0.55
CEILING_BAND = Decimal("0.005")
"""Bids within 0.5 % below the ceiling hug it."""
CEILING_MIN = 3
SCORE_CEILING = 0.3
"""Honest bidders in a competitive lot also bid near the ceiling: weak."""
ACCOMPANY_MIN_BIDS = 4
ACCOMPANY_GAP_RATIO = 3
ACCOMPANY_MIN_GAP_SHARE = Decimal("0.03")
ACCOMPANY_MAX_CLUSTER_SHARE = Decimal("0.025")
SCORE_ACCOMPANY = 0.35
"""One bid at least 3 % below all others, which sit within 2.5 % of each other and at least 3
times closer together than to the low bid: the shape of one winner and its accompanying bids."""

RING_THRESHOLD = 0.4
"""A pair of bidders is linked when their combined score (see :func:`pair_scores`) reaches this:
one strong trace, or two weak ones (a distant shared address and a close price), but not a
shared NAT address alone. Chosen on the benchmark's calibration seed as the threshold with the
highest F1 of pair precision and ring recall (``scripts/bench_signals.py --calibrate``, seed 1:
precision 0.945, recall 0.921); reported on seed 2."""

LOT_FAMILIES = frozenset(
    {"same_origin", "same_hands", "same_money", "price_patterns", "certificate_trail"}
)


def _names(bids: Mapping[str, BidFacts], ids: Iterable[str]) -> tuple[str, str]:
    names = [bids[i].bidder_name for i in sorted(ids)]
    en = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return "、".join(names), en


def _duration(delta: timedelta) -> tuple[str, str]:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} 秒", f"{seconds} seconds"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} 分钟", f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(seconds / 3600, 1)
    return f"{hours:g} 小时", f"{hours:g} hours"


def _by_id(facts: LotFacts) -> dict[str, BidFacts]:
    return {b.bidder_id: b for b in facts.bids}


def _is_common(holders: int, bidders: int) -> bool:
    """Held by most bidders of the lot: the tender's own material, not a sign."""
    return holders >= COMMON_MIN_BIDDERS and Decimal(holders) > COMMON_SHARE * bidders


def _sharing(
    facts: LotFacts, value: Callable[[BidFacts], str | None]
) -> list[tuple[str, list[BidFacts]]]:
    """The bids that share a value (a machine, an account): each value with its two or more
    bids, in the order of the values."""
    by_value: dict[str, list[BidFacts]] = defaultdict(list)
    for bid in facts.bids:
        v = value(bid)
        if v:
            by_value[v].append(bid)
    return [(v, by_value[v]) for v in sorted(by_value) if len(by_value[v]) >= 2]


def _by_holders(
    holders: Mapping[str, Collection[str]], bidders: int
) -> list[tuple[frozenset[str], list[str]]]:
    """Keys (names, errors) that the same two or more bidders hold, and not so many that they
    are common: each group of bidders with its keys, in order."""
    by_group: dict[frozenset[str], list[str]] = defaultdict(list)
    for key in sorted(holders):
        held = holders[key]
        if len(held) >= 2 and not _is_common(len(held), bidders):
            by_group[frozenset(held)].append(key)
    return [(group, by_group[group]) for group in sorted(by_group, key=sorted)]


# --- same origin ---------------------------------------------------------------------------------

_KIND_ZH = {"upload": "上传", "rehearsal": "解密演练", "decryption": "解密", "login": "登录"}
_KIND_EN = {
    "upload": "upload",
    "rehearsal": "rehearsal",
    "decryption": "decryption",
    "login": "login",
}


@dataclass(frozen=True)
class _Contact:
    bidder: str
    kind: str
    obs: Observation


def _contacts(bid: BidFacts, *, logins: bool) -> list[_Contact]:
    out = [_Contact(bid.bidder_id, "upload", o) for o in bid.uploads]
    out += [_Contact(bid.bidder_id, "rehearsal", o) for o in bid.rehearsals]
    out += [_Contact(bid.bidder_id, "decryption", o) for o in bid.decryptions]
    if logins:
        out += [_Contact(bid.bidder_id, "login", o) for o in bid.logins]
    return out


def _closest(contacts: Sequence[_Contact]) -> tuple[timedelta, _Contact, _Contact] | None:
    """The closest pair of timed contacts (uploads, rehearsals) of two different bidders."""
    timed = sorted(
        (c for c in contacts if c.kind in ("upload", "rehearsal")),
        key=lambda c: (c.obs.at, c.bidder, c.obs.seq or 0),
    )
    best: tuple[timedelta, _Contact, _Contact] | None = None
    for i, a in enumerate(timed):
        for b in timed[i + 1 :]:
            if b.bidder == a.bidder:
                continue
            gap = b.obs.at - a.obs.at
            if best is None or gap < best[0]:
                best = (gap, a, b)
            break
    return best


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def same_origin(facts: LotFacts) -> list[Signal]:
    """同源: bids uploaded, rehearsed or decrypted from one network address; bids sealed on one
    machine."""
    bids = _by_id(facts)
    out: list[Signal] = []
    by_addr: dict[str, list[_Contact]] = defaultdict(list)
    # The platform's own forwarders are configuration, not evidence. (A lot whose bids all come
    # from one other address is not excused: a ring that is the whole lot is the plainest case.)
    platform = set(facts.platform_addresses)
    for bid in facts.bids:
        for c in _contacts(bid, logins=False):
            if c.obs.addr and c.obs.addr not in platform:
                by_addr[c.obs.addr].append(c)
    for addr in sorted(by_addr):
        contacts = by_addr[addr]
        holders = {c.bidder for c in contacts}
        if len(holders) < 2:
            continue
        names_zh, names_en = _names(bids, holders)
        kinds = sorted({c.kind for c in contacts}, key=list(_KIND_ZH).index)
        kinds_zh = "、".join(_KIND_ZH[k] for k in kinds)
        kinds_en = ", ".join(_KIND_EN[k] for k in kinds)
        closest = _closest(contacts)
        if closest is None:
            score = SCORE_ADDRESS_DECRYPT_ONLY
            zh = f"投标人 {names_zh} 从同一网络地址 {addr} 进行了{kinds_zh}"
            en = f"bidders {names_en} used the same network address {addr} ({kinds_en})"
        else:
            gap, a, b = closest
            score = (
                SCORE_ADDRESS_CLOSE
                if gap <= ADDRESS_CLOSE
                else SCORE_ADDRESS_NEAR
                if gap <= ADDRESS_NEAR
                else SCORE_ADDRESS_FAR
            )
            gzh, gen = _duration(gap)
            zh = (
                f"投标人 {names_zh} 从同一网络地址 {addr} 进行了{kinds_zh}；"
                f"{bids[a.bidder].bidder_name} 的{_KIND_ZH[a.kind]}与 {bids[b.bidder].bidder_name} "
                f"的{_KIND_ZH[b.kind]}相隔 {gzh}"
            )
            en = (
                f"bidders {names_en} used the same network address {addr} ({kinds_en}); "
                f"the {_KIND_EN[a.kind]} of {bids[a.bidder].bidder_name} and the "
                f"{_KIND_EN[b.kind]} of {bids[b.bidder].bidder_name} were {gen} apart"
            )
        evidence = [
            _event(
                facts.session_id,
                c.obs.seq,
                f"{_KIND_EN[c.kind]} by {c.bidder} from {addr} at {_when(c.obs.at)}",
            )
            for c in sorted(contacts, key=lambda c: (c.obs.at, c.bidder))
        ]
        out.append(_signal("same_origin_address", score, holders, zh, en, evidence))

    for machine, group in _sharing(facts, lambda b: b.sealing_machine):
        ids = [b.bidder_id for b in group]
        names_zh, names_en = _names(bids, ids)
        short = machine[:12]
        zh = f"投标人 {names_zh} 的 {len(group)} 份投标文件在同一台计算机上加密封装（机器指纹 {short}…）"
        en = f"the {len(group)} bids of {names_en} were sealed on the same machine (fingerprint {short}...)"
        evidence = [
            _event(facts.session_id, b.sealing_seq, f"package of {b.bidder_id} sealed on {short}")
            for b in group
        ]
        out.append(_signal("same_origin_machine", SCORE_SEALING_MACHINE, ids, zh, en, evidence))
    return out


# --- certificate trail ---------------------------------------------------------------------------


def certificate_trail(facts: LotFacts) -> list[Signal]:
    """同一电脑使用多家单位 CA 锁: several companies' CA keys used on one machine (logins,
    uploads, rehearsals, decryptions carrying the agent's machine fingerprint)."""
    bids = _by_id(facts)
    by_machine: dict[str, list[_Contact]] = defaultdict(list)
    for bid in facts.bids:
        for c in _contacts(bid, logins=True):
            if c.obs.machine:
                by_machine[c.obs.machine].append(c)
    out: list[Signal] = []
    for machine in sorted(by_machine):
        contacts = by_machine[machine]
        holders = sorted({c.bidder for c in contacts})
        if len(holders) < 2:
            continue
        serials: dict[str, set[str]] = defaultdict(set)
        for c in contacts:
            if c.obs.cert_serial:
                serials[c.bidder].add(c.obs.cert_serial)
        names_zh, names_en = _names(bids, holders)
        short = machine[:12]
        with_serial = [
            f"{bids[h].bidder_name}（{', '.join(sorted(serials[h]))}）"
            for h in holders
            if serials[h]
        ]
        with_serial_en = [
            f"{bids[h].bidder_name} ({', '.join(sorted(serials[h]))})"
            for h in holders
            if serials[h]
        ]
        certs_zh = f"，证书序列号：{'；'.join(with_serial)}" if with_serial else ""
        certs_en = f"; certificate serials: {'; '.join(with_serial_en)}" if with_serial_en else ""
        zh = (
            f"{len(holders)} 家投标人 {names_zh} 的 CA 证书在同一台计算机（机器指纹 {short}…）上"
            f"使用了 {len(contacts)} 次{certs_zh}"
        )
        en = (
            f"the CA keys of {len(holders)} bidders, {names_en}, were used {len(contacts)} times "
            f"on the same machine (fingerprint {short}...){certs_en}"
        )
        evidence = [
            _event(
                facts.session_id,
                c.obs.seq,
                f"{_KIND_EN[c.kind]} by {c.bidder} with certificate {c.obs.cert_serial or '?'} "
                f"on {short} at {_when(c.obs.at)}",
            )
            for c in sorted(contacts, key=lambda c: (c.obs.at, c.bidder))
        ]
        score = SCORE_CERTIFICATE_TRAIL_MANY if len(holders) >= 3 else SCORE_CERTIFICATE_TRAIL
        out.append(_signal("certificate_trail", score, holders, zh, en, evidence))
    return out


# --- same hands ----------------------------------------------------------------------------------


def _norm_name(value: str | None) -> str:
    return " ".join((value or "").split()).casefold()


def same_hands(facts: LotFacts) -> list[Signal]:
    """同一人编制: identical document files, identical author / last-modified-by metadata,
    identical odd errors in the bills of quantities, across bidders."""
    bids = _by_id(facts)
    n = len(facts.bids)
    tender = set(facts.tender_hashes)
    out: list[Signal] = []

    # Files: sha256 -> bidder -> documents.
    files: dict[str, dict[str, list[tuple[BidFacts, int]]]] = defaultdict(lambda: defaultdict(list))
    for bid in facts.bids:
        for i, doc in enumerate(bid.documents):
            files[doc.sha256][bid.bidder_id].append((bid, i))
    template_docs = {
        (bid.bidder_id, i)
        for sha, holders in files.items()
        if sha in tender or _is_common(len(holders), n)
        for docs in holders.values()
        for bid, i in docs
    }
    shared: dict[frozenset[str], list[str]] = defaultdict(list)
    for sha in sorted(files):
        holders = files[sha]
        if len(holders) < 2 or sha in tender or _is_common(len(holders), n):
            continue
        first_bid, first_i = next(iter(holders.values()))[0]
        if first_bid.documents[first_i].size < MIN_DOCUMENT_SIZE:
            continue
        shared[frozenset(holders)].append(sha)
    for group in sorted(shared, key=sorted):
        shas = shared[group]
        names_zh, names_en = _names(bids, group)
        paths = sorted(
            {
                bid.documents[i].path
                for sha in shas
                for docs in files[sha].values()
                for bid, i in docs
            }
        )
        shown = "、".join(paths[:3]) + ("等" if len(paths) > 3 else "")
        shown_en = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        zh = (
            f"投标人 {names_zh} 的投标文件中有 {len(shas)} 个完全相同的文件（SHA-256 相同，"
            f"非招标文件范本）：{shown}"
        )
        en = (
            f"bids of {names_en} contain {len(shas)} identical file{'s' if len(shas) > 1 else ''} "
            f"(same SHA-256, not a tender form): {shown_en}"
        )
        evidence = []
        for sha in shas:
            for bidder in sorted(files[sha]):
                for bid, i in files[sha][bidder]:
                    doc = bid.documents[i]
                    ref = f"blob:{doc.package_sha256 or doc.sha256}#{doc.path}"
                    evidence.append(
                        Evidence(
                            session_id=facts.session_id,
                            seq=doc.seq,
                            ref=ref,
                            note=f"{bidder}: {doc.path} sha256 {sha[:16]}...",
                        )
                    )
        score = SCORE_SAME_FILES if len(shas) >= 3 else SCORE_SAME_FILE
        out.append(_signal("same_hands_file", score, group, zh, en, evidence))

    # Metadata: author and last-modified-by, outside the tender's forms.
    tender_names: set[str] = set()
    for bid in facts.bids:
        for i, doc in enumerate(bid.documents):
            if (bid.bidder_id, i) in template_docs:
                tender_names |= {_norm_name(doc.author), _norm_name(doc.last_modified_by)}
    names: dict[str, dict[str, list[tuple[str, BidFacts, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for bid in facts.bids:
        for i, doc in enumerate(bid.documents):
            if (bid.bidder_id, i) in template_docs:
                continue
            for field, value in (
                ("author", doc.author),
                ("last_modified_by", doc.last_modified_by),
            ):
                key = _norm_name(value)
                if key in DEFAULT_AUTHORS or key in tender_names:
                    continue
                names[key][bid.bidder_id].append((field, bid, i))
    for group, keys in _by_holders(names, n):
        names_zh, names_en = _names(bids, group)
        quoted: list[str] = []
        evidence = []
        for key in keys:
            original = ""
            for bidder in sorted(names[key]):
                for field, bid, i in names[key][bidder]:
                    doc = bid.documents[i]
                    original = (
                        original
                        or (doc.author if field == "author" else doc.last_modified_by)
                        or key
                    )
                    evidence.append(
                        Evidence(
                            session_id=facts.session_id,
                            seq=doc.seq,
                            ref=f"blob:{doc.package_sha256 or doc.sha256}#{doc.path}",
                            note=f"{bidder}: {doc.path} {field} = {original}",
                        )
                    )
            quoted.append(f"“{original}”")
        zh = f"投标人 {names_zh} 的文档属性中作者或最后修改人相同：{'、'.join(quoted)}"
        en = f"documents of {names_en} name the same author or last editor: {', '.join(quoted)}"
        score = SCORE_SAME_AUTHORS if len(keys) >= 2 else SCORE_SAME_AUTHOR
        out.append(_signal("same_hands_author", score, group, zh, en, evidence))

    # Odd errors in the bills of quantities.
    errors: dict[str, set[str]] = defaultdict(set)
    for bid in facts.bids:
        for sig in set(bid.boq_errors):
            errors[sig].add(bid.bidder_id)
    for group, sigs in _by_holders(errors, n):
        names_zh, names_en = _names(bids, group)
        shown_sigs = "; ".join(sigs[:4]) + ("; ..." if len(sigs) > 4 else "")
        zh = f"投标人 {names_zh} 的工程量清单有 {len(sigs)} 处相同的异常错误：{shown_sigs}"
        en = f"the bills of quantities of {names_en} share {len(sigs)} identical odd error{'s' if len(sigs) > 1 else ''}: {shown_sigs}"
        evidence = [
            _event(
                facts.session_id, bids[b].boq_seq, f"{b}: bill of quantities: {'; '.join(sigs[:4])}"
            )
            for b in sorted(group)
        ]
        score = SCORE_SAME_BOQ_ERRORS if len(sigs) >= 2 else SCORE_SAME_BOQ_ERROR
        out.append(_signal("same_hands_boq", score, group, zh, en, evidence))
    return out


# --- same money ----------------------------------------------------------------------------------


def same_money(facts: LotFacts) -> list[Signal]:
    """同一账户缴纳保证金: deposits paid from one account (its salted hash)."""
    bids = _by_id(facts)
    out: list[Signal] = []
    for account, group in _sharing(facts, lambda b: b.deposit_account):
        ids = [b.bidder_id for b in group]
        names_zh, names_en = _names(bids, ids)
        short = account[:12]
        zh = f"投标人 {names_zh} 的 {len(group)} 笔投标保证金从同一账户（账户摘要 {short}…）缴纳"
        en = f"the {len(group)} bid deposits of {names_en} were paid from the same account (account hash {short}...)"
        evidence = [
            _event(facts.session_id, b.deposit_seq, f"deposit of {b.bidder_id}") for b in group
        ]
        out.append(_signal("same_money_deposit", SCORE_SAME_DEPOSIT, ids, zh, en, evidence))
    return out


# --- price patterns ------------------------------------------------------------------------------


def _granularity(prices: Sequence[Decimal]) -> Decimal:
    """The largest power of ten (from 0.01) that divides every price: how the lot rounds."""
    g = Decimal("0.01")
    for exp in range(-1, 9):
        step = Decimal(10) ** exp
        if all(p % step == 0 for p in prices):
            g = step
        else:
            break
    return g


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def price_patterns(facts: LotFacts) -> list[Signal]:
    """报价规律性: prices in an arithmetic progression, several prices within a very small band,
    a cluster hugging the ceiling, one low bid with high accompanying bids.

    Each pattern is judged by its chance probability under independent pricing, given the number
    of priced bids n, the lot's spread R (at least ``MIN_SPREAD_SHARE`` of the ceiling or of the
    median) and the rounding g of the prices; it fires when that is at most ``P_CHANCE``.
    """
    bids = _by_id(facts)
    priced = sorted(
        ((b.price, b.bidder_id) for b in facts.bids if b.price is not None and b.price > 0),
        key=lambda t: (t[0], t[1]),
    )
    n = len(priced)
    if n < 3:
        return []
    prices = [p for p, _ in priced]
    ref = facts.ceiling_price if facts.ceiling_price is not None else statistics.median(prices)
    spread = max(prices[-1] - prices[0], MIN_SPREAD_SHARE * ref)
    g = _granularity(prices)
    out: list[Signal] = []

    def evidence_of(ids: Iterable[str], what: str) -> list[Evidence]:
        return [
            _event(
                facts.session_id,
                bids[i].price_seq,
                f"{what}: {i} price {_money(bids[i].price or Decimal(0))}",
            )
            for i in ids
        ]

    # Arithmetic progression: maximal runs of consecutive sorted prices with equal gaps.
    i = 0
    while i + 2 < n:
        step = prices[i + 1] - prices[i]
        j = i + 1
        if step > 0:
            tol = max(Decimal("0.01"), AP_STEP_TOLERANCE * step)
            while j + 1 < n and abs((prices[j + 1] - prices[j]) - step) <= tol:
                j += 1
        k = j - i + 1
        if k >= 3:
            mean_gap = spread / (n - 1)
            q = min(1.0, float((g + 2 * tol) / mean_gap))
            chance = (n - k + 1) * q ** (k - 2)
            if chance <= P_CHANCE:
                ids = [b for _, b in priced[i : j + 1]]
                names_zh, names_en = _names(bids, ids)
                listed = "、".join(_money(p) for p in prices[i : j + 1])
                zh = (
                    f"{k} 个报价构成等差数列，公差 {_money(step)} 元：{listed}"
                    f"（投标人 {names_zh}；偶然出现的概率约 {chance:.2%}）"
                )
                en = (
                    f"{k} prices form an arithmetic progression with step {_money(step)}: "
                    f"{listed.replace('、', ', ')} (bidders {names_en}; chance about {chance:.2%})"
                )
                score = SCORE_PROGRESSION_LONG if k >= 4 else SCORE_PROGRESSION
                out.append(
                    _signal(
                        "price_progression", score, ids, zh, en, evidence_of(ids, "progression")
                    )
                )
            i = j
        else:
            i += 1

    # A very small band: maximal windows of prices within BAND_SHARE of the reference.
    width_max = BAND_SHARE * ref
    last_end = -1
    for start in range(n):
        end = start
        while end + 1 < n and prices[end + 1] - prices[start] <= width_max:
            end += 1
        k = end - start + 1
        if k < 2 or end <= last_end:
            continue
        width = max(prices[end] - prices[start], g)
        chance = math.comb(n, k) * k * float(width / spread) ** (k - 1)
        if chance > P_CHANCE:
            continue
        last_end = end
        ids = [b for _, b in priced[start : end + 1]]
        names_zh, names_en = _names(bids, ids)
        share = float((prices[end] - prices[start]) / ref)
        zh = (
            f"{k} 个报价相差不超过 {_money(prices[end] - prices[start])} 元（参考价的 {share:.3%}）："
            f"投标人 {names_zh}；全部 {n} 个报价的离散范围为 {_money(prices[-1] - prices[0])} 元，"
            f"偶然出现的概率约 {chance:.2%}"
        )
        en = (
            f"{k} prices lie within {_money(prices[end] - prices[start])} of each other ({share:.3%} of "
            f"the reference price): bidders {names_en}; the {n} prices spread over "
            f"{_money(prices[-1] - prices[0])}, chance about {chance:.2%}"
        )
        score = SCORE_BAND_MANY if k >= 3 else SCORE_BAND
        out.append(_signal("price_band", score, ids, zh, en, evidence_of(ids, "band")))

    # A cluster hugging the ceiling while someone bids lower.
    if facts.ceiling_price is not None:
        ceiling = facts.ceiling_price
        floor = ceiling * (1 - CEILING_BAND)
        hugging = [(p, b) for p, b in priced if floor <= p <= ceiling]
        k = len(hugging)
        if CEILING_MIN <= k < n:
            reach = max(ceiling - prices[0], MIN_SPREAD_SHARE * ceiling)
            chance = math.comb(n, k) * float(CEILING_BAND * ceiling / reach) ** k
            if chance <= P_CHANCE:
                ids = [b for _, b in hugging]
                names_zh, names_en = _names(bids, ids)
                zh = (
                    f"{k} 个报价紧贴最高投标限价 {_money(ceiling)} 元（差距均不超过 {CEILING_BAND:.1%}）："
                    f"投标人 {names_zh}；最低报价为 {_money(prices[0])} 元，偶然出现的概率约 {chance:.2%}"
                )
                en = (
                    f"{k} prices hug the ceiling {_money(ceiling)} (all within {CEILING_BAND:.1%} below "
                    f"it): bidders {names_en}; the lowest price is {_money(prices[0])}, chance about "
                    f"{chance:.2%}"
                )
                out.append(
                    _signal(
                        "price_ceiling_cluster",
                        SCORE_CEILING,
                        ids,
                        zh,
                        en,
                        evidence_of(ids, "ceiling"),
                    )
                )

    # One low bid, the others close together well above it (陪标).
    if n >= ACCOMPANY_MIN_BIDS:
        low = prices[0]
        gap = prices[1] - low
        cluster = prices[-1] - prices[1]
        if (
            gap >= ACCOMPANY_MIN_GAP_SHARE * ref
            and cluster <= ACCOMPANY_MAX_CLUSTER_SHARE * ref
            and gap >= ACCOMPANY_GAP_RATIO * max(cluster, g)
        ):
            ids = [b for _, b in priced]
            low_name = bids[priced[0][1]].bidder_name
            zh = (
                f"最低报价 {_money(low)} 元（{low_name}）比其余 {n - 1} 个报价低 {_money(gap)} 元以上，"
                f"而其余报价彼此相差不超过 {_money(cluster)} 元：疑似一家中标、其余陪标"
            )
            en = (
                f"the lowest price {_money(low)} ({low_name}) is at least {_money(gap)} below the other "
                f"{n - 1}, which lie within {_money(cluster)} of each other: one winner with "
                f"accompanying bids"
            )
            out.append(
                _signal(
                    "price_accompanying",
                    SCORE_ACCOMPANY,
                    ids,
                    zh,
                    en,
                    evidence_of(ids, "accompanying"),
                )
            )
    return out


# --- the entry points ----------------------------------------------------------------------------


def lot_signals(facts: LotFacts) -> list[Signal]:
    """Every bid-rigging signal of one lot's opening, strongest first."""
    if len(facts.bids) < 2:
        return []
    found = (
        same_origin(facts)
        + same_hands(facts)
        + same_money(facts)
        + price_patterns(facts)
        + certificate_trail(facts)
    )
    return sorted(found, key=lambda s: (-s.score, s.kind, s.id))


def pair_scores(signals: Iterable[Signal]) -> dict[tuple[str, str], PairScore]:
    """The combined score of every pair of bidders named together by a lot signal.

    Per pair, the strongest signal of each kind counts once (two addresses shared are one trace,
    not two), and the kinds combine as independent evidence: ``1 - Π(1 - s_kind)``. Kinds are
    different traces (an address, a machine, a file, an account, a price shape), so treating them
    as independent is the simple, explainable choice; its over-confidence when traces share a
    cause (a copied file also copies its author) only matters for pairs that are already linked.
    """
    best: dict[tuple[str, str], dict[str, Signal]] = defaultdict(dict)
    for s in signals:
        if s.family not in LOT_FAMILIES:
            continue
        for a, b in combinations(sorted(set(s.subjects)), 2):
            kinds = best[(a, b)]
            if s.kind not in kinds or s.score > kinds[s.kind].score:
                kinds[s.kind] = s
    out: dict[tuple[str, str], PairScore] = {}
    for (a, b), kinds in best.items():
        miss = 1.0
        for s in kinds.values():
            miss *= 1 - s.score
        out[(a, b)] = PairScore(
            a=a, b=b, score=round(1 - miss, 3), signal_ids=sorted(s.id for s in kinds.values())
        )
    return out


def combined(signals: Sequence[Signal], threshold: float = RING_THRESHOLD) -> list[RingSuspicion]:
    """Suspected rings: the connected groups of bidders whose pair scores reach ``threshold``.

    A ring's score is its strongest link: the group is as suspicious as the best-proven pair in
    it, and a weak link never raises it."""
    pairs = {k: v for k, v in pair_scores(signals).items() if v.score >= threshold}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for x in list(parent):
        groups[find(x)].append(x)
    by_id = {s.id: s for s in signals}
    session = next((e.session_id for s in signals for e in s.evidence), "")
    out: list[RingSuspicion] = []
    for members in groups.values():
        members.sort()
        links = sorted(
            (p for (a, b), p in pairs.items() if a in members),
            key=lambda p: (-p.score, p.a, p.b),
        )
        ids = sorted({i for p in links for i in p.signal_ids})
        kinds = sorted({by_id[i].kind for i in ids if i in by_id})
        score = links[0].score
        zh = (
            f"{len(members)} 家投标人疑似围标串标（综合分 {score:.2f}，{len(links)} 对关联，"
            f"依据：{'、'.join(kinds)}）"
        )
        en = (
            f"{len(members)} bidders are suspected of bid rigging (combined score {score:.2f}, "
            f"{len(links)} linked pairs, from: {', '.join(kinds)})"
        )
        out.append(
            RingSuspicion(
                session_id=session,
                bidders=members,
                score=score,
                pairs=links,
                signal_ids=ids,
                explanation_zh=zh,
                explanation_en=en,
            )
        )
    return sorted(out, key=lambda r: (-r.score, r.bidders))
