"""Refused uploads leave no file, and what an interrupted upload left is settled by the log
(DESIGN.md section 5, rule 1: nothing is lost; issue "trust and secrecy": unreferenced blobs
are collected). An upload is staged until its event commits; the collector places a staged file
that an event names and removes one that none names once its grace has passed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from server.store import blobs as B
from server.work.blob_collect import collect_blobs
from tests.support.hall import ApiError, Hall, P, Party
from tests.support.opening import SIGN_IN


def _tmp_files(hall: Hall) -> list[str]:
    tmp = hall.hub.settings.data_dir / "blobs" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def _uploads_open(hall: Hall, tmp_path: Path) -> tuple[str, Party, Path]:
    """A session taking uploads, and bidder a's sealed bid."""
    sid = await hall.create_session(min_bids=1)
    a = P(hall, "a")
    bid = hall.seal(tmp_path, a)
    await hall.at(hall.t0 + SIGN_IN)
    return sid, a, bid


async def test_rule_01_an_upload_refused_after_it_was_stored_leaves_no_file(
    hall: Hall, tmp_path: Path
) -> None:
    sid, a, bid = await _uploads_open(hall, tmp_path)
    blobs_before = hall.blob_listing()

    # The real blob store, paused once the file is stored: the host suspends the session then,
    # so the command that records the upload is refused.
    uploading, go_on = await hall.upload_paused_once_stored(sid, a, bid)
    assert any(name.endswith(".staged") for name in _tmp_files(hall))  # held apart, not placed
    await hall.request(
        "POST", f"/api/sessions/{sid}/suspend", P(hall, "host"), {"reason": "系统故障"}
    )
    go_on.set()
    with pytest.raises(ApiError) as refused:
        await asyncio.wait_for(uploading, timeout=60)
    assert refused.value.status == 409 and refused.value.body.get("zh"), refused.value.body
    assert hall.blob_listing() == blobs_before
    assert _tmp_files(hall) == []
    assert not any(e["type"] == "bid_uploaded" for e in await hall.events(sid, a))


async def test_rule_01_a_recorded_upload_left_staged_is_placed_by_the_collector(
    hall: Hall, tmp_path: Path
) -> None:
    sid, a, bid = await _uploads_open(hall, tmp_path)

    # The process "stops" between the record and the placing: keeping the file fails.
    async def lost(staged: Any) -> Any:
        raise OSError(5, "Input/output error")

    keep = hall.hub.blobs.keep
    hall.hub.blobs.keep = lost  # type: ignore[method-assign]
    receipt = (await hall.upload(sid, a, bid))["receipt"]
    hall.hub.blobs.keep = keep  # type: ignore[method-assign]
    sha = receipt["envelope_sha256"]
    assert not hall.hub.blobs.has(sha)
    staged = [n for n in _tmp_files(hall) if n.startswith(sha)]
    assert len(staged) == 1
    # Old as it may be, a staged file that the log names is placed, never removed.
    _age(hall.hub.settings.data_dir / "blobs" / "tmp" / staged[0], B.PARTIAL_GRACE_SECONDS * 2)

    done = await collect_blobs(hall.hub)
    assert done == {"placed": 1, "removed": 0, "partial": 0}
    assert hall.hub.blobs.path(sha).read_bytes() == bid.read_bytes()
    assert _tmp_files(hall) == []
    assert await hall.request("GET", f"/api/sessions/{sid}/bid", a) == bid.read_bytes()


async def test_unreferenced_staged_and_abandoned_temp_files_are_collected_after_their_grace(
    hall: Hall,
) -> None:
    tmp = hall.hub.settings.data_dir / "blobs" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    young = tmp / f"{'1' * 64}.{'a' * 32}.staged"
    old = tmp / f"{'2' * 64}.{'b' * 32}.staged"
    partial_young = tmp / ("c" * 32)
    partial_old = tmp / ("d" * 32)
    for path in (young, old, partial_young, partial_old):
        path.write_bytes(b"x")
    _age(old, B.STAGED_GRACE_SECONDS + 60)
    _age(partial_young, B.STAGED_GRACE_SECONDS + 60)  # an upload may last hours
    _age(partial_old, B.PARTIAL_GRACE_SECONDS + 60)
    listing = hall.blob_listing()

    done = await collect_blobs(hall.hub)
    assert done == {"placed": 0, "removed": 1, "partial": 1}
    assert sorted(p.name for p in tmp.iterdir()) == sorted([young.name, partial_young.name])
    assert hall.blob_listing() == listing  # nothing placed was touched
