#!/usr/bin/env python3
"""Benchmark: the verifiable expert draw over a large synthetic pool; goal under 100 ms.

Each run is a whole ``server.domain.draw.run_draw``: sort/duplicate check and SHA-256 of the
pool snapshot, the secondary sites and rooms, eligibility with avoidance of every bidder and the
tenderer (by credit code and by normalized employer name), the region rule and the committee
with its spares. Every run uses different host entropy, so every run draws a different committee.

A draw's time depends on the machine and on whatever else it is running, so each draw run is
paired with a reference run in the same process, under the same conditions: sorting the same
pool (shuffled) by expert id, the least any draw must do. The ratio draw/reference is what to
compare across machines.

    .venv/bin/python scripts/bench_draw.py                 # 100,000 experts, 30 bidders
    .venv/bin/python scripts/bench_draw.py --pool 10000 --runs 51
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time

import _repo  # noqa: F401  (puts the repository on sys.path)

from schemas.experts import CategoryDemand, DrawRequest
from server.demo.experts_gen import (
    CITIES,
    credit_code,
    generate_pool,
    generate_sites,
    typical_bidders,
)
from server.domain import draw as D

GOAL_MS = 100.0


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the verifiable expert draw (专家抽取) over a large synthetic pool.",
    )
    parser.add_argument("--pool", type=int, default=100_000, help="experts in the pool")
    parser.add_argument("--runs", type=int, default=21, help="timed draws (after one warm-up)")
    parser.add_argument("--cities", type=int, default=8, help=f"cities (1..{len(CITIES)})")
    parser.add_argument("--secondary", type=int, default=2, help="secondary sites to draw")
    parser.add_argument("--bidders", type=int, default=30, help="bidders to avoid (+ tenderer)")
    parser.add_argument("--min-outside", type=int, default=4, help="experts from outside lead")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the synthetic pool")
    args = parser.parse_args(argv)
    if not 1 <= args.cities <= len(CITIES) or args.runs < 1 or args.pool < 1:
        parser.error("--cities, --runs and --pool out of range")

    cities = list(CITIES)[: args.cities]
    started = time.perf_counter()
    pool = generate_pool(args.pool, args.seed, cities)
    generated = time.perf_counter() - started
    sites = generate_sites(cities, args.seed)
    bidders = typical_bidders(args.seed, max(args.bidders, 1))[: args.bidders]
    tenderer = credit_code(random.Random(args.seed), cities[0], "11")
    request = DrawRequest(
        session_id="BENCH",
        lead_site_id=sites[0].id,
        secondary_sites=args.secondary,
        owner_reps=2,
        categories=[
            CategoryDemand(category="A01.01.01", count=3, spares=2),
            CategoryDemand(category="A09.01", count=2, spares=2),
            CategoryDemand(category="B02.03.02", count=2, spares=2),
        ],
        min_outside_lead=args.min_outside,
        avoid_credit_codes=sorted({c for _, c in bidders} | {tenderer}),
        avoid_names=[n for n, _ in bidders],
    )
    server_random = bytes(range(32))
    supervisor = b"bench supervisor entropy"
    shuffled = list(pool)
    random.Random(args.seed).shuffle(shuffled)

    def one_draw(k: int) -> float:
        t0 = time.perf_counter()
        D.run_draw(pool, sites, request, server_random, supervisor, k.to_bytes(4, "big"))
        return (time.perf_counter() - t0) * 1000

    def one_reference() -> float:
        t0 = time.perf_counter()
        sorted(shuffled, key=lambda e: e.id)
        return (time.perf_counter() - t0) * 1000

    cold = one_draw(0)
    result = D.run_draw(pool, sites, request, server_random, supervisor, b"\x00" * 4)
    draws: list[float] = []
    references: list[float] = []
    for k in range(1, args.runs + 1):
        gc.collect()
        references.append(one_reference())
        gc.collect()
        draws.append(one_draw(k))

    t0 = time.perf_counter()
    snapshot = D.pool_snapshot(pool)
    diffs = D.verify(snapshot, sites, request, server_random, supervisor, b"\x00" * 4, result)
    verified = (time.perf_counter() - t0) * 1000

    median, ref = statistics.median(draws), statistics.median(references)
    print(
        f"pool              {args.pool:,} experts in {len(cities)} cities (generated in {generated:.1f} s)"
    )
    print(
        f"request           {request.experts} experts + {request.owner_reps} owner reps, "
        f"{args.secondary} secondary sites, min {args.min_outside} from outside the lead city, "
        f"{len(request.avoid_credit_codes)} credit codes + {len(request.avoid_names)} names avoided"
    )
    print(
        f"last draw         eligible {result.counts.eligible:,} of {result.counts.in_region:,} "
        f"in region, avoided {result.counts.avoided:,}, fallbacks {len(result.fallbacks)}"
    )
    print(
        f"draw              median {median:.1f} ms, p95 {p95(draws):.1f} ms, "
        f"first (cold) {cold:.1f} ms, {args.runs} runs"
    )
    print(
        f"reference         sort the pool by id: median {ref:.1f} ms, p95 {p95(references):.1f} ms"
    )
    print(f"ratio             draw / reference = {median / ref:.2f}")
    print(f"verify (offline)  {verified:.0f} ms from the snapshot: {diffs or 'match'}")
    print(
        f"goal              median < {GOAL_MS:.0f} ms: {'met' if median < GOAL_MS else 'NOT met'}"
    )
    return 0 if not diffs else 1


if __name__ == "__main__":
    raise SystemExit(main())
