"""The pool import through the API (issue "trust and secrecy": the pool parses off the event
loop, and the cycle collector is paused only while an import runs). Timings are measured by
``scripts/bench_pool_import.py``, never here."""

from __future__ import annotations

import asyncio
import gc

from tests.support.evaluation import pool_csv
from tests.support.hall import Hall, P
from tests.support.pki import CODE_A


async def test_overlapping_pool_imports_leave_the_collector_as_it_was(hall: Hall) -> None:
    assert gc.isenabled()
    data = pool_csv(CODE_A)

    async def one() -> dict[str, int]:
        return dict(
            await hall.request(
                "POST",
                "/api/experts/import?format=csv",
                P(hall, "centre"),
                data=data,
                headers={"Content-Type": "text/csv"},
            )
        )

    first, second = await asyncio.gather(one(), one())
    assert first["imported"] == second["imported"] > 0
    assert second["total"] == first["imported"]  # the same ids: updated, not added twice
    assert gc.isenabled()
    bad = await hall.refused(
        422,
        "POOL_INVALID",
        "POST",
        "/api/experts/import?format=csv",
        P(hall, "centre"),
        data=b"id,name\n1\n",
        headers={"Content-Type": "text/csv"},
    )
    assert bad.body["zh"] and gc.isenabled()  # a refused import re-enables it too
