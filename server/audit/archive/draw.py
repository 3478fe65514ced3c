"""The expert draw as archived: read its input, recompute it, list every difference."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from schemas.experts import DrawRequest, DrawResult, Site
from server.audit.archive.format import DRAW_INPUT_FORMAT
from server.domain import draw as D
from server.domain.errors import Refusal


def read_draw_input(raw: bytes) -> tuple[list[dict[str, Any]], list[Site]]:
    """The archived draw input: the pool snapshot rows and the sites (``ValueError`` if it is
    not a ``bidbridge-draw-input`` document)."""
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict) or value.get("format") != DRAW_INPUT_FORMAT:
        raise ValueError(f"不是 {DRAW_INPUT_FORMAT} 文档 / not a {DRAW_INPUT_FORMAT} document")
    pool, sites = value.get("pool"), value.get("sites")
    if not isinstance(pool, list) or not all(isinstance(r, dict) for r in pool):
        raise ValueError("pool 须为对象列表 / pool must be a list of objects")
    if not isinstance(sites, list):
        raise ValueError("sites 须为列表 / sites must be a list")
    return pool, [Site.model_validate(x) for x in sites]


def _validation(what: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ()))
    return f"{what}: 格式错误 / malformed ({loc}: {first.get('msg', '')})"


def draw_differences(
    pool: Sequence[Mapping[str, Any]],
    sites: Sequence[Site],
    *,
    session_id: str,
    commitment: str | None,
    entropy: Mapping[str, str],
    server_random: Any,
    request: Any,
    claimed: Any,
) -> list[str]:
    """Every way a recorded draw differs from its recomputation from the archive; ``[]``: equal.

    ``commitment`` is the one published before the draw (``draw_committed``), ``entropy`` the
    supervisor's and the host's values (``draw_entropy``, hex), ``server_random``, ``request``
    and ``claimed`` what ``draw_completed`` (or, with its replacements, ``member_replaced``)
    recorded. The recomputation is :func:`server.domain.draw.verify`.
    """
    diffs: list[str] = []
    try:
        revealed = bytes.fromhex(server_random) if isinstance(server_random, str) else None
    except ValueError:
        revealed = None
    if revealed is None:
        return ["server_random: 不是十六进制 / not hex"]
    if commitment is None:
        diffs.append(
            "draw_committed: 抽取前没有公布承诺 / no commitment was published before the draw"
        )
    else:
        try:
            opened = D.commitment(revealed)
        except Refusal as refusal:
            return [*diffs, f"server_random: {refusal.line()}"]
        if opened != commitment:
            diffs.append(
                "commitment: 揭示的服务器随机数与抽取前公布的承诺不符 / the revealed server "
                f"random does not open the commitment published before the draw ({commitment})"
            )
    values: dict[str, bytes] = {}
    for role in ("supervisor", "host"):
        value = entropy.get(role)
        try:
            values[role] = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            values[role] = b""
        if not values[role]:
            diffs.append(f"draw_entropy: 缺少 {role} 的随机数 / no valid {role} entropy")
    try:
        req = DrawRequest.model_validate(request)
    except ValidationError as exc:
        diffs.append(_validation("request", exc))
        req = None
    try:
        result = DrawResult.model_validate(claimed)
    except ValidationError as exc:
        diffs.append(_validation("result", exc))
        result = None
    if req is None or result is None or len(values) != 2 or not all(values.values()):
        return diffs
    for what, sid in (("request", req.session_id), ("result", result.session_id)):
        if sid != session_id:
            diffs.append(
                f"{what}.session_id: {sid!r} 不是本会话 / is not this session ({session_id!r})"
            )
    found = D.verify(pool, sites, req, revealed, values["supervisor"], values["host"], result)
    diffs.extend(f"复算不符 / recomputed differently: {d}" for d in found)
    return diffs
