"""A deterministic synthetic expert pool and site network for the demo and the benchmarks.

Everything here is made up: names are ``专家00042``, contacts are unassigned number ranges, credit
codes are well-formed (correct check character) but belong to nobody. The same ``seed`` always
gives the same pool, so a demo's draw can be recomputed and a benchmark compared across runs.

The shape is meant to be realistic where the draw cares: three-level categories (工程 A, 货物 B,
服务 C) with very uneven sizes, so that some requested categories fall back to their parent; a
few per cent of experts not active; some experts employed by companies that typically bid
(:func:`typical_bidders`), some of those recorded without a credit code or with a differently
written name, so that avoidance by code and by normalized name both have work to do.
"""

from __future__ import annotations

import random
from itertools import accumulate

from schemas.common import USCC_ALPHABET, uscc_check_char
from schemas.experts import Expert, ExpertStatus, Room, Site

# Inner Mongolia's prefecture-level divisions (GB/T 2260), the region of the seed documents.
CITIES: dict[str, str] = {
    "150100": "呼和浩特市",
    "150200": "包头市",
    "150300": "乌海市",
    "150400": "赤峰市",
    "150500": "通辽市",
    "150600": "鄂尔多斯市",
    "150700": "呼伦贝尔市",
    "150800": "巴彦淖尔市",
    "150900": "乌兰察布市",
    "152200": "兴安盟",
    "152500": "锡林郭勒盟",
    "152900": "阿拉善盟",
}

# A plausible slice of a three-level classification (after 综合评标评审专家专业分类标准).
CATEGORY_TREE: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]] = {
    "A": (
        "工程",
        {
            "01": ("房屋建筑", ["土建", "装饰装修", "给排水", "暖通空调", "建筑电气", "智能化"]),
            "02": ("市政公用", ["道路", "桥梁", "给排水管网", "燃气热力", "园林绿化"]),
            "03": ("公路", ["路基路面", "桥梁隧道", "交通安全设施", "机电"]),
            "04": ("水利水电", ["水工建筑", "农田水利", "河道治理"]),
            "05": ("电力", ["输变电", "配电", "新能源发电"]),
            "06": ("铁路", ["线路", "站场"]),
            "07": ("通信", ["通信线路", "通信设备安装"]),
            "08": ("矿山", ["井巷", "选矿", "矿山安全"]),
            "09": ("工程造价", ["建筑工程造价", "安装工程造价", "市政工程造价"]),
            "10": ("工程监理", ["房建监理", "市政监理", "交通监理"]),
        },
    ),
    "B": (
        "货物",
        {
            "01": ("信息技术设备", ["计算机", "网络设备", "软件产品", "信息安全设备"]),
            "02": ("医疗设备", ["医学影像", "检验设备", "手术设备", "康复设备"]),
            "03": ("办公设备与家具", ["办公设备", "家具"]),
            "04": ("车辆", ["乘用车", "专用车"]),
            "05": ("电气设备", ["变压器", "开关设备", "电线电缆"]),
            "06": ("教学设备", ["实验室设备", "体育器材"]),
        },
    ),
    "C": (
        "服务",
        {
            "01": ("咨询", ["工程咨询", "财务审计", "法律"]),
            "02": ("物业管理", ["物业服务", "保洁"]),
            "03": ("信息技术服务", ["系统集成", "运行维护", "软件开发"]),
            "04": ("设计", ["建筑设计", "规划设计", "景观设计"]),
            "05": ("社会服务", ["养老服务", "培训服务"]),
        },
    ),
}


THIRD_LEVEL: dict[str, tuple[str, ...]] = {
    "A": ("施工", "设计", "造价"),
    "B": ("技术", "质量检验", "商务"),
    "C": ("技术", "管理", "商务"),
}


def category_names() -> dict[str, str]:
    """Every code of the synthetic tree at all three levels, with its name.

    Level 1 is the letter and two digits (``A08`` 矿山), level 2 adds the field (``A08.01`` 井巷),
    level 3 the specialty (``A08.01.03`` 井巷造价).
    """
    out: dict[str, str] = {}
    for letter, (_kind, firsts) in CATEGORY_TREE.items():
        for first, (first_name, seconds) in firsts.items():
            top = f"{letter}{first}"
            out[top] = first_name
            for i, second_name in enumerate(seconds, start=1):
                out[f"{top}.{i:02d}"] = second_name
                for j, third in enumerate(THIRD_LEVEL[letter], start=1):
                    out[f"{top}.{i:02d}.{j:02d}"] = f"{second_name}{third}"
    return out


def leaf_categories() -> list[str]:
    """The three-level codes of the synthetic tree, sorted."""
    return sorted(c for c in category_names() if c.count(".") == 2)


def credit_code(rng: random.Random, region: str, kind: str = "91") -> str:
    """A well-formed unified social credit code (GB 32100-2015 check character)."""
    body = "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    first17 = f"{kind}{region}{body}"
    return first17 + uscc_check_char(first17)


def typical_bidders(seed: int, n: int = 60) -> list[tuple[str, str]]:
    """Companies that typically bid, as (name, credit code); some of them employ experts."""
    rng = random.Random(f"bidders/{seed}")
    kinds = ["建筑工程", "路桥建设", "水利水电工程", "电力建设", "信息技术", "医疗器械"]
    regions = list(CITIES)
    out = []
    for i in range(n):
        region = regions[i % len(regions)]
        name = f"{CITIES[region][:-1]}第{i + 1:02d}{kinds[i % len(kinds)]}有限公司"
        out.append((name, credit_code(rng, region)))
    return out


def _employers(rng: random.Random, cities: list[str]) -> list[tuple[str, str | None, str]]:
    """Non-bidding employers: (name, credit code or None, city)."""
    kinds = [
        ("大学", "12"),
        ("职业技术学院", "12"),
        ("人民医院", "12"),
        ("建筑设计研究院有限公司", "91"),
        ("工程咨询有限公司", "91"),
        ("会计师事务所（特殊普通合伙）", "91"),
        ("律师事务所", "31"),
        ("工程质量监督站", "12"),
    ]
    out: list[tuple[str, str | None, str]] = []
    for city in cities:
        city_name = CITIES.get(city, f"城市{city}")
        for k, (kind, prefix) in enumerate(kinds):
            for n in range(1, 4):
                code = None if rng.random() < 0.1 else credit_code(rng, city, prefix)
                out.append((f"{city_name}第{n}{kind}" if k else f"{city_name}{kind}", code, city))
    return out


def generate_pool(n: int, seed: int, cities: list[str]) -> list[Expert]:
    """``n`` synthetic experts living in ``cities`` (GB/T 2260 codes), sorted by id."""
    if not cities:
        raise ValueError("at least one city is needed")
    rng = random.Random(f"pool/{seed}")
    leaves = leaf_categories()
    # Very uneven category sizes (a Zipf-like law over a shuffled order), as in real pools.
    order = list(leaves)
    rng.shuffle(order)
    cum: list[float] = list(accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(order))))
    siblings: dict[str, list[str]] = {}
    for leaf in leaves:
        siblings.setdefault(leaf[:6], []).append(leaf)  # same level-2 parent
    city_cum: list[float] = list(accumulate(1.0 / (i + 1) ** 0.5 for i in range(len(cities))))
    employers = _employers(rng, cities)
    by_city: dict[str, list[tuple[str, str | None, str]]] = {}
    for e in employers:
        by_city.setdefault(e[2], []).append(e)
    bidders = typical_bidders(seed)
    statuses: list[ExpertStatus] = ["suspended", "retired", "removed"]

    experts = []
    for i in range(1, n + 1):
        city = rng.choices(cities, cum_weights=city_cum)[0]
        first = rng.choices(order, cum_weights=cum)[0]
        held = {first}
        for _ in range(rng.choices((0, 1, 2), cum_weights=(60, 90, 100))[0]):
            near = siblings[first[:6]] if rng.random() < 0.7 else leaves
            held.add(rng.choice(near))
        roll = rng.random()
        if roll < 0.08:  # employed by a company that bids
            name, code = bidders[rng.randrange(len(bidders))]
            employer_code: str | None = code
            if rng.random() < 0.25:  # recorded without the code, the name written differently
                employer_code = None
                name = name.replace("有限公司", "（有限公司）").replace("第", " 第 ")
            employer = name
        else:
            employer, employer_code, _ = rng.choice(by_city[city])
        status: ExpertStatus = "active" if rng.random() >= 0.04 else rng.choice(statuses)
        contact = (
            f"139{rng.randrange(10**8):08d}" if rng.random() < 0.9 else f"expert{i:06d}@example.org"
        )
        experts.append(
            Expert(
                id=f"E{i:06d}",
                name=f"专家{i:05d}",
                categories=sorted(held),
                city=city,
                employer=employer,
                employer_credit_code=employer_code,
                status=status,
                contact=contact,
            )
        )
    return experts


def generate_sites(cities: list[str], seed: int, rooms_per_site: int = 3) -> list[Site]:
    """One trading-centre site per city (two in the first city), each with a few rooms.

    About one room in six is unavailable (booked or under maintenance); seats vary from 7 to 15.
    """
    rng = random.Random(f"sites/{seed}")
    sites = []
    for k, city in enumerate(cities):
        city_name = CITIES.get(city, f"城市{city}")
        names = [f"{city_name}公共资源交易中心"]
        if k == 0:
            names.append(f"{city_name}公共资源交易中心分中心")
        for s, name in enumerate(names, start=1):
            site_id = f"S{city}-{s}"
            rooms = [
                Room(
                    id=f"{site_id}-R{r}",
                    name=f"第{r}评标室",
                    available=rng.random() >= 1 / 6,
                    seats=rng.randint(7, 15),
                )
                for r in range(1, rooms_per_site + 1)
            ]
            sites.append(Site(id=site_id, name=name, city=city, rooms=rooms))
    return sites
