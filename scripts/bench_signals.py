#!/usr/bin/env python3
"""Benchmark: precision and recall of the bid-rigging and unfair-evaluation signals on a
synthetic market with planted rigging rings and planted biased experts.

How the market is made (all from one ``random.Random(seed)``, so a seed gives the same market):

* **Companies and experts.** 400 companies (credit code, name, own public address, own machine,
  own deposit account, two staff names drawn from common Chinese surnames and given names, so
  that unrelated companies sometimes share a staff name) and 100 experts. The small market makes
  the same companies and experts meet again across lots, as in one city's trading centre.
* **Lots.** ``--lots`` lots (default 600), 3 to 12 bidders each (mostly 4 to 8). A ceiling price
  (最高投标限价) between 300,000 and 100,000,000 yuan in 85 % of lots. Honest prices are drawn
  independently: in "competitive" lots (30 %) between 96.5 % and 100 % of the ceiling, otherwise
  between 80 % and 99 %; rounded to the fen (50 %), the yuan (30 %) or 1,000 yuan (20 %).
* **Rings.** 40 % of lots hold one ring of 2 to 5 bidders (never more than the lot has). Each
  ring leaves each trace independently with this probability:

  ======================================  ====  ===========================================
  trace                                    p     how
  ======================================  ====  ===========================================
  shared network address                   0.40  members upload (and with p 0.5 decrypt) from
                                                 the organiser's address; 75 % upload as one
                                                 batch minutes apart, else at unrelated times
  shared sealing machine                   0.30  members' packages sealed on the organiser's
                                                 machine (fingerprint of that machine)
  several companies' keys on one machine   0.25  members log in from the organiser's machine
  shared document author                   0.35  members' proposals name the organiser's staff
  copied file                              0.30  an identical 20-60 kB file in members' bids
  shared odd BOQ error                     0.25  members' bills copied from one base with a slip
  same deposit account                     0.15  deposits paid from the organiser's account
  price pattern                            0.60  one of: progression (step 0.5-2 %), tight band
                                                 (within 0.05 %), accompanying bids near the
                                                 ceiling with one low winner, ceiling hugging
  ======================================  ====  ===========================================

  A trace touches all members with p 0.7, otherwise a random subset of at least two. A ring may
  leave no trace at all (about 1 in 9): it counts as a miss, as it would in life.
* **Noise** (innocent look-alikes the signals must survive): in 8 % of lots two honest bidders
  share an office NAT address (independent upload times, same decryption window); every bid
  carries the tender's form files (their hashes are given as ``tender_hashes`` in 60 % of lots,
  otherwise the "shared by most bidders" rule must find them); in 50 % of lots the filled-in
  forms keep the tender agent's author name; 30 % of honest documents name an installation
  default author ("Administrator"); honest bills of quantities have independent slips (3 % of
  rows) and odd units (1 %); in 15 % of lots the tender's own bill has an odd unit every
  bidder keeps; competitive lots hug the ceiling; deposit data exists in 70 % of lots.
* **Evaluations.** Every lot is evaluated by 5 experts drawn from the 100, on 4 to 6 criteria
  (maxima 5 to 20 points, scores in half points). An expert's score is the bid's quality plus
  the expert's general leniency, an impression of that bid shared by all criteria (sd 4 % of
  the maximum) and per-criterion noise (sd 7 %); in 1 % of (expert, bid) cells an honest expert
  marks a bid down by 25 % on every criterion (they saw a flaw). **Planted:** 8 biased experts,
  each overscoring one favoured company by 15-30 % of every maximum whenever they meet, with 4
  evaluations placed so that both take part (there the favoured bid is a middling one, so that the favour is not
  lost at full marks); 10 copying pairs: in one evaluation an expert submits a colleague's sheet
  (exactly in 80 %, with one score changed in 20 %).

What is measured. Per lot, ``lot_signals`` and ``combined`` run on the facts. A flagged pair of
bidders (named together by a signal, or inside one suspected ring) is a true positive when both
are in the same planted ring; a ring is recalled when at least two of its members are flagged
together. Per signal family every signal counts (no threshold); the combined score counts the
pairs inside the rings ``combined`` returns at ``RING_THRESHOLD``. Evaluations run in order,
each with the earlier ones as ``history``; an expert signal is a true positive when it names a
planted (expert, favoured company) or copying pair, and a planted pair is recalled when some
signal names it.

The ring threshold was chosen on seed 1 with ``--calibrate`` (the threshold with the highest F1
of pair precision and ring recall there) and is reported on seed 2 (the default). Runs in a few
seconds.

    .venv/bin/python scripts/bench_signals.py                  # 600 lots, seed 2
    .venv/bin/python scripts/bench_signals.py --calibrate      # sweep thresholds on seed 1
    .venv/bin/python scripts/bench_signals.py --lots 2000 --seed 7 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import combinations

import _repo  # noqa: F401  (puts the repository on sys.path)

from crypto.fingerprint import machine_fingerprint
from schemas.common import uscc_check_char
from schemas.signals import (
    FAMILY,
    BidFacts,
    CriterionFact,
    DocumentFact,
    EvaluationFacts,
    LotFacts,
    Observation,
    SheetFact,
    Signal,
)
from server.domain import signals as S
from server.signals import docmeta

COMPANIES = 400
EXPERTS = 100
RING_SHARE = 0.4
TRACE_P = {
    "address": 0.40,
    "sealing": 0.30,
    "certificate": 0.25,
    "author": 0.35,
    "file": 0.30,
    "boq": 0.25,
    "deposit": 0.15,
    "price": 0.60,
}
NAT_SHARE = 0.08
BIASED_EXPERTS = 8
BIAS_PROJECTS = 4
COPY_PAIRS = 10
CALIBRATION_SEED = 1
EVALUATION_SEED = 2
TARGET_PRECISION = 0.8

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀兰",
    "霞",
    "平",
    "刚",
    "桂英",
    "建华",
    "建国",
    "建军",
    "志强",
    "志明",
    "海燕",
    "红梅",
    "晓东",
    "晓明",
    "文杰",
    "俊杰",
    "浩然",
    "子豪",
    "宇航",
    "欣怡",
    "雨萱",
    "梓涵",
    "国庆",
    "卫东",
    "春梅",
    "秋菊",
    "立新",
    "振华",
    "永刚",
    "玉兰",
    "凤英",
    "德明",
    "佳怡",
    "思远",
    "天翼",
    "海涛",
    "鹏飞",
    "晨曦",
    "雪梅",
    "长江",
    "金龙",
    "新民",
    "少华",
    "光明",
]
SURNAME_WEIGHTS = [1 / (rank + 6) for rank in range(len(SURNAMES))]
DEFAULT_AUTHORS = ["Administrator", "User", "微软用户", "Windows 用户"]
ODD_UNITS = ["立米", "平米", "M3 ", "吨.", "个个", "m^2"]
UNITS = ["m3", "m2", "t", "m", "个", "项", "台", "套"]


def credit(n: int) -> str:
    first17 = f"9144{n % 10000:04d}MA{n:09d}"[:17]
    return first17 + uscc_check_char(first17)


def staff_name(rng: random.Random) -> str:
    # Surnames weighted like the real ranking (the most common about 7 % of people, the 100th
    # about 0.3 %); given names from a short list of popular ones, so that unrelated companies
    # sometimes do have a staff member of the same name.
    return rng.choices(SURNAMES, SURNAME_WEIGHTS)[0] + rng.choice(GIVEN)


def public_addr(rng: random.Random) -> str:
    return (
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def hexid(rng: random.Random, n: int = 32) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


@dataclass
class Company:
    id: str
    name: str
    addr: str
    machine: bytes
    mac: str
    account: str
    staff: list[str]
    cert: str


@dataclass
class Lot:
    facts: LotFacts
    ring: frozenset[str]
    traces: frozenset[str] = frozenset()


@dataclass
class Truth:
    bias: set[tuple[str, str]] = field(default_factory=set)
    copies: set[frozenset[str]] = field(default_factory=set)


def make_companies(rng: random.Random) -> list[Company]:
    out = []
    for i in range(COMPANIES):
        out.append(
            Company(
                id=credit(i + 1),
                name=f"第{i + 1}建设公司",
                addr=public_addr(rng),
                machine=hexid(rng).encode(),
                mac=":".join(f"{rng.randint(0, 255):02x}" for _ in range(6)),
                account=hexid(rng, 64),
                staff=[staff_name(rng), staff_name(rng)],
                cert=hexid(rng, 16).upper(),
            )
        )
    return out


def round_price(rng: random.Random, value: float, mode: str) -> Decimal:
    if mode == "fen":
        return Decimal(f"{value:.2f}")
    if mode == "yuan":
        return Decimal(round(value))
    return Decimal(round(value / 1000) * 1000)


def subset(rng: random.Random, members: list[str]) -> list[str]:
    if rng.random() < 0.7 or len(members) == 2:
        return list(members)
    return rng.sample(members, rng.randint(2, len(members) - 1))


def boq_csv(rows: list[tuple[str, str, str, Decimal, Decimal, Decimal]]) -> bytes:
    lines = ["项目编码,项目名称,计量单位,工程量,综合单价,合价"]
    lines += [f"{c},{n},{u},{q},{p},{t}" for c, n, u, q, p, t in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def make_lot(rng: random.Random, index: int, companies: list[Company]) -> Lot:
    n = min(12, max(3, round(rng.triangular(3, 12, 6))))
    chosen = rng.sample(companies, n)
    by_id = {c.id: c for c in chosen}
    ids = [c.id for c in chosen]
    lot_id = f"L{index:04d}"
    session = f"open-{index:04d}"
    deadline = datetime(2026, 1, 5, 1, 0, tzinfo=UTC) + timedelta(days=index)
    ceiling = Decimal(round(10 ** rng.uniform(5.5, 8), -3))
    has_ceiling = rng.random() < 0.85
    competitive = rng.random() < 0.3
    rounding = rng.choices(["fen", "yuan", "k"], [0.5, 0.3, 0.2])[0]
    ring: list[str] = []
    if rng.random() < RING_SHARE:
        ring = rng.sample(ids, rng.randint(2, min(5, n)))
    traces = {k for k, p in TRACE_P.items() if ring and rng.random() < p}

    # Prices.
    def honest_price() -> Decimal:
        share = rng.uniform(0.965, 1.0) if competitive else rng.uniform(0.80, 0.99)
        return round_price(rng, float(ceiling) * share, rounding)

    prices = {i: honest_price() for i in ids}
    if "price" in traces:
        members = sorted(ring, key=lambda _: rng.random())
        shape = rng.choice(["progression", "band", "accompanying", "ceiling"])
        base = float(ceiling) * rng.uniform(0.85, 0.95)
        if shape == "progression":
            step = Decimal(f"{base * rng.uniform(0.005, 0.02):.2f}")
            if rng.random() < 0.5:
                step = Decimal(round(step, -3)) or Decimal(1000)
            first = Decimal(f"{base:.2f}")
            for k, m in enumerate(members):
                prices[m] = first + k * step
        elif shape == "band":
            for m in members:
                prices[m] = Decimal(f"{base * (1 + rng.uniform(-0.0005, 0.0005)):.2f}")
        elif shape == "accompanying":
            prices[members[0]] = Decimal(f"{float(ceiling) * rng.uniform(0.82, 0.88):.2f}")
            for m in members[1:]:
                prices[m] = Decimal(f"{float(ceiling) * rng.uniform(0.985, 0.999):.2f}")
        else:
            for m in members:
                prices[m] = Decimal(f"{float(ceiling) * rng.uniform(0.996, 0.9999):.2f}")

    # Contacts with the platform.
    organiser_addr = public_addr(rng)
    organiser_machine = hexid(rng).encode()
    organiser_mac = ":".join(f"{rng.randint(0, 255):02x}" for _ in range(6))
    organiser_staff = staff_name(rng)
    organiser_account = hexid(rng, 64)
    addr = {i: by_id[i].addr for i in ids}
    nat: list[str] = []
    if rng.random() < NAT_SHARE:
        honest = [i for i in ids if i not in ring]
        if len(honest) >= 2:
            nat = rng.sample(honest, 2)
            addr[nat[1]] = addr[nat[0]]
    upload_at = {i: deadline - timedelta(minutes=rng.uniform(30, 72 * 60)) for i in ids}
    decrypt_addr = dict(addr)
    if "address" in traces:
        members = subset(rng, ring)
        batch = rng.random() < 0.75
        t0 = deadline - timedelta(minutes=rng.uniform(30, 48 * 60))
        same_decrypt = rng.random() < 0.5
        for m in members:
            addr[m] = organiser_addr
            if same_decrypt:
                decrypt_addr[m] = organiser_addr
            if batch:
                t0 += timedelta(minutes=rng.expovariate(1 / 4))
                upload_at[m] = t0
    sealing = {i: machine_fingerprint(lot_id, by_id[i].machine, by_id[i].mac) for i in ids}
    if "sealing" in traces:
        for m in subset(rng, ring):
            sealing[m] = machine_fingerprint(lot_id, organiser_machine, organiser_mac)
    # The agent's machine (logins, uploads, decryptions) is the company's own unless the ring's
    # certificate trace puts it on the organiser's; sealing is a separate trace.
    login_machine = {i: machine_fingerprint(lot_id, by_id[i].machine, by_id[i].mac) for i in ids}
    if "certificate" in traces:
        for m in subset(rng, ring):
            login_machine[m] = machine_fingerprint(lot_id, organiser_machine, organiser_mac)

    # Documents.
    form_hashes = [hexid(rng, 64) for _ in range(2)]
    tender_author = staff_name(rng)
    keep_tender_author = rng.random() < 0.5
    copied = DocumentFact(
        path="施工组织设计.docx", sha256=hexid(rng, 64), size=rng.randint(20_000, 60_000)
    )
    author_of = {i: rng.choice(by_id[i].staff) for i in ids}
    if "author" in traces:
        for m in subset(rng, ring):
            author_of[m] = organiser_staff
    copy_holders = set(subset(rng, ring)) if "file" in traces else set()

    # Bills of quantities.
    tender_odd = rng.random() < 0.15
    base_rows = []
    for r in range(10):
        qty = Decimal(f"{rng.uniform(1, 500):.2f}")
        unit = "立米" if tender_odd and r == 1 else rng.choice(UNITS)
        base_rows.append((f"{r // 4 + 1}.{r % 4 + 1}", f"分项{r}", unit, qty))

    def bill(slips: dict[int, Decimal]) -> list[tuple[str, str, str, Decimal, Decimal, Decimal]]:
        rows = []
        for r, (c, name, unit, qty) in enumerate(base_rows):
            price = Decimal(f"{rng.uniform(20, 900):.2f}")
            total = (qty * price).quantize(Decimal("0.01"))
            if rng.random() < 0.01:
                unit = rng.choice(ODD_UNITS)
            if r in slips:
                total += slips[r]
            elif rng.random() < 0.03:
                total += Decimal(rng.choice([1, -1]) * rng.randint(1, 999)) / 100
            rows.append((c, name, unit, qty, price, total))
        return rows

    ring_bill: list[tuple[str, str, str, Decimal, Decimal, Decimal]] | None = None
    boq_members: set[str] = set()
    if "boq" in traces:
        slip_row = rng.randrange(10)
        ring_bill = bill({slip_row: Decimal(rng.choice([1, -1]) * rng.randint(1, 999)) / 100})
        boq_members = set(subset(rng, ring))
    deposit_known = rng.random() < 0.7
    deposit_members = set(subset(rng, ring)) if "deposit" in traces else set()

    bids = []
    seq = 0

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    for i in ids:
        c = by_id[i]
        up_seq = next_seq()
        docs = [
            DocumentFact(
                path=f"格式{k}.docx",
                sha256=h,
                size=30_000,
                author=tender_author,
                package_sha256=None,
                seq=up_seq,
            )
            for k, h in enumerate(form_hashes)
        ]
        default = rng.random() < 0.3
        docs.append(
            DocumentFact(
                path="投标函（已填写）.docx",
                sha256=hexid(rng, 64),
                size=rng.randint(20_000, 90_000),
                author=tender_author if keep_tender_author else None,
                last_modified_by=rng.choice(c.staff),
                seq=up_seq,
            )
        )
        docs.append(
            DocumentFact(
                path="技术标.docx",
                sha256=hexid(rng, 64),
                size=rng.randint(100_000, 900_000),
                author=rng.choice(DEFAULT_AUTHORS) if default else author_of[i],
                last_modified_by=author_of[i] if i in ring and "author" in traces else None,
                seq=up_seq,
            )
        )
        if i in copy_holders:
            docs.append(copied.model_copy(update={"seq": up_seq}))
        rows = ring_bill if (ring_bill is not None and i in boq_members) else bill({})
        boq = docmeta.boq_errors(boq_csv(rows))
        decrypt_at = deadline + timedelta(minutes=rng.uniform(1, 25))
        decrypt_seq = next_seq()
        bids.append(
            BidFacts(
                bidder_id=i,
                bidder_name=c.name,
                price=prices[i],
                price_seq=decrypt_seq,
                uploads=[
                    Observation(at=upload_at[i], addr=addr[i], machine=login_machine[i], seq=up_seq)
                ],
                logins=[
                    Observation(
                        at=deadline - timedelta(minutes=rng.uniform(1, 20)),
                        addr=decrypt_addr[i],
                        machine=login_machine[i],
                        cert_serial=c.cert,
                        seq=next_seq(),
                    )
                ],
                decryptions=[
                    Observation(
                        at=decrypt_at,
                        addr=decrypt_addr[i],
                        machine=login_machine[i],
                        cert_serial=c.cert,
                        seq=decrypt_seq,
                    )
                ],
                sealing_machine=sealing[i],
                sealing_seq=up_seq,
                documents=docs,
                boq_errors=boq,
                boq_seq=up_seq,
                deposit_account=(
                    (organiser_account if i in deposit_members else c.account)
                    if deposit_known
                    else None
                ),
                deposit_seq=next_seq() if deposit_known else None,
            )
        )
    facts = LotFacts(
        session_id=session,
        project_id=f"P{index:04d}",
        lot_id=lot_id,
        ceiling_price=ceiling if has_ceiling else None,
        bids=bids,
        tender_hashes=form_hashes if rng.random() < 0.6 else [],
    )
    return Lot(facts=facts, ring=frozenset(ring), traces=frozenset(traces))


# --- evaluations ---------------------------------------------------------------------------------


def make_evaluations(
    rng: random.Random, lots: list[Lot], experts: list[str]
) -> tuple[list[EvaluationFacts], Truth]:
    truth = Truth()
    leniency = {e: rng.gauss(0, 0.05) for e in experts}
    committees = [rng.sample(experts, 5) for _ in lots]
    bias_in: dict[int, list[tuple[str, str]]] = defaultdict(list)
    biased = rng.sample(experts, BIASED_EXPERTS)
    for e in biased:
        favoured_lots = rng.sample(range(len(lots)), BIAS_PROJECTS)
        company = rng.choice(lots[favoured_lots[0]].facts.bids).bidder_id
        truth.bias.add((e, company))
        for li in favoured_lots:
            bids = lots[li].facts.bids
            if all(b.bidder_id != company for b in bids):
                victim = rng.randrange(len(bids))
                # The favoured company bids here too (it replaces one bidder in the lot's roster).
                old = bids[victim]
                bids[victim] = old.model_copy(update={"bidder_id": company})
                lots[li] = Lot(
                    facts=lots[li].facts.model_copy(update={"bids": bids}),
                    ring=frozenset(company if r == old.bidder_id else r for r in lots[li].ring),
                    traces=lots[li].traces,
                )
            if e not in committees[li]:
                committees[li][rng.randrange(5)] = e
            bias_in[li].append((e, company))
    copy_in: dict[int, tuple[str, str, bool]] = {}
    for li in rng.sample(range(len(lots)), COPY_PAIRS):
        a, b = rng.sample(committees[li], 2)
        copy_in[li] = (a, b, rng.random() < 0.8)
        truth.copies.add(frozenset((a, b)))

    out = []
    for li, lot in enumerate(lots):
        bidders = list(dict.fromkeys(b.bidder_id for b in lot.facts.bids))
        criteria = [
            CriterionFact(id=f"c{k}", stage="detailed", max=Decimal(rng.choice([5, 10, 15, 20])))
            for k in range(rng.randint(4, 6))
        ]
        quality = {b: rng.uniform(0.5, 0.9) for b in bidders}
        for _e, company in bias_in[li]:
            # A favoured company needs the favour: a middling bid, not one already at full marks.
            quality[company] = rng.uniform(0.5, 0.7)
        sheets: dict[str, SheetFact] = {}
        scores: dict[str, dict[str, dict[str, Decimal]]] = {}
        for e in committees[li]:
            scores[e] = {}
            for b in bidders:
                impression = rng.gauss(0, 0.04)
                if rng.random() < 0.01:
                    impression -= 0.25
                if (e, b) in truth.bias:
                    # Consistent: whenever they meet, planted or by chance.
                    impression += rng.uniform(0.15, 0.3)
                row = {}
                for c in criteria:
                    share = quality[b] + leniency[e] + impression + rng.gauss(0, 0.07)
                    points = max(0.0, min(1.0, share)) * float(c.max)
                    row[c.id] = Decimal(round(points * 2)) / 2
                scores[e][b] = row
        if li in copy_in:
            a, b, exact = copy_in[li]
            scores[b] = {k: dict(v) for k, v in scores[a].items()}
            if not exact:
                bb = rng.choice(bidders)
                cc = rng.choice(criteria)
                scores[b][bb][cc.id] = max(Decimal(0), scores[b][bb][cc.id] - Decimal("0.5"))
        for k, e in enumerate(committees[li]):
            sheets[e] = SheetFact(seq=10 + k, scores=scores[e])
        totals = {b: sum(sum(scores[e][b].values()) for e in committees[li]) for b in bidders}
        ranking = sorted(bidders, key=lambda b: -totals[b])
        out.append(
            EvaluationFacts(
                session_id=f"eval-{li:04d}",
                project_id=lot.facts.project_id,
                experts=committees[li],
                criteria=criteria,
                sheets=sheets,
                ranking=ranking,
                winner=ranking[0],
            )
        )
    return out, truth


# --- measuring -----------------------------------------------------------------------------------


def pairs_of(ids: list[str]) -> set[frozenset[str]]:
    return {frozenset(p) for p in combinations(sorted(set(ids)), 2)}


@dataclass
class Tally:
    flagged: int = 0
    true: int = 0
    recalled: int = 0

    def precision(self) -> float | None:
        return self.true / self.flagged if self.flagged else None


def measure_lots(lots: list[Lot], thresholds: list[float]) -> dict[str, object]:
    families = sorted(set(FAMILY.values()) - {"unfair_evaluation"})
    fam = {f: Tally() for f in families}
    kind_tally: dict[str, Tally] = defaultdict(Tally)
    combined = {t: Tally() for t in thresholds}
    rings = 0
    per_lot_signals: list[list[Signal]] = []
    for lot in lots:
        signals = S.lot_signals(lot.facts)
        per_lot_signals.append(signals)
        ring_pairs = pairs_of(list(lot.ring))
        if lot.ring:
            rings += 1
        for f in families:
            flagged = set().union(*[pairs_of(s.subjects) for s in signals if s.family == f])
            fam[f].flagged += len(flagged)
            fam[f].true += len(flagged & ring_pairs)
            fam[f].recalled += bool(flagged & ring_pairs)
        for s in signals:
            flagged = pairs_of(s.subjects)
            t = kind_tally[s.kind]
            t.flagged += len(flagged)
            t.true += len(flagged & ring_pairs)
        for k in {s.kind for s in signals}:
            flagged = set().union(*[pairs_of(s.subjects) for s in signals if s.kind == k])
            kind_tally[k].recalled += bool(flagged & ring_pairs)
        for t in thresholds:
            groups = S.combined(signals, threshold=t)
            flagged = set().union(*[pairs_of(g.bidders) for g in groups])
            combined[t].flagged += len(flagged)
            combined[t].true += len(flagged & ring_pairs)
            combined[t].recalled += bool(flagged & ring_pairs)
    traceless = sum(1 for lot in lots if lot.ring and not lot.traces)
    return {
        "rings": rings,
        "traceless": traceless,
        "families": fam,
        "kinds": dict(kind_tally),
        "combined": combined,
    }


def measure_evaluations(evaluations: list[EvaluationFacts], truth: Truth) -> dict[str, object]:
    by_expert: dict[str, list[EvaluationFacts]] = defaultdict(list)
    flagged: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for ev in evaluations:
        history = {h.session_id: h for e in ev.experts for h in by_expert[e]}
        for s in S.evaluation_signals(ev, list(history.values())):
            if s.kind == "expert_identical":
                flagged[s.kind].add(tuple(sorted(s.subjects)))
            else:
                flagged[s.kind].add((s.subjects[0], s.related[0], ev.session_id))
        for e in ev.experts:
            by_expert[e].append(ev)
    bias = truth.bias
    out: dict[str, object] = {"biased_pairs": len(bias), "copy_pairs": len(truth.copies)}
    for kind in ("expert_outlier", "expert_favour"):
        hits = flagged[kind]
        true = {h for h in hits if (h[0], h[1]) in bias}
        out[kind] = {
            "flagged": len(hits),
            "true": len(true),
            "precision": len(true) / len(hits) if hits else None,
            "recall": len({(h[0], h[1]) for h in true}) / len(bias) if bias else None,
        }
    hits = flagged["expert_identical"]
    true = {h for h in hits if frozenset(h) in truth.copies}
    out["expert_identical"] = {
        "flagged": len(hits),
        "true": len(true),
        "precision": len(true) / len(hits) if hits else None,
        "recall": len(true) / len(truth.copies) if truth.copies else None,
    }
    return out


def generate(seed: int, n_lots: int) -> tuple[list[Lot], list[EvaluationFacts], Truth]:
    rng = random.Random(seed)
    companies = make_companies(rng)
    lots = [make_lot(rng, i, companies) for i in range(n_lots)]
    experts = [f"EX{i:03d}" for i in range(EXPERTS)]
    evaluations, truth = make_evaluations(rng, lots, experts)
    return lots, evaluations, truth


def fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lots", type=int, default=600, help="number of lots (default 600)")
    parser.add_argument(
        "--seed", type=int, default=None, help="market seed (default 2; 1 with --calibrate)"
    )
    parser.add_argument("--threshold", type=float, default=S.RING_THRESHOLD, help="ring threshold")
    parser.add_argument("--calibrate", action="store_true", help="sweep ring thresholds (seed 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    seed = (
        args.seed
        if args.seed is not None
        else (CALIBRATION_SEED if args.calibrate else EVALUATION_SEED)
    )
    started = time.monotonic()
    lots, evaluations, truth = generate(seed, args.lots)
    generated = time.monotonic() - started
    thresholds = (
        [round(0.3 + 0.05 * i, 2) for i in range(14)] if args.calibrate else [args.threshold]
    )
    lot_result = measure_lots(lots, thresholds)
    eval_result = measure_evaluations(evaluations, truth)
    elapsed = time.monotonic() - started
    rings = lot_result["rings"]
    assert isinstance(rings, int)
    families = lot_result["families"]
    kinds = lot_result["kinds"]
    combined = lot_result["combined"]
    assert isinstance(families, dict) and isinstance(kinds, dict) and isinstance(combined, dict)
    command = "scripts/bench_signals.py " + " ".join(sys.argv[1:])
    if args.json:
        doc = {
            "command": command.strip(),
            "seed": seed,
            "lots": args.lots,
            "rings": rings,
            "rings_without_trace": lot_result["traceless"],
            "families": {
                f: {"pairs": t.flagged, "precision": t.precision(), "recall": t.recalled / rings}
                for f, t in families.items()
            },
            "kinds": {
                k: {"pairs": t.flagged, "precision": t.precision(), "recall": t.recalled / rings}
                for k, t in sorted(kinds.items())
            },
            "combined": {
                str(th): {
                    "pairs": t.flagged,
                    "precision": t.precision(),
                    "recall": t.recalled / rings,
                }
                for th, t in combined.items()
            },
            "evaluation": eval_result,
            "seconds": round(elapsed, 2),
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    print(f"$ .venv/bin/python {command.strip()}")
    print(
        f"seed {seed}: {args.lots} lots, {sum(len(lot.facts.bids) for lot in lots)} bids, "
        f"{rings} planted rings; {len(evaluations)} evaluations, {len(truth.bias)} biased experts, "
        f"{len(truth.copies)} copying pairs ({generated:.1f} s to generate, {elapsed:.1f} s in all)"
    )
    print(f"{lot_result['traceless']} of the {rings} rings left no trace at all (never findable)")
    print(f"\n{'signal (pairs of bidders)':34} {'pairs':>6} {'precision':>9} {'recall':>7}")
    for f, t in families.items():
        print(f"{f:34} {t.flagged:6d} {fmt(t.precision()):>9} {fmt(t.recalled / rings):>7}")
        for k, kt in sorted(kinds.items()):
            if FAMILY[k] == f:
                print(
                    f"  {k:32} {kt.flagged:6d} {fmt(kt.precision()):>9} {fmt(kt.recalled / rings):>7}"
                )
    for th, t in combined.items():
        mark = " <- RING_THRESHOLD" if th == S.RING_THRESHOLD else ""
        print(
            f"{'combined ring score >= ' + format(th, '.2f'):34} {t.flagged:6d} "
            f"{fmt(t.precision()):>9} {fmt(t.recalled / rings):>7}{mark}"
        )
    print(f"\n{'signal (planted experts)':34} {'flags':>6} {'precision':>9} {'recall':>7}")
    for kind in ("expert_outlier", "expert_favour", "expert_identical"):
        r = eval_result[kind]
        assert isinstance(r, dict)
        print(f"{kind:34} {r['flagged']:6d} {fmt(r['precision']):>9} {fmt(r['recall']):>7}")
    if args.calibrate:
        f1 = {}
        for th, t in combined.items():
            p, r = t.precision() or 0.0, t.recalled / rings
            f1[th] = 2 * p * r / (p + r) if p + r else 0.0
        best = max(f1, key=lambda th: (f1[th], th))
        print(f"\nchosen on seed {seed} (highest F1): threshold {best:.2f}, F1 {f1[best]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
