"""The second half of ``bidbridge demo``: remote cross-region evaluation of the opened lot.

A generated pool of 10,000 experts; a committee of five drawn verifiably (three at the lead site,
two at a secondary site drawn in another city); two room agents with synthetic cameras linked to
the lead site over WebRTC and recorded; sign-in with the experts' own CA keys; chair election;
qualification, preliminary and detailed review by comprehensive scoring; the report signed; the
archive exported, verified and the draw recomputed from it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from crypto import ca
from crypto.keys import SoftwareKey
from room_client.agent import Credentials, HallFollower
from room_client.evaluation import EvalClient, ExpertClient
from room_client.media import RoomMedia
from server.demo.common import DemoFailed, step
from server.demo.experts_gen import generate_pool
from server.identity import cert_pem

LEAD_CITY = "150100"  # 呼和浩特市
SITES = {  # site -> (name, city, room, seats)
    "HHHT": ("呼和浩特市公共资源交易中心", LEAD_CITY, "HHHT-R1", 3),
    "BT": ("包头市公共资源交易中心", "150200", "BT-R1", 2),
    "HLBE": ("呼伦贝尔市公共资源交易中心", "150700", "HLBE-R1", 2),
}
METHOD: dict[str, Any] = {
    "method": "comprehensive",
    "criteria": [
        {"id": "T1", "group": "technical", "text": "施工组织设计", "max_points_x100": 3000},
        {"id": "T2", "group": "technical", "text": "质量安全保证措施", "max_points_x100": 2000},
        {"id": "C1", "group": "commercial", "text": "企业业绩与信誉", "max_points_x100": 1000},
    ],
    "price_points_x100": 4000,
    "base_price": "average",
    "coefficient": "0.97",
    "deduct_above_x100": 100,
    "deduct_below_x100": 50,
}
REVIEW_ITEMS = [
    {"id": "Q1", "stage": "qualification", "text": "营业执照、资质证书有效"},
    {"id": "Q2", "stage": "qualification", "text": "项目经理注册证书有效"},
    {"id": "P1", "stage": "preliminary", "text": "投标函签字盖章齐全、报价唯一"},
]


def _points(x100: Any) -> str:
    return f"{x100 / 100:.2f}" if isinstance(x100, int) else "-"


async def run_evaluation(
    *,
    out: Path,
    url: str,
    hub: Any,
    world: Any,
    opening_sid: str,
    client: Any,
    export: Any,
) -> tuple[str, ExpertClient]:
    """Drive the evaluation through the API as the centre, host, supervisor, rooms and experts.

    ``client(creds)`` makes a logged-out EvalClient that the caller closes; ``export(sid, path)``
    exports and verifies a session's archive. Returns the evaluation's id and the chair's client
    with a freshly renewed token (the caller closes it): an expert cannot sign in again once the
    evaluation is closed, and the expert desk's link is asked for with this token.
    """

    centre: EvalClient = client(world.staff["centre"])
    host: EvalClient = client(world.staff["host"])
    supervisor: EvalClient = client(world.staff["supervisor"])

    step("9. 评标室网络与专家库（10,000 名专家）/ rooms network and a pool of 10,000 experts")
    room_creds: dict[str, Credentials] = {}
    for site_id, (name, city, room_id, seats) in SITES.items():
        await centre.add_site(site_id, name, city)
        issued = ca.issue_room_device(
            world.root_a, room_id=room_id, site=site_id, key_type="ec-p256"
        )
        assert issued.key is not None
        room_creds[room_id] = Credentials(SoftwareKey(issued.key), issued.certificate)
        await centre.add_room(
            site_id, room_id, f"{name}第1评标室", cert_pem(issued.certificate), seats
        )
        print(f"   {site_id} {name} ({city}) 评标室 {room_id}, {seats} 席 seats")
    pool = generate_pool(10_000, seed=2026, cities=[c for _, c, _, _ in SITES.values()])
    pool_file = out / "experts.json"
    pool_file.write_text(
        json.dumps([e.model_dump(mode="json") for e in pool], ensure_ascii=False),
        encoding="utf-8",
    )
    imported = await centre.import_experts(pool_file)
    print(f"   导入专家 imported {imported['imported']} experts ({pool_file.name})")
    active = [e for e in pool if e.status == "active"]
    top = Counter(c[:3] for e in active for c in {x[:3] for x in e.categories}).most_common(1)[0]
    category = top[0]
    print(f"   抽取专业 category {category} ({top[1]} active experts)")

    step("10. 创建评标并验证式抽取专家 / create the evaluation and draw the committee")
    now = hub.clock.now()
    body = {
        "opening_session_id": opening_sid,
        "title": "评标 / evaluation",
        "convene_at": (now + timedelta(minutes=30)).isoformat(),
        "grace_minutes": 30,
        "method": METHOD,
        "review_items": REVIEW_ITEMS,
        "draw": {
            "lead_site_id": "HHHT",
            "secondary_sites": 1,
            "categories": [{"category": category, "count": 5, "spares": 3}],
            "min_outside_lead": 2,
        },
        "rescore_threshold_points": 1500,
    }
    created = await host.create_evaluation(body)
    sid = created["session_id"]
    print(f"   评标会话 evaluation {sid}: {len(created['view']['bids'])} 份有效投标 bids")
    sup_follow = HallFollower(supervisor, sid)
    await sup_follow.connect()
    await host.begin_draw(sid)
    await supervisor.add_entropy(sid)
    await host.add_entropy(sid)
    await host.draw(sid)
    sup_view = (await supervisor.evaluation(sid))["view"]
    host_view = (await host.evaluation(sid))["view"]
    members = [m for m in sup_view["members"] if m["status"] == "drawn"]
    draw = sup_view["draw_result"]
    print(
        f"   承诺 commitment {sup_view['draw']['commitment'][:16]}…  种子 seed {draw['seed'][:16]}…"
    )
    print(
        f"   专家库 {draw['counts']['pool']}，在库 {draw['counts']['active']}，"
        f"回避 {draw['counts']['avoided']}，符合条件 {draw['counts']['eligible']}"
    )
    for m in sorted(members, key=lambda m: m["room_id"]):
        print(f"   监管可见 supervisor sees: {m['id']} {m['category']} @ {m['room_id']}")
    print(
        f"   主持人仅见人数 host sees only: {host_view['committee_size']} members, "
        f"{host_view['rooms_drawn']} rooms"
    )

    rooms: dict[str, EvalClient] = {}
    media: dict[str, RoomMedia] = {}
    experts: dict[str, ExpertClient] = {}
    try:
        step("11. 两个评标室终端接入（合成摄像头）/ two room agents link up with synthetic cameras")
        for room_id in sorted({m["room_id"] for m in members}):
            rc = client(room_creds[room_id])
            await rc.login()
            rooms[room_id] = rc
            link = RoomMedia("synthetic", label=room_id)
            await link.connect(lambda offer, rc=rc: rc.media_offer(sid, offer))
            media[room_id] = link
        for room_id, link in media.items():
            await link.wait_connected()
            print(f"   {room_id} 音视频已连接 / linked")

        step("12. 专家在评标室用本人 CA 证书签到 / experts sign in with their own CA keys")
        for m in sorted(members, key=lambda m: m["id"]):
            issued = ca.issue_person(
                world.sub_b,
                name=f"专家{m['id'][1:]}",
                role="expert",
                person_id=m["id"],
                key_type="ec-p256",
            )
            assert issued.key is not None
            creds = Credentials(
                SoftwareKey(issued.key), issued.certificate, [world.sub_b.certificate]
            )
            experts[m["id"]] = await rooms[m["room_id"]].sign_in_expert(sid, m["id"], creds)
            print(f"   {m['id']} 签到 @ {m['room_id']}")
        ids = sorted(experts)
        await host.start_evaluation(sid)
        for mid in ids[: len(ids) // 2 + 1]:  # a majority elects; later votes are refused
            await experts[mid].vote(sid, ids[0])
        chair = experts[ids[0]]
        print(f"   评标委员会主任 chair: {ids[0]}")

        step("13. 资格审查、初步评审、详细评审（综合评估法）/ review and comprehensive scoring")
        bids = sorted(b["bidder"] for b in created["view"]["bids"])
        for stage, items in (("qualification", ["Q1", "Q2"]), ("preliminary", ["P1"])):
            for mid in ids:
                sheet = {
                    "expert": mid,
                    "stage": stage,
                    "verdicts": [
                        {"bidder": b, "item": i, "passed": True, "reason": ""}
                        for b in bids
                        for i in items
                    ],
                }
                await experts[mid].submit_sheet(sid, stage, sheet)
            await chair.close_stage(sid)
            print(f"   {stage}: {len(ids)} 张签名评审表 signed sheets, 全部通过 all passed")
        for n, mid in enumerate(ids):
            scores = []
            for k, b in enumerate(bids):
                for crit, base in (("T1", 2400), ("T2", 1600), ("C1", 800)):
                    scores.append(
                        {"bidder": b, "criterion": crit, "points_x100": base - 50 * k + 25 * n}
                    )
            await experts[mid].submit_sheet(
                sid, "detailed", {"expert": mid, "stage": "detailed", "scores": scores}
            )
        await chair.close_stage(sid)
        await chair.summarize(sid)
        report = await chair.report(sid)
        ranking = report["report"]["ranking"]["ranking"]
        for e in ranking["entries"]:
            print(
                f"   {e['position']}. {e['bidder']}  评审分 {_points(e.get('review_score_x100'))}"
                f"  价格分 {_points(e.get('price_score_x100'))}  总分 {_points(e.get('total_x100'))}"
            )

        step("14. 评标报告签署 / the report signed by every member")
        await experts[ids[-1]].sign_report(
            sid,
            agree=False,
            reason="对第二名的业绩评分有保留意见 / reservations on the 2nd bid's score",
        )
        for mid in ids[:-1]:
            await experts[mid].sign_report(sid)
        await sup_follow.wait_for(lambda e: e["type"] == "evaluation_closed", timeout=60)
        final = await host.report(sid)
        print(final["text"])
        await asyncio.sleep(6)  # one more recorded segment per room before the links close
        for link in media.values():
            print(f"   主场画面 host feed frames received: {link.frames_received}")
            await link.close()
        await hub.media.close()  # flush the last partial segments into the record
        await sup_follow.close()
        segments = (await supervisor.evaluation(sid))["view"]["segments"]
        print(f"   录像分段 recorded segments in the log: {segments}")
        if segments < 2:
            raise DemoFailed("no recording reached the record")

        step("15. 导出并离线验证评标档案，复核抽取 / export, verify, recompute the draw")
        await export(sid, out / "evaluation-archive.zip")
        kept = experts.pop(ids[0])
        await kept.refresh_token()  # kept alive from here by its room's keeper
        return sid, kept
    finally:
        for link in media.values():
            await link.close()
        for ec in experts.values():
            await ec.close()
