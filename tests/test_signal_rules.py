"""The bid-rigging and unfair-evaluation signals (围标串标、评标不公预警) as specifications.

Pure: ``server.domain.signals`` and ``server.signals.docmeta`` without a server, a database or a clock.
Each rule has a worked case written as literal data, with the expected score, subjects, evidence
and numbers in the explanation worked out by hand in the comments, and a near miss where the
innocent explanation must not fire.
"""

from __future__ import annotations

import io
import time
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.fingerprint import machine_fingerprint
from schemas.signals import (
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
from tests.support.rules import code

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SHA_FORM = "f" * 64  # the tender's own form (投标函格式), in every bid


def sha(n: int) -> str:
    return f"{n:064x}"


def bid(n: int, **kw: Any) -> BidFacts:
    return BidFacts(bidder_id=code(n), bidder_name=f"投标人{n}", **kw)


def lot(*bids: BidFacts, **kw: Any) -> LotFacts:
    return LotFacts(session_id="open-1", project_id="P1", lot_id="L1", bids=list(bids), **kw)


def up(minutes: float, addr: str | None, seq: int, **kw: Any) -> Observation:
    return Observation(at=T0 + timedelta(minutes=minutes), addr=addr, seq=seq, **kw)


def kinds(signals: list[Signal]) -> list[str]:
    return [s.kind for s in signals]


def only(signals: list[Signal], kind: str) -> Signal:
    found = [s for s in signals if s.kind == kind]
    assert len(found) == 1, kinds(signals)
    return found[0]


def seqs(signal: Signal) -> set[int]:
    return {e.seq for e in signal.evidence if e.seq is not None}


# --- same origin ---------------------------------------------------------------------------------


def test_signal_same_origin_upload_address() -> None:
    # Bids 3 and 5 uploaded from 10.0.0.7 at 01:10 and 01:12: two minutes apart, within
    # ADDRESS_CLOSE (15 min), so the score is SCORE_ADDRESS_CLOSE = 0.7. Bid 4 is elsewhere.
    facts = lot(
        bid(3, uploads=[up(10, "10.0.0.7", 17)]),
        bid(4, uploads=[up(11, "203.0.113.9", 19)]),
        bid(5, uploads=[up(12, "10.0.0.7", 21)]),
    )
    s = only(S.same_origin(facts), "same_origin_address")
    assert s.score == 0.7
    assert s.subjects == [code(3), code(5)]
    assert seqs(s) == {17, 21}
    assert {e.ref for e in s.evidence} == {"event:17", "event:21"}
    assert "10.0.0.7" in s.explanation_zh and "2 分钟" in s.explanation_zh
    assert "10.0.0.7" in s.explanation_en and "2 minutes apart" in s.explanation_en
    assert "投标人3" in s.explanation_zh and "投标人5" in s.explanation_zh


def test_signal_same_origin_shared_nat_hours_apart_is_weak() -> None:
    # Two honest companies behind one office NAT upload 20 hours apart and decrypt in the same
    # window: SCORE_ADDRESS_FAR = 0.35, below the ring threshold: no suspected ring.
    facts = lot(
        bid(1, uploads=[up(0, "198.51.100.4", 3)], decryptions=[up(3000, "198.51.100.4", 40)]),
        bid(2, uploads=[up(1200, "198.51.100.4", 9)], decryptions=[up(3004, "198.51.100.4", 41)]),
        bid(3, uploads=[up(5, "192.0.2.1", 4)]),
    )
    s = only(S.lot_signals(facts), "same_origin_address")
    assert s.score == 0.35
    assert "20 小时" in s.explanation_zh and "20 hours apart" in s.explanation_en
    assert S.combined(S.lot_signals(facts)) == []


def test_signal_same_origin_decryption_only_is_weakest() -> None:
    facts = lot(
        bid(1, decryptions=[up(0, "198.51.100.4", 40)]),
        bid(2, decryptions=[up(1, "198.51.100.4", 41)]),
        bid(3, decryptions=[up(2, "192.0.2.1", 42)]),
    )
    s = only(S.same_origin(facts), "same_origin_address")
    assert s.score == S.SCORE_ADDRESS_DECRYPT_ONLY == 0.3
    assert seqs(s) == {40, 41}


def test_signal_same_origin_platform_proxy_address_does_not_fire() -> None:
    # Every one of 4 bids "from" 10.1.1.1, the platform's own forwarder: not the bidders.
    bids = [bid(i, uploads=[up(i, "10.1.1.1", i)]) for i in range(1, 5)]
    assert S.same_origin(lot(*bids, platform_addresses=["10.1.1.1"])) == []
    # The same from any other address is a ring that is the whole lot: 4 uploads in 3 minutes.
    s = only(S.same_origin(lot(*bids)), "same_origin_address")
    assert s.score == 0.7 and s.subjects == [code(i) for i in range(1, 5)]
    assert seqs(s) == {1, 2, 3, 4}


def test_signal_same_origin_sealing_machine() -> None:
    m = machine_fingerprint("L1", b"4c4c4544003010\n", "00:1A:2B:3C:4D:5E")
    facts = lot(
        bid(1, sealing_machine=m, sealing_seq=5),
        bid(2, sealing_machine=m, sealing_seq=8),
        bid(3, sealing_machine=machine_fingerprint("L1", b"other", None), sealing_seq=9),
    )
    s = only(S.same_origin(facts), "same_origin_machine")
    assert s.score == 0.9
    assert s.subjects == [code(1), code(2)]
    assert seqs(s) == {5, 8}
    assert m[:12] in s.explanation_zh and "sealed on the same machine" in s.explanation_en
    assert "2 份" in s.explanation_zh


def test_machine_fingerprint_links_within_a_lot_only_and_hides_its_inputs() -> None:
    machine_id = b"0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    a = machine_fingerprint("L1", machine_id + b"\n", "00-1a-2b-3c-4d-5e")
    b = machine_fingerprint("L1", machine_id, "00:1A:2B:3C:4D:5E")
    assert a == b  # whitespace and MAC spelling do not matter
    assert machine_fingerprint("L2", machine_id, "00:1A:2B:3C:4D:5E") != a  # keyed per lot
    assert machine_fingerprint("L1", machine_id, None) != a  # the MAC is an input
    assert machine_fingerprint("L1", b"another", "00:1A:2B:3C:4D:5E") != a
    assert len(a) == 64 and int(a, 16) >= 0
    assert machine_id.decode() not in a and "1a2b3c4d5e" not in a


# --- certificate trail ---------------------------------------------------------------------------


def test_signal_certificate_trail() -> None:
    # The CA keys of bidders 1 and 2 (serials 1A2B and 3C4D) log in from machine M.
    facts = lot(
        bid(1, logins=[up(0, None, 11, machine="M" * 64, cert_serial="1A2B")]),
        bid(2, logins=[up(4, None, 12, machine="M" * 64, cert_serial="3C4D")]),
        bid(3, logins=[up(5, None, 13, machine="N" * 64, cert_serial="5E6F")]),
    )
    s = only(S.certificate_trail(facts), "certificate_trail")
    assert s.score == 0.85
    assert s.subjects == [code(1), code(2)]
    assert seqs(s) == {11, 12}
    assert "1A2B" in s.explanation_zh and "3C4D" in s.explanation_en
    assert "2 家投标人" in s.explanation_zh and "used 2 times" in s.explanation_en


def test_signal_certificate_trail_one_company_on_two_machines_does_not_fire() -> None:
    facts = lot(
        bid(1, logins=[up(0, None, 1, machine="A" * 64), up(9, None, 2, machine="B" * 64)]),
        bid(2, logins=[up(1, None, 3, machine="C" * 64)]),
    )
    assert S.certificate_trail(facts) == []


# --- same hands ----------------------------------------------------------------------------------


def docx(author: str | None, last: str | None, app: str = "Microsoft Office Word") -> bytes:
    """A real (minimal) .docx: core.xml with dc:creator and cp:lastModifiedBy, app.xml."""
    core = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
        'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:dcterms="http://purl.org/dc/terms/">'
        + (f"<dc:creator>{author}</dc:creator>" if author else "")
        + (f"<cp:lastModifiedBy>{last}</cp:lastModifiedBy>" if last else "")
        + "<dcterms:created>2026-02-01T08:00:00Z</dcterms:created></cp:coreProperties>"
    )
    appxml = (
        '<?xml version="1.0" encoding="UTF-8"?><Properties xmlns="http://schemas.openxmlformats.org/'
        f'officeDocument/2006/extended-properties"><Application>{app}</Application>'
        "<AppVersion>16.0000</AppVersion></Properties>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>" + "x" * 400)
        z.writestr("docProps/core.xml", core)
        z.writestr("docProps/app.xml", appxml)
    return buf.getvalue()


def test_signal_same_hands_identical_file() -> None:
    # Bidders 1 and 2 carry the same 5,000-byte technical proposal; every bidder carries the
    # tender's form (shared by 4 of 4: the tender's own, not a sign).
    form = DocumentFact(path="投标函.docx", sha256=SHA_FORM, size=9000, seq=1)
    copied = dict(path="技术方案.docx", sha256=sha(7), size=5000)
    facts = lot(
        bid(1, documents=[form, DocumentFact(**copied, package_sha256=sha(101), seq=10)]),
        bid(2, documents=[form, DocumentFact(**copied, package_sha256=sha(102), seq=12)]),
        bid(3, documents=[form, DocumentFact(path="技术方案.docx", sha256=sha(8), size=5000)]),
        bid(4, documents=[form]),
    )
    s = only(S.same_hands(facts), "same_hands_file")
    assert s.score == 0.85
    assert s.subjects == [code(1), code(2)]
    assert seqs(s) == {10, 12}
    assert {e.ref for e in s.evidence} == {
        f"blob:{sha(101)}#技术方案.docx",
        f"blob:{sha(102)}#技术方案.docx",
    }
    assert "1 个完全相同的文件" in s.explanation_zh and "技术方案.docx" in s.explanation_zh
    assert "1 identical file" in s.explanation_en


def test_signal_same_hands_tender_template_only_does_not_fire() -> None:
    # Two of three bidders include the tender's form (listed in tender_hashes) and a tiny file;
    # the form keeps the tender agent's author name: none of it is a sign.
    form = DocumentFact(path="投标函.docx", sha256=SHA_FORM, size=9000, author="招标代理王工")
    tiny = DocumentFact(path="空白.txt", sha256=sha(3), size=12)
    facts = lot(
        bid(1, documents=[form, tiny]),
        bid(2, documents=[form, tiny]),
        bid(3, documents=[]),
        tender_hashes=[SHA_FORM],
    )
    assert S.same_hands(facts) == []
    # Without the tender list, shared by only 2 of 3 bidders, the form and its author would fire:
    # the list is what tells the tender's own files apart in a small lot.
    assert sorted(kinds(S.same_hands(lot(*facts.bids)))) == ["same_hands_author", "same_hands_file"]


def test_signal_same_hands_author_from_real_docx() -> None:
    # The documents of bidders 1 and 2 were written by "陈建国" (read by server.signals.docmeta from
    # core.xml); "Administrator" is an installation default shared by all: not a sign.
    d1 = docmeta.document_fact("商务标.docx", docx("陈建国", "Administrator"), seq=31)
    d2 = docmeta.document_fact("技术标.docx", docx("Administrator", "陈建国"), seq=32)
    d3 = docmeta.document_fact("技术标.docx", docx("Administrator", "刘敏"), seq=33)
    d4 = docmeta.document_fact("技术标.docx", docx("Administrator", "Administrator"), seq=34)
    facts = lot(
        bid(1, documents=[d1]),
        bid(2, documents=[d2]),
        bid(3, documents=[d3]),
        bid(4, documents=[d4]),
    )
    s = only(S.same_hands(facts), "same_hands_author")
    assert s.score == 0.7
    assert s.subjects == [code(1), code(2)]
    assert seqs(s) == {31, 32}
    assert "陈建国" in s.explanation_zh and "陈建国" in s.explanation_en


def test_signal_same_hands_author_shared_by_most_bidders_does_not_fire() -> None:
    # The tender agent's name left in the filled-in forms of 4 of 5 bidders: the tender's.
    docs = [
        DocumentFact(path="f.docx", sha256=sha(i), size=900, author="代理公司") for i in range(5)
    ]
    facts = lot(*(bid(i + 1, documents=[docs[i]] if i < 4 else []) for i in range(5)))
    assert S.same_hands(facts) == []


BOQ_HEAD = "项目编码,项目名称,计量单位,工程量,综合单价,合价\n"


def test_signal_same_hands_boq_error() -> None:
    # Bidders 1 and 2 both have row 3.2 with 2.5 x 100.04 = 250.10 written as 250.00.
    slip = BOQ_HEAD + "3.1,土方开挖,m3,120,35.50,4260.00\n3.2,C30混凝土,m3,2.5,100.04,250.00\n"
    right = BOQ_HEAD + "3.1,土方开挖,m3,120,36.00,4320.00\n3.2,C30混凝土,m3,2.5,101.00,252.50\n"
    e1 = docmeta.boq_errors(slip.encode("gb18030"))
    e2 = docmeta.boq_errors(slip.encode("utf-8"))
    assert e1 == e2 == ["row 3.2 qty*price-total=+0.10"]
    assert docmeta.boq_errors(right.encode()) == []
    facts = lot(
        bid(1, boq_errors=e1, boq_seq=51),
        bid(2, boq_errors=e2, boq_seq=52),
        bid(3, boq_errors=[], boq_seq=53),
    )
    s = only(S.same_hands(facts), "same_hands_boq")
    assert s.score == 0.8
    assert s.subjects == [code(1), code(2)]
    assert seqs(s) == {51, 52}
    assert "row 3.2 qty*price-total=+0.10" in s.explanation_zh
    assert "1 identical odd error" in s.explanation_en


def test_signal_same_hands_boq_error_of_the_tender_itself_does_not_fire() -> None:
    # The tender's bill says "立米": every bidder keeps it.
    common = ["row 1.1 unit=立米"]
    facts = lot(*(bid(i, boq_errors=common) for i in range(1, 5)))
    assert S.same_hands(facts) == []


# --- same money ----------------------------------------------------------------------------------


def test_signal_same_money_deposit() -> None:
    account = "a1" * 32
    facts = lot(
        bid(1, deposit_account=account, deposit_seq=6),
        bid(2, deposit_account="b2" * 32, deposit_seq=7),
        bid(3, deposit_account=account, deposit_seq=8),
    )
    s = only(S.same_money(facts), "same_money_deposit")
    assert s.score == 0.95
    assert s.subjects == [code(1), code(3)]
    assert seqs(s) == {6, 8}
    assert "2 笔投标保证金" in s.explanation_zh and "a1a1a1a1a1a1" in s.explanation_en


def test_signal_same_money_no_account_data_does_not_fire() -> None:
    assert S.same_money(lot(bid(1), bid(2), bid(3))) == []


# --- price patterns ------------------------------------------------------------------------------


def priced(*prices: str, ceiling: str | None = None) -> LotFacts:
    # The price of bid n is recorded by event 60 + n (its decryption).
    return lot(
        *(bid(i + 1, price=Decimal(p), price_seq=61 + i) for i, p in enumerate(prices)),
        ceiling_price=Decimal(ceiling) if ceiling else None,
    )


def test_signal_price_progression() -> None:
    # 9,012,345.67 / 9,135,802.45 / 9,259,259.23 step 123,456.78; five bids, ceiling 10,000,000.
    # spread = 9,701,234.56 - 9,012,345.67 = 688,888.89 (> 2 % of the ceiling), mean gap over 4
    # gaps = 172,222.22; prices to the fen (g = 0.01); tolerance 0.1 % of the step = 123.46.
    # q = (0.01 + 2 x 123.46) / 172,222.22 = 0.00143; chance = (5 - 3 + 1) x q = 0.43 % <= 2 %.
    facts = priced(
        "9012345.67", "9135802.45", "9259259.23", "9480000.00", "9701234.56", ceiling="10000000"
    )
    s = only(S.price_patterns(facts), "price_progression")
    assert s.score == 0.45
    assert s.subjects == [code(1), code(2), code(3)]
    assert "123,456.78" in s.explanation_zh and "123,456.78" in s.explanation_en
    assert "0.43%" in s.explanation_en
    assert seqs(s) == {61, 62, 63}
    assert {e.ref for e in s.evidence} == {"event:61", "event:62", "event:63"}


def test_signal_price_three_bids_two_percent_apart_do_not_fire() -> None:
    # 2 % apart, no progression (gaps 20,000 and 20,400), no band, no ceiling.
    assert S.price_patterns(priced("1000000.00", "1020000.00", "1040400.00")) == []
    # Round prices that happen to be in progression: with prices rounded to 10,000 and a mean
    # gap of 20,000 the chance of equal gaps is about 1 in 2: not a sign.
    assert S.price_patterns(priced("1000000", "1020000", "1040000")) == []


def test_signal_price_band() -> None:
    # 4,612,345.67 and 4,612,445.67 are 100.00 apart among six bids spread over 550,320.23:
    # chance = C(6,2) x 2 x 100 / 550,320.23 = 0.55 % <= 2 %.
    facts = priced(
        "4300456.78",
        "4400000.12",
        "4612345.67",
        "4612445.67",
        "4750003.33",
        "4850777.01",
        ceiling="5000000",
    )
    s = only(S.price_patterns(facts), "price_band")
    assert s.score == 0.4
    assert s.subjects == [code(3), code(4)]
    assert seqs(s) == {63, 64}
    assert "100.00" in s.explanation_zh and "0.55%" in s.explanation_en


def test_signal_price_ceiling_cluster() -> None:
    # Three bids within 0.5 % under the 10,000,000 ceiling; the lowest is 9,100,000: reach
    # 900,000, chance = C(5,3) x (50,000 / 900,000)^3 = 0.17 %.
    facts = priced("9100000", "9400000", "9970000", "9985000", "9990000", ceiling="10000000")
    s = only(S.price_patterns(facts), "price_ceiling_cluster")
    assert s.score == 0.3
    assert s.subjects == [code(3), code(4), code(5)]
    assert seqs(s) == {63, 64, 65}
    assert "10,000,000.00" in s.explanation_zh and "0.17%" in s.explanation_en


def test_signal_price_competitive_lot_near_the_ceiling_does_not_fire() -> None:
    # Eight honest bids between 97 % and 100 % of the ceiling; three within 0.5 % of it:
    # chance = C(8,3) x (50,000 / 298,765.44)^3 = 26 %: ordinary competition.
    facts = priced(
        "9701234.56",
        "9745678.90",
        "9802345.67",
        "9856789.01",
        "9901234.56",
        "9962345.67",
        "9978901.23",
        "9993456.78",
        ceiling="10000000",
    )
    assert S.price_patterns(facts) == []


def test_signal_price_accompanying() -> None:
    # 8,500,000 against four bids within 70,000 of each other, 1,300,000 higher.
    facts = priced("8500000", "9800000", "9820000", "9850000", "9870000", ceiling="10000000")
    s = only(S.price_patterns(facts), "price_accompanying")
    assert s.score == 0.35
    assert s.subjects == [code(i) for i in range(1, 6)]
    assert seqs(s) == {61, 62, 63, 64, 65}
    assert "8,500,000.00" in s.explanation_zh and "70,000.00" in s.explanation_en


# --- unfair evaluation ---------------------------------------------------------------------------

X, Y, Z = code(21), code(22), code(23)
CRITERIA = [
    CriterionFact(id="c1", stage="detailed", max=Decimal(10)),
    CriterionFact(id="c2", stage="detailed", max=Decimal(20)),
    CriterionFact(id="c3", stage="detailed", max=Decimal(30)),
]


def sheet(seq: int, x: tuple[int, ...], y: tuple[int, ...], z: tuple[int, ...]) -> SheetFact:
    return SheetFact(
        seq=seq,
        scores={
            b: {f"c{i + 1}": Decimal(v) for i, v in enumerate(row)}
            for b, row in ((X, x), (Y, y), (Z, z))
        },
    )


HONEST = {
    "E1": ((7, 14, 21), (6, 12, 18), (8, 16, 24)),
    "E2": ((7, 15, 20), (6, 13, 18), (8, 15, 24)),
    "E3": ((6, 14, 21), (7, 12, 19), (8, 16, 23)),
    "E4": ((7, 14, 22), (6, 11, 18), (7, 16, 24)),
}


def evaluation(
    e5: tuple[tuple[int, ...], ...], session: str = "eval-1", **extra: Any
) -> EvaluationFacts:
    rows = {**HONEST, "E5": e5, **extra}
    return EvaluationFacts(
        session_id=session,
        project_id=f"P-{session}",
        experts=sorted(rows),
        criteria=CRITERIA,
        sheets={e: sheet(100 + i, *r) for i, (e, r) in enumerate(sorted(rows.items()))},
        ranking=[Z, X, Y],
        winner=Z,
        bidder_names={X: "甲公司", Y: "乙公司", Z: "丙公司"},
    )


# E5 scores Y (9, 17, 26) where the others' medians are (6, 12, 18): +30 %, +25 %, +26.7 % of
# the maxima; on X and Z E5 is within 5 % (general leniency 0.28 %), so after leniency Y gets
# +29.7 %, +24.7 %, +26.4 %: mean 26.9 % (< 30 %: SCORE_OUTLIER 0.55), least 24.7 %.
BIASED = ((7, 15, 21), (9, 17, 26), (8, 16, 23))


def test_signal_expert_outlier() -> None:
    signals = S.evaluation_signals(evaluation(BIASED))
    s = only(signals, "expert_outlier")
    assert s.score == 0.55
    assert s.subjects == ["E5"] and s.related == [Y]
    assert 104 in seqs(s)  # E5's sheet (E1..E5 are seqs 100..104)
    assert "乙公司" in s.explanation_zh and "全部 3 项" in s.explanation_zh
    assert "27%" in s.explanation_en and "at least 25%" in s.explanation_en


def test_signal_expert_outlier_lenient_expert_does_not_fire() -> None:
    # E5 gives 20 % of the maximum more to every bidder: lenient, not partial.
    lenient = ((9, 18, 27), (8, 16, 24), (10, 20, 30))
    assert S.evaluation_signals(evaluation(lenient)) == []


def test_signal_expert_favour_across_projects() -> None:
    history = [evaluation(BIASED, session="eval-a"), evaluation(BIASED, session="eval-b")]
    signals = S.evaluation_signals(evaluation(BIASED, session="eval-c"), history)
    s = only(signals, "expert_favour")
    # 3 evaluations, favour 26.9 % each time: score 1 - 0.5^(3-1) = 0.75.
    assert s.score == 0.75
    assert s.subjects == ["E5"] and s.related == [Y]
    assert {(e.session_id, e.seq) for e in s.evidence} == {
        ("eval-a", 104),
        ("eval-b", 104),
        ("eval-c", 104),
    }
    assert "全部 3 次评标" in s.explanation_zh and "P-eval-a" in s.explanation_zh
    assert "in all 3 evaluations" in s.explanation_en and "27%" in s.explanation_en
    assert "ranked it first 3 times" in s.explanation_en


def test_signal_expert_favour_broken_once_does_not_fire() -> None:
    # Two projects of the same favour and one where E5 scored Y like everyone else.
    fair = ((7, 15, 21), (6, 12, 18), (8, 16, 23))
    history = [evaluation(BIASED, session="eval-a"), evaluation(fair, session="eval-b")]
    signals = S.evaluation_signals(evaluation(BIASED, session="eval-c"), history)
    assert "expert_favour" not in kinds(signals)
    # And two evaluations are not yet a pattern.
    signals = S.evaluation_signals(evaluation(BIASED, session="eval-c"), history[:1])
    assert "expert_favour" not in kinds(signals)


def test_signal_expert_identical() -> None:
    fair = ((7, 15, 21), (6, 12, 18), (8, 16, 23))
    signals = S.evaluation_signals(evaluation(fair, E6=HONEST["E3"]))
    s = only(signals, "expert_identical")
    assert s.score == 0.85
    assert s.subjects == ["E3", "E6"]
    assert seqs(s) == {102, 105}
    assert "9 个分值中有 9 个完全相同" in s.explanation_zh
    assert "agree exactly on 9 of 9" in s.explanation_en


def test_signal_expert_identical_all_full_marks_does_not_fire() -> None:
    full = ((10, 20, 30),) * 3
    facts = EvaluationFacts(
        session_id="e",
        project_id="p",
        experts=["E1", "E2", "E3"],
        criteria=CRITERIA,
        sheets={e: sheet(i, *full) for i, e in enumerate(["E1", "E2", "E3"])},
    )
    assert S.evaluation_signals(facts) == []


# --- combined ------------------------------------------------------------------------------------


def test_combined_ring_joins_traces_of_a_pair() -> None:
    # Bidders 1 and 2: uploads 3 minutes apart from one address (0.7) and prices 100.00 apart
    # (band 0.4): 1 - 0.3 x 0.6 = 0.82. Bidders 3 and 4 share only a NAT, 20 hours apart (0.35).
    facts = LotFacts(
        session_id="open-9",
        project_id="P",
        lot_id="L",
        ceiling_price=Decimal("5000000"),
        bids=[
            bid(1, price=Decimal("4612345.67"), uploads=[up(0, "10.0.0.7", 1)]),
            bid(2, price=Decimal("4612445.67"), uploads=[up(3, "10.0.0.7", 2)]),
            bid(3, price=Decimal("4300456.78"), uploads=[up(0, "10.9.9.9", 3)]),
            bid(4, price=Decimal("4400000.12"), uploads=[up(1200, "10.9.9.9", 4)]),
            bid(5, price=Decimal("4750003.33")),
            bid(6, price=Decimal("4850777.01")),
        ],
    )
    signals = S.lot_signals(facts)
    assert sorted(kinds(signals)) == ["price_band", "same_origin_address", "same_origin_address"]
    rings = S.combined(signals)
    assert len(rings) == 1
    ring = rings[0]
    assert ring.bidders == [code(1), code(2)]
    assert ring.score == 0.82
    assert ring.session_id == "open-9"
    assert "0.82" in ring.explanation_en and "price_band" in ring.explanation_zh
    assert S.pair_scores(signals)[(code(3), code(4))].score == 0.35


# --- properties ----------------------------------------------------------------------------------


def rich_lot() -> list[BidFacts]:
    m = machine_fingerprint("L1", b"m", None)
    return [
        bid(1, price=Decimal("9012345.67"), uploads=[up(0, "10.0.0.7", 1)], sealing_machine=m),
        bid(2, price=Decimal("9135802.45"), uploads=[up(2, "10.0.0.7", 2)], sealing_machine=m),
        bid(3, price=Decimal("9259259.23"), deposit_account="ab" * 32, boq_errors=["row 1 unit=x"]),
        bid(4, price=Decimal("9480000.00"), deposit_account="ab" * 32, boq_errors=["row 1 unit=x"]),
        bid(5, price=Decimal("9701234.56"), logins=[up(9, None, 7, machine="Q" * 64)]),
        bid(6, price=Decimal("9999000.00"), logins=[up(8, None, 8, machine="Q" * 64)]),
    ]


@settings(max_examples=40, deadline=None)
@given(st.permutations(rich_lot()))
def test_signal_ids_are_stable_under_permutation_of_the_bids(bids: list[BidFacts]) -> None:
    reference = S.lot_signals(lot(*rich_lot(), ceiling_price=Decimal("10000000")))
    assert len(reference) >= 5
    shuffled = S.lot_signals(lot(*bids, ceiling_price=Decimal("10000000")))
    assert shuffled == reference


@settings(max_examples=60, deadline=None)
@given(
    st.decimals(min_value=1, max_value=10**9, places=2),
    st.sampled_from(["10.0.0.7", None]),
    st.booleans(),
)
def test_signal_no_signal_on_a_lot_with_one_bid(
    price: Decimal, addr: str | None, ceiling: bool
) -> None:
    one = bid(
        1,
        price=price,
        uploads=[up(0, addr, 1), up(1, addr, 2)],
        sealing_machine="a" * 64,
        deposit_account="b" * 64,
        boq_errors=["row 1 unit=x"],
        documents=[DocumentFact(path="a.docx", sha256=sha(1), size=9999, author="某人")],
    )
    facts = lot(one, ceiling_price=price if ceiling else None)
    assert S.lot_signals(facts) == []
    assert S.combined(S.lot_signals(facts)) == []


# --- server.signals.docmeta ------------------------------------------------------------------------------


def test_docmeta_reads_docx_and_xlsx_properties() -> None:
    meta = docmeta.document_facts("标书.docx", docx("陈建国", "李娜", app="WPS Office"))
    assert meta == docmeta.DocumentMeta(
        author="陈建国", creator="WPS Office 16.0000", last_modified_by="李娜"
    )
    # An .xlsx has the same docProps parts.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr(
            "docProps/core.xml",
            '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
            'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>  王 伟 '
            "</dc:creator><cp:lastModifiedBy>王伟</cp:lastModifiedBy></cp:coreProperties>",
        )
    meta = docmeta.document_facts("清单.xlsx", buf.getvalue())
    assert meta == docmeta.DocumentMeta(author="王 伟", creator=None, last_modified_by="王伟")


def test_docmeta_reads_pdf_info_dictionary() -> None:
    pdf = (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        b"9 0 obj\n<< /Author (Chen \\(Jianguo\\)) /Creator <FEFF5F204E09> /Producer (x) >>\nendobj\n"
        b"trailer\n<< /Info 9 0 R >>\n%%EOF\n"
    )
    meta = docmeta.document_facts("a.pdf", pdf)
    assert meta == docmeta.DocumentMeta(
        author="Chen (Jianguo)", creator="张三", last_modified_by=None
    )
    # An incremental update appends a newer Info dictionary: the last one counts.
    meta = docmeta.document_facts("a.pdf", pdf + b"10 0 obj << /Author (Li Na) >> endobj\n")
    assert meta.author == "Li Na"
    # Truncated strings do not crash.
    assert docmeta.document_facts("b.pdf", b"%PDF-1.7 /Author (never closed \\").author is None


def hostile_docx(core: bytes, *, declared_big: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("docProps/core.xml", core)
    return buf.getvalue()


def test_docmeta_refuses_xxe_and_entity_expansion() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<cp:coreProperties xmlns:cp="urn:cp" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b"<dc:creator>&xxe;</dc:creator></cp:coreProperties>"
    )
    assert docmeta.document_facts("x.docx", hostile_docx(xxe)) == docmeta.DocumentMeta()
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
        )
        + b"]><r xmlns:dc='http://purl.org/dc/elements/1.1/'><dc:creator>&j;</dc:creator></r>"
    )
    started = time.monotonic()
    assert docmeta.document_facts("x.docx", hostile_docx(lol)) == docmeta.DocumentMeta()
    assert time.monotonic() - started < 2


def test_docmeta_bounded_on_zip_bomb_and_broken_input() -> None:
    # core.xml inflating to 64 MiB (about 64 KiB compressed): not read at all.
    bomb = b"<cp:coreProperties>" + b" " * (64 << 20) + b"</cp:coreProperties>"
    data = hostile_docx(bomb)
    assert len(data) < 1 << 20
    started = time.monotonic()
    assert docmeta.document_facts("bomb.docx", data) == docmeta.DocumentMeta()
    assert time.monotonic() - started < 2
    assert docmeta.document_facts("b.docx", hostile_docx(b"<a><b></a>")) == docmeta.DocumentMeta()
    assert docmeta.document_facts("c.docx", b"PK\x03\x04garbage") == docmeta.DocumentMeta()
    assert docmeta.document_facts("d.bin", b"") == docmeta.DocumentMeta()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_docmeta_never_raises_on_hostile_bytes(data: bytes) -> None:
    docmeta.document_facts("x.docx", data)
    docmeta.document_facts("x.pdf", b"%PDF-1.4 /Author (" + data)
    assert isinstance(docmeta.boq_errors(data), list)
    assert isinstance(docmeta.boq_errors(BOQ_HEAD.encode() + data), list)


def test_boq_errors_english_headers_units_and_rounding() -> None:
    csv = (
        "Item code,Item name,Unit,Quantity,Unit price,Total\n"
        "1.1,Excavation,m3,3.333,12.50,41.66\n"  # 41.6625 rounded to the fen: fine
        "1.2,Rebar,tonnes,2,4000,8000\n"  # an unusual unit
        "1.3,Formwork,m2,x,10,10\n"  # quantity is not a number
        "1.4,Concrete,m3,10,300,2900\n"  # 10 x 300 - 2900 = +100.00
    )
    assert docmeta.boq_errors(csv.encode()) == [
        "row 1.2 unit=tonnes",
        "row 1.3 qty=x",
        "row 1.4 qty*price-total=+100.00",
    ]
    assert docmeta.boq_errors(b"no,headers,here\n1,2,3\n") == []


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_boq_errors_same_slip_same_signature_in_any_encoding(encoding: str) -> None:
    text = BOQ_HEAD + "2.7,砌体,立米,8,312.40,2499.00\n"
    assert docmeta.boq_errors(text.encode(encoding)) == [
        "row 2.7 unit=立米",
        "row 2.7 qty*price-total=+0.20",
    ]
